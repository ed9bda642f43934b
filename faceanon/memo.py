"""A small content-keyed memo for per-face work that a video repeats frame after frame.

A clip's track is one virtual person: every frame asks the generator for the same face (same
identity code, key and attempt) and the pose transfer for that face's landmarks. Both are
deterministic functions of their inputs, so the last few results are kept by the bytes of
those inputs; images, whose faces all differ, only pay a dictionary lookup.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def content_key(array: np.ndarray) -> bytes:
    """An array's key for a memo: its bytes' hash, with its shape."""
    return hashlib.blake2b(array.tobytes(), digest_size=16,
                           person=str(array.shape).encode()[:16]).digest()


class Memo(Generic[T]):
    """The last ``size`` values kept, by key (the least recently used dropped first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[bytes, T] = OrderedDict()

    def find(self, key: bytes) -> T | None:
        """The value kept for ``key``, if any."""
        if key not in self._values:
            return None
        self._values.move_to_end(key)
        return self._values[key]

    def put(self, key: bytes, value: T) -> T:
        """Keep ``value`` for ``key``; returns it."""
        self._values[key] = value
        self._values.move_to_end(key)
        if len(self._values) > self.size:
            self._values.popitem(last=False)
        return value
