"""Secret keys: a checksummed file format, fingerprints, and the KDF that feeds the networks.

A key never leaves this module as anything but a fingerprint (for people) or a derived key code
(for networks). The code is HKDF-SHA256 output with the consuming model's id in ``info``, so one
key gives unrelated codes to different models, and any key change gives an unrelated code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes

MAGIC = b"FAKEY\x00\r\n"  # the \r\n catches text-mode transfers, as PNG's signature does
FORMAT_VERSION = 1
DEFAULT_BITS = 256
MIN_BITS = 128
MAX_BITS = 4096
_HEADER = struct.Struct(">8sBHQ")  # magic, format version, bits, created (unix seconds)
_CHECKSUM_LEN = 32


@dataclass(frozen=True)
class Key:
    """A secret key; ``repr`` never shows the secret."""

    secret: bytes
    created: int  # unix seconds

    @property
    def bits(self) -> int:
        return len(self.secret) * 8

    @property
    def fingerprint(self) -> str:
        """A short public name for the key: safe to print, log and store in manifests."""
        digest = hashlib.sha256(b"faceanon/fingerprint/v1\x00" + self.secret).hexdigest()[:16]
        return ":".join(digest[i:i + 4] for i in range(0, 16, 4))

    @property
    def created_iso(self) -> str:
        return datetime.fromtimestamp(self.created, timezone.utc).isoformat(timespec="seconds")

    def __repr__(self) -> str:
        return f"Key(bits={self.bits}, fingerprint={self.fingerprint})"

    def to_bytes(self) -> bytes:
        body = _HEADER.pack(MAGIC, FORMAT_VERSION, self.bits, self.created) + self.secret
        return body + hashlib.sha256(body).digest()

    def derive(self, model_id: str, length: int) -> bytes:
        """``length`` pseudo-random bytes for ``model_id`` (HKDF-SHA256, RFC 5869)."""
        return hkdf_sha256(self.secret, salt=b"faceanon/v1", info=model_id.encode("utf-8"),
                           length=length)

    def code(self, model_id: str, dim: int) -> np.ndarray:
        """The key as a network input: ``dim`` values in {-1, +1} (float32) for ``model_id``."""
        raw = np.frombuffer(self.derive(model_id, (dim + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw)[:dim].astype(np.float32)
        return bits * 2.0 - 1.0


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF extract-and-expand with SHA-256."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 output is limited to 8160 bytes")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


def generate(bits: int = DEFAULT_BITS) -> Key:
    """A new key from the operating system's CSPRNG."""
    if bits < MIN_BITS:
        raise FaceanonError(f"refusing a {bits}-bit key: at least {MIN_BITS} bits are needed")
    if bits % 8 or bits > MAX_BITS:
        raise FaceanonError(f"key length must be a multiple of 8 up to {MAX_BITS} bits, not {bits}")
    return Key(secrets.token_bytes(bits // 8), int(time.time()))


def save(key: Key, path: str | Path, force: bool = False) -> None:
    """Write ``key`` atomically with mode 0600; an existing file is kept unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise FaceanonError("file exists; pass --force to overwrite it", path)
    try:
        atomic_write_bytes(path, key.to_bytes(), mode=0o600)
    except OSError as e:
        raise FaceanonError(f"cannot write key: {e.strerror}", path) from None


def parse(data: bytes, path: str | Path = "<key>") -> Key:
    """Decode a key file's bytes, detecting truncation, alteration and foreign files."""
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        if MAGIC.startswith(data[:len(MAGIC)]) and len(data) < _HEADER.size:
            raise FaceanonError("truncated key file", path)
        raise FaceanonError("not a faceanon key file (bad magic)", path)
    _, version, bits, created = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise FaceanonError(f"unsupported key format version {version}", path)
    if bits < MIN_BITS or bits % 8 or bits > MAX_BITS:
        raise FaceanonError(f"corrupt key file (bit length {bits})", path)
    expected = _HEADER.size + bits // 8 + _CHECKSUM_LEN
    if len(data) < expected:
        raise FaceanonError(f"truncated key file ({len(data)} of {expected} bytes)", path)
    if len(data) > expected:
        raise FaceanonError(f"corrupt key file ({len(data) - expected} trailing bytes)", path)
    body, checksum = data[:-_CHECKSUM_LEN], data[-_CHECKSUM_LEN:]
    if not hmac.compare_digest(hashlib.sha256(body).digest(), checksum):
        raise FaceanonError("key file is corrupt or altered (checksum mismatch)", path)
    return Key(body[_HEADER.size:], created)


def load(path: str | Path) -> Key:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FaceanonError("key file not found", path) from None
    except IsADirectoryError:
        raise FaceanonError("is a directory, not a key file", path) from None
    except OSError as e:
        raise FaceanonError(f"cannot read key file: {e.strerror}", path) from None
    return parse(data, path)


def readable_by_others(path: str | Path) -> bool:
    """True when group or others may read the key file (``keyinfo`` warns)."""
    return bool(os.stat(path).st_mode & 0o077)
