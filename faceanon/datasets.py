"""Dataset I/O for every command: folders and HDF5 archives in, the same layout out.

HDF5 archives come in two layouts: the encoded one below (``pack``), and array archives (one
(N, H, W, C)-style image array, as ML pipelines keep them), read and written by
``faceanon.arrays``, which plugs in through ``open_input`` and ``open_output``.

A job reads entries from a ``Source``, turns each into output bytes (or a skip / failure) and
writes them to a ``Sink``; a manifest line records every entry. Outputs are atomic and a
re-run of a killed job resumes: finished entries (by manifest) are not redone. The manifest
and run record live beside the output, never in it (see ``faceanon.records``); a job given
``Pseudonyms`` writes each entry under its pseudonymized path and label.

HDF5 archive schema (``format_version`` 1), written and read only here:

- root attrs ``faceanon_format = "images"``, ``format_version = 1``, ``created_by``;
- ``names``: variable-length bytes, the relative POSIX path of each image as the file system
  spells it (``os.fsencode``), so non-UTF-8 names survive;
- ``images``: variable-length uint8, each image's encoded file bytes exactly as read;
- ``labels`` (optional): variable-length UTF-8 strings, an identity label per image;
- ``payloads`` (optional, ``anonymize --reversible``): variable-length uint8, each image's
  encrypted restore payload (see ``faceanon.reversible``), empty for an image without one.

In a folder output the same payload is a sidecar file beside its image, ``NAME`` +
``PAYLOAD_SUFFIX``, written atomically before the image, so a killed run never leaves an image
of a reversible run without its payload (the entry is redone, both rewritten).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import hashlib
import json
import os
import stat
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import h5py
import numpy as np

from faceanon import __version__
from faceanon.errors import FaceanonError
from faceanon.fsutil import TEMP_NAME, atomic_write_bytes, is_within
from faceanon.images import decode, is_image_name
from faceanon.video import is_video_name
from faceanon.pseudonyms import Pseudonyms
from faceanon.records import (  # the statuses are re-exported for the jobs' steps
    FAILED, MANIFEST, NAMES, NO_FACE, OK, RUN, SKIPPED, Manifest, make_private_dir, manifest_lines,
    private_dir, write_private)

if TYPE_CHECKING:
    from faceanon.arrays import LabelHook

ARCHIVE_FORMAT = "images"
ARCHIVE_VERSION = 1
ARCHIVE_SUFFIXES = (".h5", ".hdf5")
PAYLOAD_SUFFIX = ".faceanon-restore"  # a folder output's sidecar: an image's restore payload
TRIM_EVERY_S = 1.0  # a job returns free heap pages to the system at most this often
_PAYLOAD_TAG = b"\x00payload\x00"  # staging-log names of payloads (no path holds a NUL byte)
# A file's (device, inode, size, modification and change times in ns): a file rewritten,
# replaced or touched has another, even one copied over it at the same size with its times kept.
FileStamp = tuple[int, int, int, int, int]


def is_archive(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ARCHIVE_SUFFIXES


# ---------------------------------------------------------------------------------- sources

@dataclass
class Entry:
    """One input: its relative path and a way to get its bytes (lazily, so big sets stream)."""

    relpath: str
    _read: Callable[[], bytes] = field(repr=False)
    label: str | None = None
    skip_reason: str | None = None  # set for inputs that are not images (recorded, not read)
    # The input's own file, where it is one on disk (a folder's, a single file): a clip is read
    # from it pass by pass instead of being held in memory (``Job._read``).
    path: Path | None = None
    # ``file_stamp`` of ``path`` when the job hashed it: a clip read later must still match.
    stamp: FileStamp | None = None

    def read_bytes(self) -> bytes:
        return self._read()

    def load(self) -> np.ndarray:
        """Decoded (H, W, 3) uint8 RGB; raises FaceanonError naming the entry."""
        return decode(self.read_bytes(), self.relpath)


class Source(Protocol):
    path: Path

    def entries(self) -> Iterator[Entry]: ...

    def __len__(self) -> int: ...


class FolderSource:
    """Images (and with ``videos``, video files) below a folder, recursively, in a
    deterministic (byte-wise path) order."""

    def __init__(self, path: Path, videos: bool = False) -> None:
        self.path = path
        self.videos = videos
        self._items: list[tuple[str, str | None]] | None = None

    def _scan(self) -> list[tuple[str, str | None]]:
        if self._items is None:
            items: list[tuple[str, str | None]] = []
            for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
                rel_dir = os.path.relpath(dirpath, self.path)
                for name in dirnames:
                    if os.path.islink(os.path.join(dirpath, name)):
                        items.append((_join(rel_dir, name), "symbolic link to a folder, not followed"))
                for name in filenames:
                    items.append((_join(rel_dir, name), _skip_reason(name, self.videos)))
            items.sort(key=lambda item: os.fsencode(item[0]))
            self._items = items
        return self._items

    def __len__(self) -> int:
        return len(self._scan())

    def entries(self) -> Iterator[Entry]:
        for rel, reason in self._scan():
            full = self.path / rel
            parent = Path(rel).parent.name or None
            yield Entry(rel, lambda full=full: _read_regular(full), parent, reason, full)


class ArchiveSource:
    """Images inside a faceanon HDF5 archive, in stored order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h5 = h5py.File(path, "r")
        except OSError:
            raise FaceanonError("not a readable HDF5 file", path) from None
        if self._h5.attrs.get("faceanon_format") != ARCHIVE_FORMAT:
            raise FaceanonError("not a faceanon image archive (missing faceanon_format)", path)
        version = int(self._h5.attrs.get("format_version", -1))
        if version > ARCHIVE_VERSION:
            raise FaceanonError(f"archive format version {version} is newer than this faceanon",
                                path)
        self._names = [os.fsdecode(bytes(n)) for n in self._h5["names"][:]]
        labels = self._h5.get("labels")
        self._labels = [_text(s) for s in labels[:]] if labels is not None else None

    def __len__(self) -> int:
        return len(self._names)

    def entries(self) -> Iterator[Entry]:
        images = self._h5["images"]
        for i, rel in enumerate(self._names):
            label = self._labels[i] if self._labels is not None else None
            reason = None if is_image_name(rel) else "not an image file type"
            yield Entry(rel, lambda i=i: images[i].tobytes(), label, reason)


class FileSource:
    """A single video file as the whole input (``faceanon anonymize clip.mp4 --out anon.mp4``):
    one entry, named by the file's name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 1

    def entries(self) -> Iterator[Entry]:
        yield Entry(self.path.name, lambda: _read_regular(self.path), path=self.path)

    def check_output(self, out: Path) -> None:
        """The container is the input's: an output named for another would mislead."""
        if out.suffix.lower() != self.path.suffix.lower():
            raise FaceanonError(f"output must be a {self.path.suffix} file, as the input is", out)


def open_input(path: str | Path, dataset: str | None = None,
               label_hook: LabelHook | None = None, videos: bool = False) -> Source:
    """A folder, a faceanon archive or an array archive (``faceanon.arrays``), checked to exist;
    with ``videos`` (for ``anonymize``), also a video file, and folders take videos in too.

    ``dataset`` names an array archive's image dataset; ``label_hook`` decides what an array
    archive's output stores for its identifying datasets (default: copied, and listed).
    """
    path = Path(path)
    if not path.exists():
        raise FaceanonError("input not found", path)
    if is_archive(path) and path.is_file() and not _is_faceanon_archive(path):
        from faceanon.arrays import ArraySource

        return ArraySource(path, dataset, label_hook)
    if dataset is not None:
        raise FaceanonError("--dataset applies to array archives only", path)
    if path.is_dir():
        return FolderSource(path, videos)
    if is_archive(path):
        return ArchiveSource(path)
    if videos and is_video_name(path.name):
        return FileSource(path)
    raise FaceanonError("input must be a folder or an .h5 archive"
                        + (", or a video file" if videos else ""), path)


def _is_faceanon_archive(path: Path) -> bool:
    """True for the encoded layout that ``pack`` writes; False for any other HDF5 file."""
    try:
        with h5py.File(path, "r") as h5:
            return "faceanon_format" in h5.attrs
    except OSError:
        return False  # the array reader gives the one-line reason


def payload_reader(path: str | Path) -> Callable[[str], bytes | None]:
    """The restore payload of each image of an output folder or archive, or of a single clip,
    by the entry's relative path (None: it has none)."""
    path = Path(path)
    if not is_archive(path):
        folder = path if path.is_dir() else path.parent  # a clip's sidecar lies beside it

        def sidecar(relpath: str) -> bytes | None:
            file = folder / (relpath + PAYLOAD_SUFFIX)
            return _read_regular(file) if os.path.lexists(file) else None
        return sidecar
    h5 = h5py.File(path, "r")  # kept open, read image by image (as ArchiveSource does)
    if "payloads" not in h5:
        h5.close()
        return lambda relpath: None
    index = {os.fsdecode(bytes(n)): i for i, n in enumerate(h5["names"][:])}
    payloads = h5["payloads"]

    def stored(relpath: str) -> bytes | None:
        i = index.get(relpath)
        return None if i is None else payloads[i].tobytes() or None
    return stored


def _join(rel_dir: str, name: str) -> str:
    return name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")


def _skip_reason(name: str, videos: bool) -> str | None:
    if is_image_name(name) or (videos and is_video_name(name)):
        return None
    return "not an image or video file type" if videos else "not an image file type"


def _read_regular(path: Path) -> bytes:
    with _regular(path):
        return path.read_bytes()


def _hash_regular(path: Path) -> tuple[str, FileStamp]:
    """The SHA-256 of a file, read in chunks rather than whole, and its ``file_stamp``, which
    must be the same before and after."""
    digest = hashlib.sha256()
    with _regular(path) as st, open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if file_stamp(path) != _stamp(st):
        raise FaceanonError("the file changed while it was read", path)
    return digest.hexdigest(), _stamp(st)


def file_stamp(path: Path) -> FileStamp:
    with _reading(path):
        return _stamp(os.stat(path))


def _stamp(st: os.stat_result) -> FileStamp:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@contextmanager
def _regular(path: Path) -> Iterator[os.stat_result]:
    """Reading ``path``, which must be a regular file (its stat result is given); any failure
    one ``FaceanonError``."""
    with _reading(path):
        st = os.stat(path)  # follows links; a loop or a dangling link fails here
        if not stat.S_ISREG(st.st_mode):
            raise FaceanonError("not a regular file", path)
        yield st


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An ``OSError`` on ``path`` as one ``FaceanonError``."""
    try:
        yield
    except OSError as e:
        raise FaceanonError(f"cannot read: {e.strerror or e}", path) from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------ sinks

class Sink(Protocol):
    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str: ...

    def finish(self) -> None: ...


class FolderSink:
    """Each output file written atomically under ``root`` at the input's relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root)

    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str:
        target = self.root / relpath
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts \
                or not is_within(target, self.root):
            raise FaceanonError("entry path leaves the output folder", relpath)
        if payload is not None:
            atomic_write_bytes(target.with_name(target.name + PAYLOAD_SUFFIX), payload)
        atomic_write_bytes(target, data)
        return relpath

    def finish(self) -> None:
        pass


class FileSink:
    """The output of a single-file input: that one file, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # What a killed write of this file or of its payload sidecar left, and nothing else.
        for name in (path.name, path.name + PAYLOAD_SUFFIX):
            for stale in path.parent.glob(glob.escape(f".{name}.fa-") + "*"):
                if TEMP_NAME.match(stale.name):
                    stale.unlink()

    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str:
        if payload is not None:  # a sidecar beside it, first, as in a folder
            atomic_write_bytes(self.path.with_name(self.path.name + PAYLOAD_SUFFIX), payload)
        atomic_write_bytes(self.path, data)
        return self.path.name

    def finish(self) -> None:
        pass


def remove_stale_temporaries(root: Path) -> None:
    """Delete the temporary files that a killed ``atomic_write_bytes`` left behind."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if TEMP_NAME.match(name):
                os.unlink(os.path.join(dirpath, name))


_RECORD = struct.Struct(">IIQ")  # name length, label length (0xFFFFFFFF = none), data length


class ArchiveSink:
    """Builds an archive crash-safely: records go to an append-only staging log, and the HDF5
    file is written from it in one go at the end and renamed into place.

    HDF5 itself is not safe against a kill mid-write; the log is (a torn last record is cut off
    on resume), so a killed job leaves either no archive or a complete one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.staging = path.with_name(path.name + ".staging")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self._log = open(self.staging, "ab")

    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str:
        if payload is not None:  # logged first: an image logged without its payload is redone
            self._log_record(_PAYLOAD_TAG + os.fsencode(relpath), payload, None)
        self._log_record(os.fsencode(relpath), data, label)
        return relpath

    def _log_record(self, name: bytes, data: bytes, label: str | None) -> None:
        lab = b"" if label is None else label.encode("utf-8")
        head = _RECORD.pack(len(name), 0xFFFFFFFF if label is None else len(lab), len(data))
        body = head + name + lab + data
        self._log.write(body + hashlib.sha256(body).digest())
        self._log.flush()

    def _records(self) -> Iterator[tuple[int, bytes, str | None, int, int]]:
        """(end offset, name, label, data offset, data length) of each intact record."""
        with open(self.staging, "rb") as f:
            offset = 0
            while True:
                head = f.read(_RECORD.size)
                if len(head) < _RECORD.size:
                    return
                n_name, n_label, n_data = _RECORD.unpack(head)
                n_label_bytes = 0 if n_label == 0xFFFFFFFF else n_label
                rest = f.read(n_name + n_label_bytes + n_data + 32)
                body, digest = head + rest[:-32], rest[-32:]
                if len(rest) < n_name + n_label_bytes + n_data + 32 \
                        or hashlib.sha256(body).digest() != digest:
                    return
                label = None if n_label == 0xFFFFFFFF else \
                    rest[n_name:n_name + n_label_bytes].decode("utf-8")
                data_offset = offset + _RECORD.size + n_name + n_label_bytes
                offset += len(body) + 32
                yield offset, rest[:n_name], label, data_offset, n_data

    def _truncate_torn_tail(self) -> None:
        if not self.staging.exists():
            return
        end = 0
        for end, *_ in self._records():
            pass
        with open(self.staging, "r+b") as f:
            f.truncate(end)

    def finish(self) -> None:
        """Write the archive from the log (last record per name wins) and rename it in place."""
        self._log.close()
        latest = {name: (label, start, size) for _, name, label, start, size in self._records()}
        payloads = {n[len(_PAYLOAD_TAG):]: latest.pop(n) for n in list(latest)
                    if n.startswith(_PAYLOAD_TAG)}
        names = sorted(latest)
        labels = [latest[n][0] for n in names]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with h5py.File(tmp, "w") as h5, open(self.staging, "rb") as log:
            write_archive_header(h5)
            vlen = h5py.vlen_dtype(np.uint8)
            names_ds = h5.create_dataset("names", (len(names),), dtype=vlen)
            images = h5.create_dataset("images", (len(names),), dtype=vlen)
            for i, n in enumerate(names):
                _, start, size = latest[n]
                log.seek(start)
                names_ds[i] = np.frombuffer(n, dtype=np.uint8)
                images[i] = np.frombuffer(log.read(size), dtype=np.uint8)
            if names and all(lab is not None for lab in labels):
                h5.create_dataset("labels", data=labels, dtype=h5py.string_dtype("utf-8"))
            if payloads:
                stored = h5.create_dataset("payloads", (len(names),), dtype=vlen)
                for i, n in enumerate(names):
                    if n in payloads:
                        _, start, size = payloads[n]
                        log.seek(start)
                        stored[i] = np.frombuffer(log.read(size), dtype=np.uint8)
        self._install(tmp)

    def _install(self, tmp: Path) -> None:
        """Make the finished temporary archive durable, rename it into place, drop the log."""
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.staging.unlink()


def open_output(source: Source, out: Path) -> Sink:
    """A folder, or an archive in the input's layout: arrays for array archives, else encoded."""
    if isinstance(source, FileSource):
        return FileSink(out)
    if not is_archive(out):
        return FolderSink(out)
    from faceanon.arrays import ArraySink, ArraySource

    return ArraySink(out, source) if isinstance(source, ArraySource) else ArchiveSink(out)


def write_archive_header(h5: h5py.File) -> None:
    """The root attributes that mark a faceanon archive (shared with the aligned-crop writer)."""
    h5.attrs["faceanon_format"] = ARCHIVE_FORMAT
    h5.attrs["format_version"] = ARCHIVE_VERSION
    h5.attrs["created_by"] = f"faceanon {__version__}"


# --------------------------------------------------------------------------------- manifest

@dataclass
class Result:
    """What a job's step made of one entry."""

    status: str
    data: bytes | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The image's restore payload, made once its published name is known, since the payload
    # is bound to that name (``anonymize --reversible``); None: no payload.
    seal: Callable[[str], bytes] | None = None
    # Where to write instead of the job's own path and label: ``restore`` learns the
    # original's only by decrypting.
    target: tuple[str, str | None] | None = None


# -------------------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """A resumable conversion of a source into an output folder or archive.

    ``settings`` are what make outputs what they are (method, key fingerprint, model ids): a
    resume with other settings is refused instead of mixing two runs in one output.
    """

    command: str
    source: Source
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)
    names: Pseudonyms | None = None  # rewrites output paths and labels; None keeps them

    def __post_init__(self) -> None:
        # An array archive's layout and range decision shape the output too (and go on record).
        self.settings = {**self.settings, **getattr(self.source, "settings", {})}

    @property
    def manifest_path(self) -> Path:
        return private_dir(self.out) / MANIFEST

    @property
    def run_path(self) -> Path:
        return private_dir(self.out) / RUN

    def check_paths(self) -> None:
        src = self.source.path
        if self.out.exists() and is_archive(self.out):
            raise FaceanonError("output archive already exists; remove it or choose another",
                                self.out)
        if src.is_dir() and is_within(self.out, src):
            raise FaceanonError(f"output must not be the input folder or inside it ({src})",
                                self.out)
        if not src.is_dir() and self.out.resolve() == src.resolve():
            raise FaceanonError("output must not be the input file", self.out)
        check_output = getattr(self.source, "check_output", None)
        if check_output is not None:
            check_output(self.out)

    def output_name(self, entry: Entry) -> tuple[str, str | None]:
        """Where ``entry`` goes in the output, and its label there."""
        if isinstance(self.source, FileSource):  # a single file goes where --out says
            return self.out.name, None
        if self.names is None:
            return entry.relpath, entry.label
        label = None if entry.label is None else self.names.name(entry.label)
        return self.names.path(entry.relpath), label

    def _map_names(self) -> None:
        """Pseudonymize every input's path and label before any is written, so that a clash
        (two names, or two paths, on one pseudonym) stops the run before it starts, and keep
        the mapping in the private record."""
        if self.names is None:
            return
        seen: dict[str, str] = {}
        for entry in self.source.entries():
            if entry.skip_reason is None:
                out_rel, _ = self.output_name(entry)
                first = seen.setdefault(out_rel, entry.relpath)
                if first != entry.relpath:
                    raise FaceanonError(f"{first!r} and {entry.relpath!r} would both be written "
                                        f"as {out_rel!r}; rename one or use --keep-names",
                                        self.source.path)
        write_private(private_dir(self.out) / NAMES,
                      json.dumps(self.names.mapping, indent=1, sort_keys=True) + "\n")

    def _refuse_orphaned_record(self) -> None:
        """A private record whose output is gone (deleted or moved; the record lives beside
        it, not inside) would make a re-run skip every finished image and report success over
        an empty output: refuse, and say how to start afresh."""
        if not self.manifest_path.is_file():
            return
        if not self.written_path().exists() and any(rec.get("status") != FAILED
                                        for rec in manifest_lines(self.manifest_path)):
            raise FaceanonError(f"the output is missing but {private_dir(self.out)} records "
                                "finished images; remove that folder to start afresh", self.out)

    def written_path(self) -> Path:
        """What exists on disk once the job has written anything (an archive's staging log)."""
        return self.out.with_name(self.out.name + ".staging") if is_archive(self.out) else self.out

    def open_sink(self) -> Sink:
        """Where the step's output bytes go."""
        return open_output(self.source, self.out)

    def _previous_settings(self) -> dict[str, Any] | None:
        if not self.run_path.exists():
            return None
        try:
            return json.loads(self.run_path.read_text()).get("settings")
        except (OSError, json.JSONDecodeError):
            return None

    def run(self, step: Callable[[Entry], Result],
            progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Process every unfinished entry one by one; returns the manifest's status counts."""
        return self.run_batches(lambda batch: [step(batch[0])], 1, progress)

    def run_batches(self, step: Callable[[list[Entry]], list[Result]], batch_size: int,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Like ``run``, handing ``step`` up to ``batch_size`` readable entries at a time.

        An exception from a batch is narrowed down by re-running its entries one by one, so
        one odd file fails alone and the run goes on.
        """
        self.check_paths()
        make_private_dir(self.out)
        prev = self._previous_settings()
        if prev is not None and prev != self.settings:
            raise FaceanonError("output was started with other settings "
                                f"({_diff(prev, self.settings)}); use another --out", self.out)
        self._refuse_orphaned_record()
        self._map_names()
        started = time.time()
        self._write_run(started, None)
        sink = self.open_sink()
        manifest = Manifest(self.manifest_path)
        total, seen = len(self.source), 0
        pending: list[tuple[Entry, dict[str, Any]]] = []

        trimmed = time.monotonic()

        def flush() -> None:
            nonlocal seen, trimmed
            if not pending:
                return
            t0 = time.perf_counter()
            results = _isolated(step, [entry for entry, _ in pending])
            seconds = round((time.perf_counter() - t0) / len(pending), 4)
            for (entry, rec), result in zip(pending, results):
                manifest.add(_record(rec, result, sink, self.output_name(entry), seconds))
            seen += len(pending)
            pending.clear()
            if time.monotonic() - trimmed >= TRIM_EVERY_S:
                release_free_memory()
                trimmed = time.monotonic()
            if progress:
                progress(seen, total)

        try:
            for entry in self.source.entries():
                rec = self._read(entry) if not manifest.done(entry.relpath) else None
                if rec is None or "status" in rec:
                    if rec is not None:
                        manifest.add(rec)
                    seen += 1
                    if progress and not pending:
                        progress(seen, total)
                    continue
                data = rec.pop("_data")
                pending.append((replace(entry, stamp=rec.pop("_stamp")) if data is None else
                                Entry(entry.relpath, lambda data=data: data, entry.label), rec))
                if len(pending) >= batch_size:
                    flush()
            flush()
            sink.finish()
        finally:
            manifest.close()
        counts = manifest.counts()
        self._write_run(started, counts)
        return counts

    @staticmethod
    def _read(entry: Entry) -> dict[str, Any]:
        """The entry's manifest record so far: final already (skipped, unreadable) or with its
        bytes under ``_data`` for the step; None there for a clip on disk, which the step reads
        from its file (a clip can be larger than the memory there is)."""
        rec: dict[str, Any] = {"path": entry.relpath}
        if entry.skip_reason:
            return {**rec, "status": SKIPPED, "reason": entry.skip_reason}
        try:
            if entry.path is not None and is_video_name(entry.relpath):
                digest, stamp = _hash_regular(entry.path)
                return {**rec, "input_sha256": digest, "_data": None, "_stamp": stamp}
            data = entry.read_bytes()
        except FaceanonError as e:
            return {**rec, "status": FAILED, "reason": e.reason}
        return {**rec, "input_sha256": hashlib.sha256(data).hexdigest(), "_data": data}

    def _write_run(self, started: float, counts: dict[str, int] | None) -> None:
        info = {
            "command": self.command,
            "faceanon_version": __version__,
            "input": os.path.abspath(self.source.path),
            "output": os.path.abspath(self.out),
            "settings": self.settings,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished": None if counts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime()),
            "counts": counts,
            "versions": _versions(),
        }
        write_private(self.run_path, json.dumps(info, indent=2, sort_keys=True) + "\n")


def _isolated(step: Callable[[list[Entry]], list[Result]], batch: list[Entry]) -> list[Result]:
    """Run a batch; on an error, run its entries alone so only the culprit fails."""
    try:
        results = step(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"step returned {len(results)} results for {len(batch)} entries")
        return results
    except (FaceanonError, ValueError, RuntimeError, OSError) as e:
        if len(batch) == 1:
            reason = e.reason if isinstance(e, FaceanonError) else f"{type(e).__name__}: {e}"
            return [Result(FAILED, reason=reason[:200])]
        return [r for entry in batch for r in _isolated(step, [entry])]


def _record(rec: dict[str, Any], result: Result, sink: Sink, target: tuple[str, str | None],
            seconds: float) -> dict[str, Any]:
    """The manifest line of one entry, after writing its output at ``target`` (path, label)."""
    rec = dict(rec)
    if result.data is not None:
        path, label = result.target or target
        try:
            payload = None if result.seal is None else result.seal(path)
            rec["output"] = sink.write(path, result.data, label, payload)
        except OSError as e:
            result = Result(FAILED, reason=f"cannot write output: {e.strerror or e}")
        except FaceanonError as e:
            result = Result(FAILED, reason=e.reason)
    rec["status"] = result.status
    if result.reason:
        rec["reason"] = result.reason
    rec.update(result.extra)
    rec["seconds"] = seconds
    return rec


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys)


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Called after batches (at most every ``TRIM_EVERY_S``, since the pages handed back are
    faulted in again by the next batch), so that a run's memory follows what it needs now:
    glibc otherwise keeps the free pages of a heavy batch (many faces, large photos) until the
    end. Fixed mmap thresholds would bound it too, but slow torch by mapping every large tensor
    afresh. (What grew most with a run's length was oneDNN's cache; see ``faceanon/__init__``.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


def _versions() -> dict[str, str]:
    import platform

    from PIL import __version__ as pil

    return {"python": platform.python_version(), "numpy": np.__version__, "pillow": pil,
            "h5py": h5py.__version__}


# ----------------------------------------------------------------------------- pack/unpack

def copy_step(entry: Entry) -> Result:
    """Pass an image's bytes through unchanged after checking that it decodes."""
    data = entry.read_bytes()
    decode(data, entry.relpath)
    return Result(OK, data=data)


def pack(folder: str | Path, archive: str | Path,
         progress: Callable[[int, int], None] | None = None) -> tuple[Job, dict[str, int]]:
    """Folder → archive, byte-identical images; non-images and undecodable files stay out."""
    source = open_input(folder)
    if not isinstance(source, FolderSource):
        raise FaceanonError("pack reads a folder", folder)
    archive = Path(archive)
    if not is_archive(archive):
        raise FaceanonError("archive name must end in .h5 or .hdf5", archive)
    job = Job("pack", source, archive)
    return job, job.run(copy_step, progress)


def unpack(archive: str | Path, folder: str | Path,
           progress: Callable[[int, int], None] | None = None) -> tuple[Job, dict[str, int]]:
    """Archive → folder, byte-identical files at their stored relative paths."""
    source = open_input(archive)
    if not isinstance(source, ArchiveSource):
        raise FaceanonError("unpack reads a faceanon .h5 archive", archive)
    job = Job("unpack", source, Path(folder))
    return job, job.run(copy_step, progress)
