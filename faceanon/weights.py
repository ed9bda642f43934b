"""The project's own pretrained weights: one table, ``weights/manifest.json``, checked on load.

Nothing is ever downloaded: weight files live in the weights folder (``weights_dir()``: the
repository's ``weights/``, or where a wheel installed them) and each manifest entry pins its
file by SHA-256, so a corrupted
or swapped file is refused instead of silently producing other faces. Manifest layout::

    {"models": [{"name": ..., "kind": "generator", "file": ..., "sha256": ..., <metadata>}]}

Metadata (resolution, trained_on, kimg, fid, arch, ...) is free-form per kind; ``default: true``
marks the entry used when a caller asks for a kind without naming a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import torch

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_text

__all__ = ["weights_dir", "entries", "entry", "default_entry", "load_weights", "register",
           "sha256_file"]

MANIFEST = "manifest.json"
_REQUIRED = ("name", "kind", "file", "sha256")


CHECKOUT = Path(__file__).resolve().parent.parent / "weights"  # a source checkout's
INSTALLED = ("share", "faceanon", "weights")  # below an install's data prefix (pyproject)


def weights_dir() -> Path:
    """The weights folder: ``$FACEANON_WEIGHTS`` if set; else the first that holds a manifest
    of ``weights/`` beside the package (a source checkout) and ``<prefix>/share/faceanon/weights``
    of the environment, then of the user (where a wheel install puts the shipped weights);
    else ``weights/`` beside the package, an empty registry that ``register`` can fill."""
    env = os.environ.get("FACEANON_WEIGHTS")
    if env:
        return Path(env)
    schemes = (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user"))
    installed = [Path(sysconfig.get_path("data", s), *INSTALLED) for s in schemes]
    return next((d for d in (CHECKOUT, *installed) if (d / MANIFEST).is_file()), CHECKOUT)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entries(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """All manifest entries (an absent manifest is an empty table)."""
    path = Path(directory or weights_dir()) / MANIFEST
    if not path.exists():
        return []
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise FaceanonError(f"unreadable weights manifest ({type(e).__name__})", path) from None
    for m in models:
        missing = [k for k in _REQUIRED if k not in m]
        if missing:
            raise FaceanonError(f"manifest entry {m.get('name')!r} lacks {', '.join(missing)}",
                                path)
    return list(models)


def entry(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry called ``name``."""
    models = entries(directory)
    for m in models:
        if m["name"] == name:
            return m
    known = ", ".join(m["name"] for m in models) or "none"
    raise FaceanonError(f"no weights named {name!r} (known: {known})",
                        Path(directory or weights_dir()) / MANIFEST)


def default_entry(kind: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The entry of ``kind`` marked ``default`` (else the first of that kind)."""
    of_kind = [m for m in entries(directory) if m["kind"] == kind]
    if not of_kind:
        raise FaceanonError(f"no {kind} weights are installed",
                            Path(directory or weights_dir()) / MANIFEST)
    return next((m for m in of_kind if m.get("default")), of_kind[0])


def load_weights(name: str, directory: str | Path | None = None,
                 map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict of ``name``, after checking the file's SHA-256 against the manifest."""
    directory = Path(directory or weights_dir())
    m = entry(name, directory)
    path = directory / m["file"]
    if not path.is_file():
        raise FaceanonError(f"weight file of {name!r} is missing", path)
    digest = sha256_file(path)
    if digest != m["sha256"]:
        raise FaceanonError(f"SHA-256 mismatch for {name!r} (file {digest[:12]}…, manifest "
                            f"{m['sha256'][:12]}…): corrupted or replaced", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError) as e:
        raise FaceanonError(f"unreadable weight file: {e}"[:200], path) from None


def register(name: str, kind: str, source: str | Path, directory: str | Path | None = None,
             **meta: Any) -> dict[str, Any]:
    """Copy ``source`` into the weights folder as ``<name>.pt`` and add (or replace) its entry."""
    directory = Path(directory or weights_dir())
    directory.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    if not source.is_file():
        raise FaceanonError("weight file to register not found", source)
    target = directory / f"{name}{source.suffix or '.pt'}"
    if source.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    new = {"name": name, "kind": kind, "file": target.name, "sha256": sha256_file(target), **meta}
    models = [m for m in entries(directory) if m["name"] != name] + [new]
    if new.get("default"):
        for m in models:
            if m is not new and m["kind"] == kind:
                m.pop("default", None)
    text = json.dumps({"models": models}, indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(directory / MANIFEST, text)
    return new
