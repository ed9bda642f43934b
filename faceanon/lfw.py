"""The LFW face verification protocol: pairs.txt folds, thresholds chosen on the other folds.

Faces are found by a pluggable landmark source (MTCNN by default in the product; dlib's HOG
detector + 68-point predictor to reproduce dlib's published set-up), aligned to each
recognizer's own template, embedded once per image and compared by cosine similarity. The
deep-funneled LFW images are centred on the labelled person, so the face nearest the centre is
taken, and an image where the source finds none gets the median landmarks of the others.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceanon.align import align
from faceanon.detect import main_face
from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes
from faceanon.identity import Recognizer, cosine_similarity
from faceanon.images import load_image
from faceanon.metrics import VerificationReport, verification_report

__all__ = ["Pair", "read_pairs", "read_people", "image_relpath", "five_from_68", "LandmarkSource",
           "DlibLandmarks", "MtcnnLandmarks", "landmark_source", "LfwResult", "embed_images",
           "evaluate", "images_dir"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pair:
    """Two image paths relative to the images folder, whether they show one person, and the
    pair's fold."""

    first: str
    second: str
    same: bool
    fold: int


def image_relpath(name: str, number: int) -> str:
    """``Name/Name_000N.jpg``, LFW's file naming."""
    return f"{name}/{name}_{number:04d}.jpg"


def _lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FaceanonError(f"cannot read ({e.strerror})", path) from None
    return [line.split() for line in text.splitlines() if line.strip()]


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse pairs.txt (header ``folds n``) or pairsDev*.txt (header ``n``, one fold): each
    fold has n same-person lines ``name i j`` then n different-person lines ``a i b j``."""
    path = Path(path)
    rows = _lines(path)
    try:
        header = [int(x) for x in rows[0]]
        folds, n = (header[0], header[1]) if len(header) == 2 else (1, header[0])
        pairs = []
        for k, row in enumerate(rows[1:]):
            fold, same = k // (2 * n), k % (2 * n) < n
            if same and len(row) == 3:
                pairs.append(Pair(image_relpath(row[0], int(row[1])),
                                  image_relpath(row[0], int(row[2])), True, fold))
            elif not same and len(row) == 4:
                pairs.append(Pair(image_relpath(row[0], int(row[1])),
                                  image_relpath(row[2], int(row[3])), False, fold))
            else:
                raise ValueError(f"line {k + 2}")
    except (ValueError, IndexError) as e:
        raise FaceanonError(f"not an LFW pairs file ({e or 'bad header'})", path) from None
    if len(pairs) != folds * 2 * n:
        raise FaceanonError(f"expected {folds * 2 * n} pairs, found {len(pairs)}", path)
    return pairs


def read_people(path: str | Path) -> list[list[tuple[str, int]]]:
    """Parse people.txt (``folds``, then per fold a count and ``name images`` lines) or
    peopleDev*.txt (a count and the lines: one fold) into folds of (name, image count)."""
    path = Path(path)
    rows = _lines(path)
    try:
        folded = len(rows) > 1 and len(rows[1]) == 1
        folds, i, out = (int(rows[0][0]) if folded else 1), (1 if folded else 0), []
        for _ in range(folds):
            count = int(rows[i][0])
            out.append([(name, int(n)) for name, n in rows[i + 1:i + 1 + count]])
            if len(out[-1]) != count:
                raise ValueError("short fold")
            i += 1 + count
    except (ValueError, IndexError) as e:
        raise FaceanonError(f"not an LFW people file ({e or 'bad line'})", path) from None
    return out


def five_from_68(lm68: np.ndarray) -> np.ndarray:
    """MTCNN's 5 points from iBUG 68 landmarks: eye centres (mean of each eye's 6 contour
    points), nose tip, mouth corners; left/right as seen in the image."""
    p = np.asarray(lm68, dtype=np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


class LandmarkSource(Protocol):
    """Finds the main face of each image: (5, 2) landmarks, or None when there is no face."""

    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]: ...


class DlibLandmarks:
    """dlib's HOG detector (upsampled once) + 68-point predictor, reduced to 5 points."""

    name = "dlib"

    def __init__(self) -> None:
        import dlib  # dlib-bin

        from faceanon.landmarks import Landmarks68

        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._lm68 = Landmarks68()

    def shape(self, image: np.ndarray) -> Any:
        """dlib's ``full_object_detection`` (68 points) of the main face, or None."""
        rects = list(self._hog(image, 1))
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects])
        i = main_face(boxes.reshape(-1, 4), image.shape)
        return None if i is None else self.shape_in(image, boxes[i])

    def shape_in(self, image: np.ndarray, box: np.ndarray) -> Any:
        """dlib's ``full_object_detection`` of the face in ``box`` (x1, y1, x2, y2)."""
        pts = self._lm68.predict(image, box)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        return self._dlib.full_object_detection(
            self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1),
            [self._dlib.point(int(x), int(y)) for x, y in pts])

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for image in images:
            s = self.shape(image)
            out.append(None if s is None else five_from_68([(q.x, q.y) for q in s.parts()]))
        return out


class MtcnnLandmarks:
    """faceanon's MTCNN detector (the product's landmark source)."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu") -> None:
        from faceanon.detect import Detector

        self._detector = Detector(device=device)

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for image, faces in zip(images, self._detector.detect(list(images))):
            i = main_face(np.array([f.box for f in faces]).reshape(-1, 4), image.shape)
            out.append(None if i is None else np.asarray(faces[i].landmarks5, dtype=np.float64))
        return out


def landmark_source(name: str, device: str = "cpu") -> LandmarkSource:
    """``"mtcnn"`` or ``"dlib"``."""
    if name == "mtcnn":
        return MtcnnLandmarks(device)
    if name == "dlib":
        return DlibLandmarks()
    raise FaceanonError(f"unknown landmark source {name!r}; use mtcnn or dlib")


def images_dir(root: Path) -> Path:
    """``root/images`` (the layout in ../shared) or ``root`` itself (LFW's own archive)."""
    return root / "images" if (root / "images").is_dir() else root


class _Cache:
    """Per-image arrays kept in one .npz so that reruns skip finished images."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.values = path, {}
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    self.values = dict(zip(z["keys"].tolist(), z["values"]))
            except (OSError, ValueError, KeyError):
                self.values = {}

    def save(self) -> None:
        if self.path is None or not self.values:
            return
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(list(self.values)), values=np.stack(list(self.values.values())))
        atomic_write_bytes(self.path, buf.getvalue())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:]


def embed_images(recognizer: Recognizer, folder: Path, relpaths: Sequence[str],
                 landmarks: LandmarkSource, cache_dir: Path | None = None,
                 progress: Progress | None = None, chunk: int = 32) -> tuple[np.ndarray, int]:
    """Embeddings (N, D) of the main face of each image, and how many had no face found.

    With ``cache_dir``, landmarks and embeddings are kept there per image (keyed by landmark
    source and recognizer name) so an interrupted or repeated run redoes nothing.
    """
    lm_cache = _Cache(None if cache_dir is None else cache_dir / f"lfw-landmarks-{landmarks.name}.npz")
    emb_cache = _Cache(None if cache_dir is None else
                       cache_dir / f"lfw-embeddings-{_slug(recognizer.name)}-{landmarks.name}.npz")
    total = len(relpaths)
    todo = [r for r in relpaths if r not in lm_cache.values]
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        found = landmarks([load_image(folder / r) for r in part])
        for r, pts in zip(part, found):
            lm_cache.values[r] = np.full((5, 2), np.nan) if pts is None else pts
        if progress:  # two passes over the images: landmarks, then embeddings
            progress(total - len(todo) + min(start + chunk, len(todo)), 2 * total)
        if start // chunk % 20 == 19:
            lm_cache.save()
    lm_cache.save()
    points = np.stack([lm_cache.values[r] for r in relpaths]) if total else np.zeros((0, 5, 2))
    missed = np.isnan(points).any(axis=(1, 2))
    if missed.all() and total:
        raise FaceanonError("no face found in any image", folder)
    fallback = np.median(points[~missed], axis=0) if total else None
    todo = [i for i, r in enumerate(relpaths) if r not in emb_cache.values]
    step = recognizer.batch_size
    for start in range(0, len(todo), step):
        idx = todo[start:start + step]
        crops = [_crop(recognizer, folder / relpaths[i],
                       fallback if missed[i] else points[i]) for i in idx]
        for i, e in zip(idx, recognizer.embed(np.stack(crops))):
            emb_cache.values[relpaths[i]] = e
        if progress:
            progress(2 * total - len(todo) + min(start + step, len(todo)), 2 * total)
        if start // step % 20 == 19:
            emb_cache.save()
    emb_cache.save()
    emb = np.stack([emb_cache.values[r] for r in relpaths]) if total else np.zeros((0, 0))
    return emb.astype(np.float32), int(missed.sum())


def _crop(recognizer: Recognizer, path: Path, points: np.ndarray) -> np.ndarray:
    """The face with these 5 landmarks, aligned to the recognizer's template."""
    crops, _ = align(load_image(path), points[None], recognizer.template, recognizer.width,
                     recognizer.height)
    return crops[0]


@dataclass(frozen=True)
class LfwResult:
    report: VerificationReport
    images: int
    missed: int  # images where no face was found (the median landmarks were used)
    seconds: float


def evaluate(recognizer: Recognizer, root: str | Path, landmarks: LandmarkSource,
             folds: int = 10, pairs_file: str | Path | None = None, cache_dir: Path | None = None,
             progress: Progress | None = None) -> LfwResult:
    """Verification accuracy (threshold from the other folds), AUC and EER on the first
    ``folds`` folds of ``pairs_file`` (default ``root/pairs.txt``)."""
    t0 = time.perf_counter()
    root = Path(root)
    pairs_path = Path(pairs_file) if pairs_file is not None else root / "pairs.txt"
    pairs = read_pairs(pairs_path)
    available = max(p.fold for p in pairs) + 1
    if not 2 <= folds <= available:
        raise FaceanonError(f"--folds must be 2..{available} for this pairs file, got {folds}",
                            pairs_path)
    pairs = [p for p in pairs if p.fold < folds]
    relpaths = sorted({r for p in pairs for r in (p.first, p.second)})
    emb, missed = embed_images(recognizer, images_dir(root), relpaths, landmarks, cache_dir, progress)
    index = {r: i for i, r in enumerate(relpaths)}
    a = emb[[index[p.first] for p in pairs]]
    b = emb[[index[p.second] for p in pairs]]
    report = verification_report(cosine_similarity(a, b), [p.same for p in pairs],
                                 np.array([p.fold for p in pairs]))
    return LfwResult(report, len(relpaths), missed, time.perf_counter() - t0)
