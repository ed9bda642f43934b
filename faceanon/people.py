"""The people a video run has drawn virtual faces for, so that each stays one virtual person in
every clip of the run, a resumed run included (step 3 of ``faceanon.anonymize_video``).

Each person is their identity code and the draw their first track started from. Identity codes
are templates of real people's faces, so on disk they are never in the clear: the list lives in
the run's private record, sealed with AES-256-GCM under a subkey of the run's key (HKDF-SHA256,
``info`` ``INFO``), like the restore payloads of ``faceanon.reversible``; a run resumed with
another key cannot read it and says so.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes
from faceanon.keys import Key
from faceanon.records import FILE_MODE, PEOPLE

INFO = "faceanon/video-people/v1"  # HKDF info of the sealing subkey
_NONCE = 12


class People:
    """The people drawn so far: in memory, and sealed at ``path`` after each new one when a
    key and a path are given (read back from there when the run resumes)."""

    def __init__(self, key: Key | None = None, path: Path | None = None) -> None:
        self.codes: list[np.ndarray] = []
        self.draws: list[int] = []
        self._aead = AESGCM(key.derive(INFO, 32)) if key is not None else None
        self.path = path if key is not None else None
        if self.path is not None and self.path.exists():
            self._load()

    def find(self, code: np.ndarray, threshold: float) -> int | None:
        """The draw of the person whom ``code`` matches best at cosine ``threshold`` (codes
        are unit vectors), or None."""
        if not self.codes:
            return None
        alike = np.stack(self.codes) @ code
        best = int(alike.argmax())
        return self.draws[best] if alike[best] >= threshold else None

    def add(self, code: np.ndarray, draw: int) -> None:
        """A new person and their draw, sealed to disk before the clip that drew them is."""
        self.codes.append(np.asarray(code, np.float64))
        self.draws.append(int(draw))
        if self.path is None or self._aead is None:
            return
        buffer = io.BytesIO()
        np.savez(buffer, codes=np.stack(self.codes), draws=np.array(self.draws))
        nonce = os.urandom(_NONCE)
        atomic_write_bytes(self.path, nonce + self._aead.encrypt(
            nonce, buffer.getvalue(), PEOPLE.encode()), FILE_MODE)

    def _load(self) -> None:
        assert self.path is not None and self._aead is not None
        data = self.path.read_bytes()
        try:
            plain = self._aead.decrypt(data[:_NONCE], data[_NONCE:], PEOPLE.encode())
        except (InvalidTag, ValueError):
            raise FaceanonError("cannot be opened with this key (was the run started with "
                                "another?)", str(self.path)) from None
        with np.load(io.BytesIO(plain)) as saved:
            self.codes = list(saved["codes"])
            self.draws = [int(d) for d in saved["draws"]]
