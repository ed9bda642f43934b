"""Virtual-face generators behind one interface (``base.FaceGenerator``), one backend a module.

A backend registers the registry kind of the entry that defines one of its generators (for
StyleGAN2: a key projector, which names its generator); ``load_generator(name)``, which is
``faceanon.models.create_model("face-generator", name)``, builds the generator of that entry,
or the default one of the first backend that has weights installed. Adding a backend: a module
here with a ``FaceGenerator`` subclass, a ``register_backend`` line below, and its weights in
the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from faceanon import weights
from faceanon.errors import FaceanonError
from faceanon.generators import stylegan2
from faceanon.generators.base import FaceGenerator, PoseGoal
from faceanon.models import registry_entry

__all__ = ["FaceGenerator", "PoseGoal", "Backend", "register_backend", "load_generator",
           "generator_crop"]


@dataclass(frozen=True)
class Backend:
    """How to build a backend's generator from its registry entry, and how to read the template
    and crop size it declares there without loading it."""

    load: Callable[[dict[str, Any], str | torch.device], FaceGenerator]
    crop: Callable[[dict[str, Any]], tuple[str, int]]


_BACKENDS: dict[str, Backend] = {}


def register_backend(kind: str, backend: Backend) -> None:
    """Registry entries of ``kind`` define generators of ``backend``."""
    if kind in _BACKENDS:
        raise ValueError(f"generator backend of {kind!r} entries is registered twice")
    _BACKENDS[kind] = backend


def _lookup(name: str | None) -> tuple[Backend, dict[str, Any]]:
    """The backend and entry of generator ``name`` (default: the first backend's default)."""
    if name:
        kind = weights.entry(name)["kind"]
        if kind not in _BACKENDS:
            raise FaceanonError(f"weights {name!r} ({kind}) do not define a face generator")
    else:
        installed = {m["kind"] for m in weights.entries()}
        kind = next((k for k in _BACKENDS if k in installed), "")
        if not kind:
            raise FaceanonError("no face generator is installed (weights manifest)")
    return _BACKENDS[kind], registry_entry(kind, name)


def load_generator(name: str | None = None, device: str | torch.device = "cpu") -> FaceGenerator:
    """The face generator of registry entry ``name`` (default: the installed default)."""
    backend, entry = _lookup(name)
    return backend.load(entry, device)


def generator_crop(name: str | None = None) -> tuple[str, int]:
    """The template and crop size of generator ``name``, from the registry alone: for code that
    crops faces as the generator does (evaluation) without running it."""
    backend, entry = _lookup(name)
    return backend.crop(entry)


register_backend("projector", Backend(stylegan2.load_stylegan2_faces, stylegan2.declared_crop))
