"""Reversible anonymization (iFADIT's use case, but bit-exact): encrypted restore payloads, and
``faceanon restore``, which puts the originals back for whoever holds the key.

What a payload holds, per published image (``anonymize --reversible``):

- one record per replaced face: the rectangle around the pixels that anonymizing changed near
  that face, and the original pixels in it (lossless WebP);
- one image record: the original's relative path and label (the published ones are
  pseudonyms), its size, the SHA-256 of its decoded pixels, and the *residual* of everything
  else: ``(original - decoded published image + 128) mod 256`` outside the face rectangles.
  A JPEG output re-encodes the whole photo, so its background is a few levels off the
  original's almost everywhere; the residual (lossless WebP, about as large as the face
  records) is what makes the restored pixels identical to the decoded original rather than
  close to it. A lossless output has no residual (it is all 128 outside the faces, and left out).

Each record is sealed separately with AES-256-GCM under a subkey of the user's key (HKDF,
``info`` ``INFO``: no other use of the key shares it), a fresh random 96-bit nonce, and as
associated data the format tag, the record's kind and index and the image's *published* name.
So a wrong key opens nothing, a changed byte makes its record refuse to open (one face of one
image), and a payload copied beside another image does not open there. The pixel digest checks
the whole reconstruction: a published image that was re-encoded or edited after anonymizing
restores nothing rather than something close. Outside the ciphertexts a payload shows only the
number of faces and the records' sizes.

Per-face records rather than one encrypted copy of the original file (which would be smaller
for JPEG inputs, about the file's size): each face is bound to its index, a refused face is
reported as that face, and no record holds more of a photo than one face or its background.

Restored images are written at the original's relative path; an original in a lossy format
(JPEG, WebP) is written as PNG (``NAME.jpg`` → ``NAME.jpg.png``), since re-encoding it as JPEG
would change the pixels that restore has just made identical.

A clip (``faceanon.video``) is re-encoded as a whole, so per-face records plus a residual of
every frame would outweigh the file itself; its payload is instead one record holding the
original file, sealed the same way in parts of ``CLIP_PART`` bytes, with the SHA-256 of the
published clip inside it (a clip edited after anonymizing restores nothing). Its restore is
byte-identical to the input file, and the payload shows the file's size.

Anyone holding the key can restore: a reversible output is only as private as the key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceanon.datasets import (FAILED, OK, PAYLOAD_SUFFIX, Entry, FolderSource, Job, Result,
                               open_input, payload_reader)
from faceanon.errors import FaceanonError
from faceanon.images import decode, encode
from faceanon.keys import Key

INFO = "faceanon/reversible/v1"  # HKDF info of the payload subkey
MAGIC = b"FAREV1\r\n"
IMAGE, FACE, CLIP = 0, 1, 2  # record kinds
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
RESTORED_SUFFIX = ".png"
_HEAD = struct.Struct(">8sH")              # magic, number of records
_RECORD = struct.Struct(">BH12sI")         # kind, face index, nonce, ciphertext length
_IMAGE = struct.Struct(">32sIIHH")         # pixel SHA-256, height, width, path length, label length
_BOX = struct.Struct(">IIII")              # face rectangle x0, y0, x1, y1
_CLIP = struct.Struct(">32sHHH")           # published clip's SHA-256, path and label lengths, parts
CLIP_PART = 256 << 20                      # a clip is sealed in parts (AES-GCM takes < 2 GiB a call)
_NO_LABEL = 0xFFFF
_WEBP_MAX = 16383                          # WebP's largest side; larger regions go as PNG
_NEUTRAL = 128                             # residual value of "unchanged"


class PayloadError(FaceanonError):
    """A payload that is not one, or that does not open."""


@dataclass(frozen=True)
class Restored:
    """An original brought back: its pixels (an image) or its file (a clip), relative path and
    label."""

    pixels: np.ndarray | None
    relpath: str
    label: str | None
    file: bytes | None = None

    def data(self) -> bytes:
        """What restore writes: the clip's file, or the image encoded losslessly."""
        if self.file is not None:
            return self.file
        assert self.pixels is not None
        return encode(self.pixels, restored_name(self.relpath))


class Sealer:
    """Seals and opens restore payloads under one key."""

    def __init__(self, key: Key) -> None:
        self._aead = AESGCM(key.derive(INFO, 32))

    # ------------------------------------------------------------------------------- sealing

    def seal(self, name: str, *, original: np.ndarray, output: np.ndarray, published: bytes,
             boxes: np.ndarray, source: str, label: str | None) -> bytes:
        """The payload of the image published as ``name`` (``published``: its file bytes,
        ``output``: its pixels before encoding) made from ``original`` (input path ``source``)
        with faces in the detector ``boxes``."""
        regions = face_regions(original, output, boxes)
        residual = (original.astype(np.int16) - decode(published, name) + _NEUTRAL) % 256
        residual = residual.astype(np.uint8)
        for x0, y0, x1, y1 in regions:
            residual[y0:y1, x0:x1] = _NEUTRAL
        path, lab = _path_and_label(source, label)
        head = _IMAGE.pack(pixel_digest(original), original.shape[0], original.shape[1],
                           len(path), _NO_LABEL if label is None else len(lab))
        rest = b"" if (residual == _NEUTRAL).all() else _lossless(residual)
        records = [self._record(name, IMAGE, 0, head + path + lab + rest)]
        records += [self._record(name, FACE, j, _BOX.pack(*box) + _lossless(
                        original[box[1]:box[3], box[0]:box[2]]))
                    for j, box in enumerate(regions)]
        return _HEAD.pack(MAGIC, len(records)) + b"".join(records)

    def seal_clip(self, name: str, *, original: bytes, published: bytes, source: str,
                  label: str | None) -> bytes:
        """The payload of the clip published as ``name`` (file bytes ``published``) made from
        the file ``original`` (input path ``source``)."""
        path, lab = _path_and_label(source, label)
        view = memoryview(original)
        parts = [view[at:at + CLIP_PART] for at in range(0, max(len(view), 1), CLIP_PART)]
        head = _CLIP.pack(hashlib.sha256(published).digest(), len(path),
                          _NO_LABEL if label is None else len(lab), len(parts))
        records = [self._record(name, CLIP, 0, b"".join((head, path, lab, parts[0])))]
        records += [self._record(name, CLIP, k, bytes(part)) for k, part in enumerate(parts)
                    if k]
        return _HEAD.pack(MAGIC, len(records)) + b"".join(records)

    def _record(self, name: str, kind: int, index: int, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, _associated(name, kind, index))
        return _RECORD.pack(kind, index, nonce, len(sealed)) + sealed

    # ------------------------------------------------------------------------------- opening

    def open(self, name: str, published: bytes, payload: bytes) -> Restored:
        """The original of the image or clip published as ``name``; raises PayloadError (one
        line) for a wrong key, an altered or moved payload, or a file changed after
        anonymizing."""
        opened: dict[tuple[int, int], bytes] = {}
        refused: list[tuple[int, int]] = []
        for kind, index, nonce, sealed in parse(payload, name):
            try:
                opened[kind, index] = self._aead.decrypt(nonce, sealed,
                                                         _associated(name, kind, index))
            except InvalidTag:
                refused.append((kind, index))
        if not opened:
            raise PayloadError("restore payload does not open with this key (wrong key, or "
                               "the payload was altered, belongs to another file, or the file "
                               "was renamed)", name)
        if refused:
            what = ", ".join({IMAGE: "image record", FACE: f"face {i}",
                              CLIP: f"clip part {i}"}[k] for k, i in refused)
            raise PayloadError(f"{what} refused (altered, or moved from another file); "
                               "not restored", name)
        if (CLIP, 0) in opened:
            return _clip(name, published, opened)
        if (IMAGE, 0) not in opened:
            raise PayloadError("restore payload has no image record", name)
        return _rebuild(name, decode(published, name), opened)


def _path_and_label(source: str, label: str | None) -> tuple[bytes, bytes]:
    return os.fsencode(source), b"" if label is None else label.encode("utf-8")


def _read_path_and_label(record: bytes, at: int, n_path: int, n_label: int
                         ) -> tuple[str, str | None, int]:
    """What ``_path_and_label`` wrote at ``at``: the path, the label and where they end."""
    relpath = os.fsdecode(record[at:at + n_path])
    at += n_path
    if n_label == _NO_LABEL:
        return relpath, None, at
    return relpath, record[at:at + n_label].decode("utf-8"), at + n_label


def _clip(name: str, published: bytes, opened: dict[tuple[int, int], bytes]) -> Restored:
    """The original clip from its opened records (part 0 carries the header)."""
    record = opened[CLIP, 0]
    digest, n_path, n_label, n_parts = _CLIP.unpack_from(record)
    if hashlib.sha256(published).digest() != digest:
        raise PayloadError("the published clip was changed or re-encoded after anonymizing", name)
    missing = [k for k in range(1, n_parts) if (CLIP, k) not in opened]
    if missing:
        raise PayloadError(f"clip part {missing[0]} of {n_parts} missing from the payload", name)
    relpath, label, at = _read_path_and_label(record, _CLIP.size, n_path, n_label)
    file = b"".join([record[at:], *(opened[CLIP, k] for k in range(1, n_parts))])
    return Restored(None, relpath, label, file=file)


def _rebuild(name: str, pixels: np.ndarray, opened: dict[tuple[int, int], bytes]) -> Restored:
    """The original from the decoded published image and the opened records."""
    record = opened.pop((IMAGE, 0))
    digest, h, w, n_path, n_label = _IMAGE.unpack_from(record)
    relpath, label, at = _read_path_and_label(record, _IMAGE.size, n_path, n_label)
    if pixels.shape[:2] != (h, w):
        raise PayloadError(f"published image is {pixels.shape[1]}x{pixels.shape[0]}, its "
                           f"payload was made for {w}x{h}", name)
    if at < len(record):
        residual = _unlossless(record[at:], (h, w))
        pixels = ((pixels.astype(np.int16) + residual - _NEUTRAL) % 256).astype(np.uint8)
    else:
        pixels = pixels.copy()  # a decoded image may be read-only
    for (_, _), face in sorted(opened.items()):
        x0, y0, x1, y1 = _BOX.unpack_from(face)
        if x1 > x0 and y1 > y0:
            pixels[y0:y1, x0:x1] = _unlossless(face[_BOX.size:], (y1 - y0, x1 - x0))
    if pixel_digest(pixels) != digest:
        raise PayloadError("restored pixels differ from the original's (the published image "
                           "was changed or re-encoded after anonymizing)", name)
    return Restored(pixels, relpath, label)


def parse(payload: bytes, name: str = "<payload>") -> Iterator[tuple[int, int, bytes, bytes]]:
    """The (kind, index, nonce, ciphertext) records of a payload; raises PayloadError for
    anything that is not a whole payload (``audit`` uses it to recognise one)."""
    if len(payload) < _HEAD.size or payload[:len(MAGIC)] != MAGIC:
        raise PayloadError("not a faceanon restore payload", name)
    _, count = _HEAD.unpack_from(payload)
    at = _HEAD.size
    records = []
    for _ in range(count):
        if at + _RECORD.size > len(payload):
            raise PayloadError("truncated restore payload", name)
        kind, index, nonce, size = _RECORD.unpack_from(payload, at)
        at += _RECORD.size
        if kind not in (IMAGE, FACE, CLIP) or at + size > len(payload):
            raise PayloadError("corrupt restore payload", name)
        records.append((kind, index, nonce, payload[at:at + size]))
        at += size
    if at != len(payload):
        raise PayloadError("corrupt restore payload (trailing bytes)", name)
    return iter(records)


def _associated(name: str, kind: int, index: int) -> bytes:
    return MAGIC + struct.pack(">BH", kind, index) + os.fsencode(name)


def pixel_digest(pixels: np.ndarray) -> bytes:
    """SHA-256 of an image's shape and pixels: what a restore must reproduce exactly."""
    data = repr(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()
    return hashlib.sha256(data).digest()


def face_regions(original: np.ndarray, output: np.ndarray, boxes: np.ndarray
                 ) -> list[tuple[int, int, int, int]]:
    """Per face, the rectangle (x0, y0, x1, y1) around the pixels that anonymizing changed
    within twice the detector's box. Pixels changed farther out are not lost: the residual
    carries every pixel outside the rectangles."""
    changed = np.any(original != output, axis=2)
    h, w = changed.shape
    regions = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        xa, ya = min(max(int(cx - bw), 0), w), min(max(int(cy - bh), 0), h)
        xb, yb = max(min(int(np.ceil(cx + bw)), w), xa), max(min(int(np.ceil(cy + bh)), h), ya)
        ys, xs = np.nonzero(changed[ya:yb, xa:xb])
        regions.append((xa, ya, xa, ya) if len(xs) == 0 else
                       (xa + int(xs.min()), ya + int(ys.min()),
                        xa + int(xs.max()) + 1, ya + int(ys.max()) + 1))
    return regions


def _lossless(pixels: np.ndarray) -> bytes:
    """(h, w, 3) uint8 → lossless WebP (PNG past WebP's size limit); channel order kept."""
    if pixels.size == 0:
        return b""
    webp = max(pixels.shape[:2]) <= _WEBP_MAX
    ok, data = cv2.imencode(".webp" if webp else ".png", np.ascontiguousarray(pixels),
                            [cv2.IMWRITE_WEBP_QUALITY, 101] if webp else [])
    if not ok:
        raise FaceanonError("cannot encode a restore payload")
    return data.tobytes()


def _unlossless(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.shape[:2] != shape:
        raise PayloadError("restore payload holds a damaged region")
    return pixels


def restored_name(relpath: str) -> str:
    """Where a restored original is written: its own path, plus ``.png`` for lossy formats."""
    return relpath + RESTORED_SUFFIX if Path(relpath).suffix.lower() in LOSSY_SUFFIXES else relpath


def sealer_for(sealer: Sealer | None, entry: Entry, original: np.ndarray, output: np.ndarray | None,
               published: bytes | None, boxes: np.ndarray) -> Callable[[str], bytes] | None:
    """What ``Result.seal`` wants for one anonymized image (None: not reversible, or no output)."""
    if sealer is None or published is None or output is None:
        return None
    return functools.partial(sealer.seal, original=original, output=output, published=published,
                             boxes=boxes, source=entry.relpath, label=entry.label)


# -------------------------------------------------------------------------------- restore job

class _Images:
    """An output folder's images without their payload sidecars (restore reads those itself)."""

    def __init__(self, folder: FolderSource) -> None:
        self.path = folder.path
        self._entries = [e for e in folder.entries() if not e.relpath.endswith(PAYLOAD_SUFFIX)]

    def entries(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def run_restore(anon: str | Path, out: str | Path, key: Key,
                progress: Callable[[int, int], None] | None = None) -> tuple[Job, dict[str, int]]:
    """Restore every image and clip of the reversible output ``anon`` into ``out`` (same layout
    as the original input, atomic, resumable, manifest and run record in ``out``'s private
    folder)."""
    source = open_input(anon, videos=True)
    payloads = payload_reader(anon)
    sealer = Sealer(key)

    def step(entry: Entry) -> Result:
        payload = payloads(entry.relpath)
        if payload is None:
            return Result(FAILED, reason="no restore payload (not made with anonymize "
                                         "--reversible)")
        restored = sealer.open(entry.relpath, entry.read_bytes(), payload)
        return Result(OK, data=restored.data(),
                      target=(restored_name(restored.relpath), restored.label))

    job = Job("restore", _Images(source) if isinstance(source, FolderSource) else source,
              Path(out), {"key_fingerprint": key.fingerprint, "payload": INFO})
    return job, job.run(step, progress)
