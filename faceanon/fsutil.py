"""Crash-safe file writing: a reader sees the old file or the whole new one, never a torn one."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.fa-[A-Za-z0-9_]{8}\.tmp$")  # what atomic writes leave if killed


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.fa-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def is_within(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or lies below it (after resolving links)."""
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` with the same all-or-nothing guarantee (checkpoints, weights)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
