"""Array archives: HDF5 files that hold the images as one (N, ...) array, as ML pipelines do.

Read: the image dataset is found by shape (or named with ``--dataset``, also inside groups):
(N, H, W, C) or (N, C, H, W) with C = 1 or 3, or (N, H, W) grayscale when no 4-D candidate
exists; uint8, or float in [0, 1] or [-1, 1] (see ``decide_range``). Each row enters the
pipeline as a lossless 8-bit RGB BMP, so every method and every command works on it unchanged.

Write: the same file back — every group, dataset and attribute copied (HDF5's own object copy,
which keeps chunking, filters and fill values), and the image dataset re-created from the
input's creation property list and filled row by row with the anonymized pixels, in the input's
shape, dtype, channel order and value range. Pixels the method did not change keep their exact
input values (floats are not quantized where nothing changed). Datasets that can identify
people (labels, names, ids, any per-image 1-D dataset) go through a ``LabelHook`` and are listed
in the run record.

Crash safety and memory: finished rows go to the append-only staging log that ``ArchiveSink``
keeps (it survives a kill; a rerun skips rows the manifest has), and the output is built from
it in chunk-aligned slabs at the end, into a temporary file renamed into place — so memory does
not grow with N and the archive appears only when complete.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import h5py
import numpy as np

from faceanon.datasets import ArchiveSink, Entry
from faceanon.errors import FaceanonError
from faceanon.images import decode, encode
from faceanon.pseudonyms import Pseudonyms, split_file_name

ROW_SUFFIX = ".bmp"       # rows travel through the pipeline as lossless, uncompressed BMP
SLAB_BYTES = 32 << 20     # rows read or written at a time: whole chunks, about this much
MIN_SIDE = 16             # smaller "images" are landmarks, embeddings or other per-row arrays
RANGE_TOLERANCE = 1e-3    # float pixels this far outside [0, 1] / [-1, 1] still count as in it
LABEL_NAMES = ("labels", "label", "identities", "identity", "ids", "targets", "target")
IDENTIFYING_WORDS = ("label", "name", "identit", "person", "people", "subject")
_ID_TOKEN = re.compile(r"(^|[^a-z])ids?([^a-z]|$)")


class LabelHook(Protocol):
    """What the output stores for a dataset that can identify people (labels, names, ids).

    Called slab by slab with the dataset's path and values; returns values of the same shape
    and dtype, so it must map values one by one (a keyed pseudonym per value does). ``name``
    goes into the run settings, so a resume with another hook is refused.
    """

    name: str

    def __call__(self, dataset: str, values: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class CopyLabels:
    """The default hook: values copied as they are (the run record lists the datasets)."""

    name: str = "copy"

    def __call__(self, dataset: str, values: np.ndarray) -> np.ndarray:
        return values


# Pseudonyms in fixed-width string fields may be cut to fit, down to this many characters
# (30**10 > 2**49: clashes stay negligible, and are refused when they happen).
MIN_PSEUDONYM = 10


def _width(dtype: np.dtype) -> int | None:
    """Characters a fixed-width string dtype holds (None: variable length)."""
    if dtype.kind == "S":
        return dtype.itemsize
    if dtype.kind == "U":
        return dtype.itemsize // 4
    return None


def name_reasons(dataset: str) -> list[str]:
    """Why a dataset's own name says it identifies people (labels, names, ids, ...), if it does."""
    base = dataset.rsplit("/", 1)[-1].lower()
    why = [f"name contains {w!r}" for w in IDENTIFYING_WORDS if w in base]
    if _ID_TOKEN.search(base):
        why.append("name contains 'id'")
    return why


class PseudonymLabels:
    """The hook ``anonymize`` uses unless ``--keep-names``: identifying values become keyed
    pseudonyms, one value at a time, so the identity grouping survives as with folder names.

    Strings are pseudonymized as names or paths (``Pseudonyms.path``: ``Name_0001.jpg`` →
    ``<p>_0001.jpg``); integers only in datasets whose name says they identify someone (ids),
    as a keyed non-negative 63-bit value (or the dtype's width), collisions refused; anything
    else (floats, booleans, split indices) says nothing about who is pictured and is copied.
    """

    name = "pseudonymize"

    def __init__(self, pseudonyms: Pseudonyms) -> None:
        self.pseudonyms = pseudonyms
        self._ids: dict[tuple[str, int], int] = {}
        self._owner: dict[tuple[str, int], int] = {}
        self._short: dict[tuple[str, str], str] = {}

    def __call__(self, dataset: str, values: np.ndarray) -> np.ndarray:
        kind = values.dtype.kind
        if kind in "OSU":
            width = _width(values.dtype)
            out = np.empty_like(values)
            for i, v in np.ndenumerate(values):
                text = self._fit(dataset, _label_text(v), width)
                out[i] = text.encode() if isinstance(v, bytes) or kind == "S" else text
            return out
        if kind in "iu" and name_reasons(dataset):
            bits = min(63, values.dtype.itemsize * 8 - (kind == "i"))
            return np.vectorize(lambda v: self._id(dataset, int(v), bits),
                                otypes=[values.dtype])(values) if values.size else values
        return values

    def check(self, h5: h5py.File, found: list[dict[str, Any]]) -> None:
        """Refuse, before any row is processed, fixed-width string datasets too narrow to
        hold even a shortened pseudonym (the output keeps the input's dtype)."""
        for item in found:
            width = _width(h5[item["dataset"]].dtype)
            if width is not None and width < MIN_PSEUDONYM:
                raise FaceanonError(f"{item['dataset']}: {width}-character strings are too "
                                    f"short for pseudonyms (at least {MIN_PSEUDONYM}); pass "
                                    "--keep-names to copy them", h5.filename)

    def _fit(self, dataset: str, value: str, width: int | None) -> str:
        """The pseudonymized value, its pseudonym shortened to fit a fixed-width field (kept
        apart from every other value's: a clash is refused, never two people merged)."""
        text = self.pseudonyms.path(value)
        if width is None or len(text) <= width:
            return text
        name, rest = split_file_name(value)
        room = width - len(rest)
        if room < MIN_PSEUDONYM:
            raise FaceanonError(f"{dataset}: no room for a pseudonym of {value!r} in "
                                f"{width} characters; pass --keep-names to copy them")
        text = self.pseudonyms.name(name)[:room] + rest
        first = self._short.setdefault((dataset, text), value)
        if first != value:
            raise FaceanonError(f"{dataset}: {first!r} and {value!r} share a shortened "
                                "pseudonym; use another key or --keep-names")
        return text

    def _id(self, dataset: str, value: int, bits: int) -> int:
        known = self._ids.get((dataset, value))
        if known is None:
            digest = int(self.pseudonyms.name(f"{dataset}\0{value}"), 36)
            known = digest % (1 << bits)
            first = self._owner.setdefault((dataset, known), value)
            if first != value:
                raise FaceanonError(f"{dataset}: ids {first} and {value} share a pseudonym; "
                                    "use another key or --keep-names")
            self._ids[(dataset, value)] = known
        return known


# ----------------------------------------------------------------------------- the layout

@dataclass(frozen=True)
class Layout:
    """Where the images are and how their rows map to and from 8-bit RGB."""

    dataset: str                  # path inside the file, e.g. "train/images"
    shape: tuple[int, ...]
    dtype: np.dtype
    order: str                    # "NHWC", "NCHW" or "NHW"
    value_range: tuple[float, float]
    range_rule: str               # why this range (dtype, attribute or data)

    @property
    def channels(self) -> int:
        return {"NHWC": self.shape[-1], "NCHW": self.shape[1], "NHW": 1}[self.order]

    def relpath(self, row: int) -> str:
        width = max(6, len(str(self.shape[0] - 1)))
        return f"{self.dataset}/{row:0{width}d}{ROW_SUFFIX}"

    def to_hwc(self, row: np.ndarray) -> np.ndarray:
        if self.order == "NCHW":
            return np.moveaxis(row, 0, -1)
        return row[..., None] if self.order == "NHW" else row

    def from_hwc(self, hwc: np.ndarray) -> np.ndarray:
        if self.order == "NCHW":
            return np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
        return hwc[..., 0] if self.order == "NHW" else hwc

    def to_rgb8(self, row: np.ndarray) -> np.ndarray:
        """A stored row → (H, W, 3) uint8 RGB (grayscale repeated over three channels)."""
        q = self._quantize(self.to_hwc(row))
        return np.ascontiguousarray(np.repeat(q, 3, axis=-1) if q.shape[-1] == 1 else q)

    def from_rgb8(self, rgb: np.ndarray, original: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 output → a stored row; pixels equal to the input's 8-bit rendering
        keep the input's exact value, so only what the method changed is re-quantized."""
        hwc = self.to_hwc(original)
        same = (rgb == self.to_rgb8(original)).all(axis=-1, keepdims=True)
        new8 = rgb if hwc.shape[-1] == 3 else _luma(rgb)
        lo, hi = self.value_range
        new = new8.astype(np.float64) * ((hi - lo) / 255.0) + lo
        return self.from_hwc(np.where(same, hwc, new.astype(self.dtype)))

    def _quantize(self, hwc: np.ndarray) -> np.ndarray:
        if self.dtype == np.uint8:
            return hwc
        lo, hi = self.value_range
        scaled = (hwc.astype(np.float64) - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    def as_settings(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples: settings are compared after a JSON round trip)."""
        return {"dataset": self.dataset, "shape": list(self.shape), "dtype": str(self.dtype),
                "order": self.order, "channels": self.channels,
                "value_range": list(self.value_range), "range_rule": self.range_rule}


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's "L" conversion, rounded; gray pixels stay exactly gray."""
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).astype(np.uint8)[..., None]


def image_order(shape: tuple[int, ...]) -> str | None:
    """"NHWC", "NCHW" or "NHW" when ``shape`` looks like a stack of images, else None."""
    if len(shape) == 4 and shape[3] in (1, 3) and min(shape[1:3]) >= MIN_SIDE:
        return "NHWC"
    if len(shape) == 4 and shape[1] in (1, 3) and min(shape[2:4]) >= MIN_SIDE:
        return "NCHW"
    if len(shape) == 3 and min(shape[1:3]) >= MIN_SIDE:
        return "NHW"
    return None


def slab_rows(ds: h5py.Dataset) -> int:
    """Rows per read or write: a whole number of chunks along N, about ``SLAB_BYTES``."""
    per_chunk = ds.chunks[0] if ds.chunks else 1
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    return per_chunk * max(1, SLAB_BYTES // (row_bytes * per_chunk))


def slabs(ds: h5py.Dataset) -> Iterator[slice]:
    step = slab_rows(ds)
    for start in range(0, ds.shape[0], step):
        yield slice(start, min(start + step, ds.shape[0]))


def decide_range(ds: h5py.Dataset, path: Path) -> tuple[tuple[float, float], str]:
    """The pixels' value range and the rule that decided it.

    uint8 is [0, 255]. A float dataset's ``value_range`` attribute ((0, 1) or (-1, 1)) wins;
    otherwise the data decide, scanned slab by slab: any negative value → [-1, 1], else
    [0, 1]. Values outside both (beyond a small tolerance), NaN or infinity are refused.
    """
    if ds.dtype == np.uint8:
        return (0.0, 255.0), "dtype uint8"
    attr = ds.attrs.get("value_range")
    if attr is not None:
        try:
            lo, hi = (float(v) for v in np.asarray(attr).ravel())
        except (TypeError, ValueError):
            lo, hi = np.nan, np.nan
        if (lo, hi) not in ((0.0, 1.0), (-1.0, 1.0)):
            raise FaceanonError(f"{ds.name[1:]}: value_range attribute {attr!r} is neither "
                                "(0, 1) nor (-1, 1)", path)
        return (lo, hi), "value_range attribute"
    lo, hi = np.inf, -np.inf
    for part in slabs(ds):
        values = ds[part]
        if not np.isfinite(values).all():
            raise FaceanonError(f"{ds.name[1:]}: NaN or infinite pixel values", path)
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise FaceanonError(f"{ds.name[1:]}: float pixels span [{lo:.4g}, {hi:.4g}]; "
                            "expected [0, 1] or [-1, 1]", path)
    if lo < 0:
        return (-1.0, 1.0), f"float data: minimum {lo:.4g} < 0"
    return (0.0, 1.0), f"float data: minimum {lo:.4g} >= 0"


# ------------------------------------------------------------------------------- the source

def _datasets(h5: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset below the root, by path (visititems stops at a non-None return)."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    h5.visititems(visit)
    return found


def _dtype(ds: h5py.Dataset) -> str:
    """The dtype as a person reads it ("string", not numpy's "object", for text)."""
    return "string" if h5py.check_string_dtype(ds.dtype) else str(ds.dtype)


def _describe(name: str, ds: h5py.Dataset) -> str:
    return f"{name} {tuple(ds.shape)} {_dtype(ds)}"


def find_images(h5: h5py.File, path: Path, dataset: str | None) -> tuple[h5py.Dataset, str]:
    """The image dataset and its axis order: the one named, else the only image-shaped one
    (4-D ones first; a 3-D one only when there is no 4-D one)."""
    every = _datasets(h5)
    if dataset is not None:
        ds = h5.get(dataset)
        if not isinstance(ds, h5py.Dataset):
            raise FaceanonError(f"--dataset {dataset}: no such dataset (datasets: "
                                f"{', '.join(every) or 'none'})", path)
        if image_order(ds.shape) is None:
            raise FaceanonError(f"--dataset {_describe(dataset, ds)}: not an image array "
                                "(N, H, W, C), (N, C, H, W) with C = 1 or 3, or (N, H, W)", path)
        return ds, image_order(ds.shape)  # type: ignore[return-value]
    shaped = {n: d for n, d in every.items() if image_order(d.shape) in ("NHWC", "NCHW")} or \
        {n: d for n, d in every.items() if image_order(d.shape) == "NHW"}
    if not shaped:
        listing = "; ".join(_describe(n, d) for n, d in every.items()) or "none"
        raise FaceanonError("no image array: expected a 4-D (N, H, W, C) or (N, C, H, W) "
                            f"dataset with C = 1 or 3, or a 3-D (N, H, W) one (datasets: "
                            f"{listing})", path)
    if len(shaped) > 1:
        raise FaceanonError("several image arrays, name one with --dataset: "
                            + "; ".join(_describe(n, d) for n, d in shaped.items()), path)
    ds = next(iter(shaped.values()))
    return ds, image_order(ds.shape)  # type: ignore[return-value]


def identifying(h5: h5py.File, images: h5py.Dataset) -> list[dict[str, Any]]:
    """Datasets besides the images that can identify people, and why each is suspected."""
    n = images.shape[0]
    found = []
    for name, ds in _datasets(h5).items():
        if ds.name == images.name:
            continue
        why = name_reasons(name)
        if ds.ndim == 1 and ds.shape[0] == n:
            why.append("one value per image")
        if why:
            found.append({"dataset": name, "shape": list(ds.shape), "dtype": _dtype(ds),
                          "why": why})
    return found


def find_labels(h5: h5py.File, images: h5py.Dataset, path: Path) -> h5py.Dataset | None:
    """The per-image identity labels beside the images (or at the root), checked to have N rows."""
    parent = images.parent
    for group in dict.fromkeys((parent, h5)):
        for name in LABEL_NAMES:
            ds = group.get(name)
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.ndim == 0 or ds.shape[0] != images.shape[0]:
                raise FaceanonError(f"{ds.name[1:]} has {ds.shape[0] if ds.ndim else 0} rows but "
                                    f"{images.name[1:]} has {images.shape[0]} images", path)
            return ds
    return None


def _label_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value.item() if isinstance(value, np.generic) else value)


class ArraySource:
    """The rows of an array archive as entries named ``DATASET/000123.bmp``.

    Rows are read a slab at a time and the last slab kept, so sequential reading costs one
    decompression per chunk and memory stays at one slab, whatever N is.
    """

    def __init__(self, path: Path, dataset: str | None = None,
                 label_hook: LabelHook | None = None) -> None:
        self.path = path
        self.label_hook: LabelHook = label_hook or CopyLabels()
        try:
            self._h5 = h5py.File(path, "r")
        except OSError:
            raise FaceanonError("not a readable HDF5 file (truncated, corrupt or not HDF5)",
                                path) from None
        images, order = find_images(self._h5, path, dataset)
        name = images.name[1:]
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise FaceanonError(f"{name} has dtype {images.dtype}; image arrays must be uint8 or "
                                "float in [0, 1] or [-1, 1]", path)
        value_range, rule = decide_range(images, path)
        self.layout = Layout(name, tuple(images.shape), images.dtype, order, value_range, rule)
        self._images = images
        self._labels = find_labels(self._h5, images, path)
        self.identifying = identifying(self._h5, images)
        self._slab: tuple[slice, np.ndarray] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The layout, the range decision and the identifying datasets, for the run record."""
        return {"array_archive": {
            **self.layout.as_settings(),
            "labels": None if self._labels is None else self._labels.name[1:],
            "identifying_datasets": self.identifying,
            "label_hook": self.label_hook.name}}

    def pseudonymize_labels(self, pseudonyms: Pseudonyms) -> None:
        """Have the output pseudonymize the identifying datasets; a dataset that cannot hold
        pseudonyms is refused now, before any row is processed."""
        hook = PseudonymLabels(pseudonyms)
        hook.check(self._h5, self.identifying)
        self.label_hook = hook

    def __len__(self) -> int:
        return self.layout.shape[0]

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` as stored, from the cached slab (read when ``i`` is outside it)."""
        if self._slab is None or not self._slab[0].start <= i < self._slab[0].stop:
            step = slab_rows(self._images)
            part = slice(i - i % step, min(i - i % step + step, len(self)))
            self._slab = (part, self._images[part])
        return self._slab[1][i - self._slab[0].start]

    def row_bytes(self, i: int) -> bytes:
        return encode(self.layout.to_rgb8(self.row(i)), self.layout.relpath(i))

    def entries(self) -> Iterator[Entry]:
        for part in slabs(self._images):
            labels = self._labels[part] if self._labels is not None and self._labels.ndim == 1 \
                else [None] * (part.stop - part.start)
            for i, label in zip(range(part.start, part.stop), labels):
                yield Entry(self.layout.relpath(i), lambda i=i: self.row_bytes(i),
                            None if label is None else _label_text(label))


# --------------------------------------------------------------------------------- the sink

class ArraySink(ArchiveSink):
    """Stages rows like ``ArchiveSink`` and writes the input's layout back at the end."""

    def __init__(self, path: Path, source: ArraySource) -> None:
        super().__init__(path)
        self.source = source

    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str:
        """Stage a row; a path that is not one of the rows' (e.g. rewritten by a job) is an
        error for that row, never a row silently left at the fill value."""
        if payload is not None:
            raise FaceanonError("array archives do not take restore payloads", relpath)
        layout = self.source.layout
        head, _, tail = relpath.rpartition("/")
        index = tail[:-len(ROW_SUFFIX)] if tail.endswith(ROW_SUFFIX) else ""
        if head != layout.dataset or not index.isdigit() or \
                layout.relpath(int(index)) != relpath or int(index) >= len(self.source):
            raise FaceanonError(f"not a row of {layout.dataset}", relpath)
        return super().write(relpath, data, label)

    def finish(self) -> None:
        self._log.close()
        latest = {name: (start, size) for _, name, _, start, size in self._records()}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        layout = self.source.layout
        with h5py.File(self.source.path, "r") as src, \
                h5py.File(tmp, "w", track_order=_tracks_order(src)) as dst, \
                open(self.staging, "rb") as log:
            copy_tree(src, dst, layout.dataset)
            images, out = src[layout.dataset], dst[layout.dataset]
            fill = np.full(images.shape[1:], out.fillvalue, images.dtype)
            for part in slabs(images):
                rows = images[part]
                for k, original in enumerate(rows):
                    where = latest.get(os.fsencode(layout.relpath(part.start + k)))
                    if where is None:  # failed or skipped: never the original pixels
                        rows[k] = fill
                        continue
                    log.seek(where[0])
                    rows[k] = layout.from_rgb8(decode(log.read(where[1])), original)
                out[part] = rows
            apply_hook(src, dst, self.source.identifying, self.source.label_hook)
        self._install(tmp)


def _tracks_order(group: h5py.Group) -> bool:
    return bool(group.id.get_create_plist().get_link_creation_order())


def copy_attrs(src: h5py.HLObject, dst: h5py.HLObject) -> None:
    """Attributes with their stored dtypes (h5py would otherwise guess them from the values)."""
    for name in src.attrs:
        dst.attrs.create(name, src.attrs[name], dtype=src.attrs.get_id(name).dtype)


def copy_tree(src: h5py.Group, dst: h5py.Group, images: str) -> None:
    """Copy ``src`` into ``dst`` except the data of dataset ``images`` (a path below ``src``),
    which is created empty with the input's creation properties (chunks, filters, fill)."""
    copy_attrs(src, dst)
    head, _, rest = images.partition("/")
    for name in src:
        link = src.get(name, getlink=True)
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            dst[name] = link
        elif name != head:
            src.copy(src[name], dst, name)
        elif rest:
            sub = h5py.h5g.create(dst.id, name.encode(), gcpl=src[name].id.get_create_plist())
            copy_tree(src[name], h5py.Group(sub), rest)
        else:
            ds = src[name]
            h5py.h5d.create(dst.id, name.encode(), ds.id.get_type(), ds.id.get_space(),
                            dcpl=ds.id.get_create_plist())
            copy_attrs(ds, dst[name])


def apply_hook(src: h5py.File, dst: h5py.File, found: list[dict[str, Any]],
               hook: LabelHook) -> None:
    """Rewrite each identifying dataset through ``hook``, slab by slab (the copy is kept
    as is when the hook is the default copy)."""
    if isinstance(hook, CopyLabels):
        return
    for item in found:
        name = item["dataset"]
        if src[name].ndim == 0:
            dst[name][()] = hook(name, src[name][()])
            continue
        for part in slabs(src[name]):
            dst[name][part] = hook(name, src[name][part])
