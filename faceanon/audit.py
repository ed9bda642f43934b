"""``faceanon audit``: check an anonymized output for anything identifying before it is shared.

A replaced face is not enough: a person can be named by a folder, a file name or an archive
label, located by EXIF GPS, described in an XMP packet, an ICC description or a comment, shown
whole in an EXIF thumbnail, or simply left in an image that was copied through unchanged; and a
private record copied into the output hands over every input path and hash. ``audit`` looks
for each of these in what would be published (a folder, an archive or a clip; in a clip also
its tags and further streams) and lists one finding per leak. The originals, needed for the
name and copy checks, are ``orig`` or the input named in the output's private record; the
face check (the evaluator's recognizer on original and anonymized faces, as ``faceanon eval``
measures anonymity) runs only when ``orig`` is given, since it costs a detection and an
embedding per face.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from faceanon import records
from faceanon.datasets import PAYLOAD_SUFFIX, Entry, is_archive, open_input, payload_reader
from faceanon.errors import FaceanonError
from faceanon.images import decode, is_image_name
from faceanon.metadata import find_metadata
from faceanon.pseudonyms import name_parts
from faceanon.reversible import PayloadError, parse
from faceanon.video import find_clip_metadata, is_video_name, read_frames

# Finding kinds besides the metadata ones (faceanon.metadata).
PRIVATE, UNEXPECTED, NAME, COPIED, FACE, UNREADABLE = (
    "private record", "unexpected file", "name", "copied image", "face matches original",
    "unreadable image")
# An image is "unchanged" when no 8x8 block differs from the original by more than this mean
# absolute difference: a JPEG re-encoded at quality 95 stays under 3.5 on LFW, while even a
# small blurred or replaced face moves some block by more than 10.
UNCHANGED_BLOCK_DIFF = 6.0
# The same for a clip's frames: re-encoding a clip (H.264 at CRF 17) moves blocks by up to 7.2
# on the tests' synthetic clip, a blurred face by far more.
UNCHANGED_CLIP_BLOCK_DIFF = 9.0
# File names of private records, in this layout or the one before it (OUT.h5.run.json, ...).
_RECORD_ENDINGS = (records.MANIFEST, records.RUN, records.NAMES, records.PEOPLE,
                   records.PRIVATE_SUFFIX, ".staging")
_ARCHIVE_PARTS = {"names", "images", "labels", "payloads"}
_ARCHIVE_ATTRS = {"faceanon_format", "format_version", "created_by"}
_SEPARATORS = re.compile(r"[\s_\-.]+")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    """One leak: where (a path relative to the output, or the archive itself) and what."""

    path: str
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    not_checked: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # not leaks, but the publisher must know

    def as_dict(self) -> dict[str, Any]:
        return {"findings": [asdict(f) for f in self.findings], "leaks": len(self.findings),
                "checked": self.checked, "not_checked": self.not_checked,
                "notices": self.notices}


@dataclass
class _Published:
    """What a reader of the output gets: its files (or archive entries) and labels."""

    images: list[Entry]
    labels: list[tuple[str, str]]  # (image path, label) of an archive
    findings: list[Finding]
    payloads: int = 0  # images with a well-formed restore payload (anonymize --reversible)


def audit(out: str | Path, orig: str | Path | None = None, recognizer: str = "dlib",
          threshold: float | None = None, device: str = "cpu",
          progress: Progress | None = None) -> AuditReport:
    """Audit the publishable output ``out`` (folder, archive or clip); see the module
    docstring."""
    out = Path(out)
    if not out.exists():
        raise FaceanonError("output not found", out)
    report = AuditReport()
    published = _published(out)
    report.findings += published.findings
    clips = sum(is_video_name(e.relpath) for e in published.images)
    report.checked["images"] = len(published.images) - clips
    if clips:
        report.checked["clips"] = clips
    if published.payloads:
        report.checked["restore payloads"] = published.payloads
        what = "images and clips carry their originals" if clips else \
            "images carry their original faces"
        report.notices.append(
            f"reversible payload present: {published.payloads} of {len(published.images)} "
            f"{what} encrypted (AES-256-GCM ciphertext only); anyone holding the key they were "
            "made with can restore them")
    originals = Path(orig) if orig is not None else records.recorded_input(out)
    if originals is None:
        report.not_checked["names"] = report.not_checked["copies"] = (
            "needs --orig (no private record beside the output names the input)")
    elif not originals.exists():
        raise FaceanonError("originals not found (give --orig)", originals)
    names = _known_names(out, originals)
    report.checked["names"] = len(names)
    report.findings += _name_findings(published, names)
    report.findings += _image_findings(
        published.images, None if originals is None else _Originals(originals, out), progress)
    if orig is not None:
        report.findings += _face_findings(out, Path(orig), recognizer, threshold, device,
                                          progress)
    else:
        report.not_checked["faces"] = "needs --orig (the evaluator compares faces with originals)"
    return report


# ---------------------------------------------------------------------- what is published

def _published(out: Path) -> _Published:
    if out.is_file() and is_video_name(out.name):  # `anonymize clip.mp4 --out anon.mp4`
        payload = payload_reader(out)(out.name)
        why = None if payload is None else _payload_problem(payload, True)
        return _Published([Entry(out.name, out.read_bytes)], [],
                          [Finding(out.name + PAYLOAD_SUFFIX, UNEXPECTED, why)] if why else [],
                          int(payload is not None and why is None))
    return _archive(out) if is_archive(out) else _folder(out)


def _folder(root: Path) -> _Published:
    """Every file below ``root``: images to check further, anything else a finding itself."""
    found: list[Finding] = []
    images: list[Entry] = []
    payloads = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            full = Path(dirpath) / name
            if name.endswith(_RECORD_ENDINGS):
                found.append(Finding(rel, PRIVATE, "faceanon record; keep it out of what you publish"))
            elif name.endswith(PAYLOAD_SUFFIX) and not full.is_symlink():
                why = _payload_problem(full.read_bytes(), name[:-len(PAYLOAD_SUFFIX)] in filenames)
                if why:
                    found.append(Finding(rel, UNEXPECTED, why))
                else:
                    payloads += 1
            elif full.is_symlink():
                found.append(Finding(rel, UNEXPECTED, f"symbolic link to {os.readlink(full)}"))
            elif name in filenames and not (is_image_name(name) or is_video_name(name)):
                found.append(Finding(rel, UNEXPECTED, "not an image"))
            elif name in filenames:
                images.append(Entry(rel, lambda full=full: full.read_bytes()))
        dirnames[:] = [d for d in dirnames if not d.endswith(_RECORD_ENDINGS)
                       and not (Path(dirpath) / d).is_symlink()]
    return _Published(images, [], found, payloads)  # a folder's labels are in its paths


def _archive(path: Path) -> _Published:
    """An archive's entries and labels; anything stored beside them is a finding."""
    with h5py.File(path, "r") as h5:
        extra = [f"dataset or group {k!r}" for k in sorted(set(h5.keys()) - _ARCHIVE_PARTS)]
        extra += [f"attribute {k!r}" for k in sorted(set(h5.attrs) - _ARCHIVE_ATTRS)]
    entries = list(open_input(path).entries())
    found = [Finding(path.name, UNEXPECTED, f"{what} in the archive") for what in extra]
    stored = payload_reader(path)
    payloads = 0
    for entry in entries:
        payload = stored(entry.relpath)
        why = None if payload is None else _payload_problem(payload, True)
        if why:
            found.append(Finding(entry.relpath, UNEXPECTED, why))
        payloads += payload is not None and why is None
    return _Published([e for e in entries if e.skip_reason is None],
                      [(e.relpath, e.label) for e in entries if e.label is not None], found,
                      payloads)


def _payload_problem(payload: bytes, has_image: bool) -> str | None:
    """Why a restore payload is not one that faceanon made for a published image (None: it is:
    a header and AES-GCM ciphertexts, nothing readable without the key)."""
    if not has_image:
        return "restore payload without its image"
    try:
        parse(payload)
    except PayloadError as e:
        return f"{e.reason}; may hold anything"
    return None


# -------------------------------------------------------------------------------------- names

def _normal(text: str) -> str:
    """A name as words: lower case, any run of separators one space (so ``George_W_Bush``,
    ``george w bush`` and ``George-W-Bush`` are one name)."""
    return " ".join(w for w in _SEPARATORS.split(text.lower()) if w)


def _known_names(out: Path, originals: Path | None) -> set[str]:
    """The input's names: the private record's mapping, and the originals' folders, file-name
    name parts and labels."""
    names = set(records.read_names(out))
    if originals is not None:
        for entry in open_input(originals, videos=True).entries():
            names.update(name_parts(entry.relpath))
            if entry.label is not None:
                names.add(entry.label)
    return {n for n in map(_normal, names) if n}


def _contains_name(text: str, names: set[str]) -> str | None:
    """The first known name that is a whole run of words in ``text``."""
    words = _normal(text).split(" ")
    for i in range(len(words)):
        for j in range(i + 1, len(words) + 1):
            if " ".join(words[i:j]) in names:
                return " ".join(words[i:j])
    return None


def _name_findings(published: _Published, names: set[str]) -> Iterator[Finding]:
    for entry in published.images:
        for part in name_parts(entry.relpath):
            hit = _contains_name(part, names)
            if hit:
                yield Finding(entry.relpath, NAME, f"{hit!r} (a name in the input) in the path")
                break
    for relpath, label in published.labels:
        hit = _contains_name(label, names)
        if hit:
            yield Finding(relpath, NAME, f"{hit!r} (a name in the input) in the label")


# ------------------------------------------------------------------------------------- images

class _Originals:
    """The input images, indexed to recognise a published image that is one of them."""

    def __init__(self, originals: Path, out: Path) -> None:
        self.entries = {e.relpath: e for e in open_input(originals, videos=True).entries()
                        if e.skip_reason is None}
        self.bytes_hash: dict[str, str] = {}
        self.pixels_hash: dict[str, str] = {}
        for rel, entry in self.entries.items():
            try:
                data = entry.read_bytes()
                self.bytes_hash[hashlib.sha256(data).hexdigest()] = rel
                if not is_video_name(rel):
                    self.pixels_hash[_pixel_digest(decode(data, rel))] = rel
            except FaceanonError:
                continue
        # Which original each published path was made from: the private record knows; without
        # it, outputs made with --keep-names share their originals' paths.
        self.source_of = {o: i for i, o in records.output_paths(out).items()}

    def copied(self, relpath: str, data: bytes, image: np.ndarray) -> str | None:
        """Why the published ``image`` counts as copied from an original, or None."""
        same = self.identical(data)
        if same is not None:
            return same
        same = self.pixels_hash.get(_pixel_digest(image))
        if same is not None:
            return f"pixel-identical to the input {same!r}"
        source = self.entries.get(self.source_of.get(relpath, relpath))
        if source is None:
            return None
        try:
            original = source.load()
        except FaceanonError:
            return None
        diff = _max_block_difference(original, image)
        if diff is not None and diff <= UNCHANGED_BLOCK_DIFF:
            return f"unchanged from the input {source.relpath!r} (no 8x8 block differs by " \
                   f"more than {diff:.1f} levels)"
        return None

    def identical(self, data: bytes) -> str | None:
        same = self.bytes_hash.get(hashlib.sha256(data).hexdigest())
        return None if same is None else f"byte-identical to the input {same!r}"

    def copied_clip(self, relpath: str, data: bytes) -> str | None:
        """Why the published clip counts as copied from an original (byte-identical, or no
        frame changed beyond re-encoding), or None."""
        same = self.identical(data)
        source = self.entries.get(self.source_of.get(relpath, relpath))
        if same is not None or source is None or not is_video_name(source.relpath):
            return same
        n = 0
        try:
            pairs = zip(read_frames(source.read_bytes(), source.relpath),
                        read_frames(data, relpath))
            for n, ((_, a), (_, b)) in enumerate(pairs, 1):
                diff = _max_block_difference(a, b)
                if diff is None or diff > UNCHANGED_CLIP_BLOCK_DIFF:
                    return None
        except FaceanonError:
            return None
        if not n:
            return None
        return f"unchanged from the input {source.relpath!r} (none of {n} frames has an 8x8 " \
               f"block that differs by more than {UNCHANGED_CLIP_BLOCK_DIFF:.0f} levels)"


def _pixel_digest(image: np.ndarray) -> str:
    return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()


def _max_block_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    """The largest mean absolute difference of any 8x8 block (None for other sizes)."""
    if a.shape != b.shape or min(a.shape[:2]) < 8:
        return None
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)
    h, w = d.shape[0] // 8 * 8, d.shape[1] // 8 * 8
    return float(d[:h, :w].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3)).max())


def _image_findings(images: list[Entry], originals: _Originals | None,
                    progress: Progress | None) -> Iterator[Finding]:
    """Metadata in each published image's bytes and, with originals, images copied through."""
    for n, entry in enumerate(images):
        try:
            data = entry.read_bytes()
        except OSError as e:
            yield Finding(entry.relpath, UNREADABLE, e.strerror or str(e))
            continue
        if is_video_name(entry.relpath):
            yield from _clip_findings(entry.relpath, data, originals)
            if progress:
                progress(n + 1, len(images))
            continue
        for kind, detail in find_metadata(data):
            yield Finding(entry.relpath, kind, detail)
        if originals is not None:
            try:
                image = decode(data, entry.relpath)
            except FaceanonError as e:
                yield Finding(entry.relpath, UNREADABLE, e.reason)
                continue
            why = originals.copied(entry.relpath, data, image)
            if why is not None:
                yield Finding(entry.relpath, COPIED, why)
        if progress:
            progress(n + 1, len(images))


def _clip_findings(relpath: str, data: bytes, originals: _Originals | None
                   ) -> Iterator[Finding]:
    """Tags and further streams in a published clip and, with originals, a clip copied
    through."""
    try:
        found = find_clip_metadata(data, relpath)
    except FaceanonError as e:
        yield Finding(relpath, UNREADABLE, e.reason)
        return
    for kind, detail in found:
        yield Finding(relpath, kind, detail)
    why = None if originals is None else originals.copied_clip(relpath, data)
    if why is not None:
        yield Finding(relpath, COPIED, why)


# -------------------------------------------------------------------------------------- faces

def _face_findings(out: Path, orig: Path, recognizer: str, threshold: float | None,
                   device: str, progress: Progress | None) -> Iterator[Finding]:
    """Faces that ``faceanon eval``'s recognizer still matches to their originals."""
    from faceanon.evaluation.report import EvalOptions, evaluate

    options = EvalOptions(recognizer=recognizer, threshold=threshold, fid=False, sample=0,
                          device=device)
    report = evaluate(out, orig, options, progress=progress)
    published_as = records.output_paths(out)
    for name, clip in (report.get("videos") or {}).get("clips", {}).items():
        if clip.get("frames_left_visible"):  # an unreadable clip is a finding of its own
            yield Finding(published_as.get(name, name), FACE,
                          f"{clip['frames_left_visible']} of {clip['frames']} frames with an "
                          f"original face the evaluator still matches (frames "
                          f"{clip['visible_frames'][:10]}) "
                          f"({report['videos']['recognizer']['name']})")
    for flagged in report.get("flagged", []):
        for reason in flagged["reasons"]:
            if reason.startswith("matches original"):
                yield Finding(published_as.get(flagged["path"], flagged["path"]), FACE,
                              f"face {flagged['face']} {reason} ({report['recognizer']['name']})")
