"""Aligned-face training sets: detect, align onto the generator's template, pack with identities.

The output is a faceanon image archive (see ``faceanon.datasets``) whose images are the aligned
crops, JPEG-encoded so that LFW DevTrain at 128 px stays under 60 MiB, with identity labels
taken from each image's folder. Two root attributes extend the schema and mark it as aligned:
``aligned_template`` (e.g. ``"faceanon"``) and ``aligned_size`` (crop side in pixels). Writing
goes through ``datasets.Job``, so a killed ``prepare`` resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from faceanon.align import TEMPLATES, align
from faceanon.datasets import (NO_FACE, OK, ArchiveSource, Entry, Job, Result, Source, is_archive,
                               open_input)
from faceanon.detect import Detector, Face, main_face
from faceanon.errors import FaceanonError
from faceanon.images import encode
from faceanon.lfw import read_people

__all__ = ["AlignedFaces", "central_face", "prepare", "load_aligned"]

DEFAULT_TEMPLATE = "faceanon"
JPEG_QUALITY = 92  # 128-px crops: ~5.4 kB each, LFW DevTrain (9,525 images) ≈ 49 MiB


@dataclass
class AlignedFaces:
    """A decoded aligned-face set: crops (N, S, S, 3) uint8, integer labels, their names."""

    images: np.ndarray
    labels: np.ndarray
    identities: list[str]
    names: list[str]
    template: str

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def central_face(faces: list[Face], height: int, width: int) -> Face | None:
    """The image's main face (``faceanon.detect.main_face``): the subject of an LFW photo."""
    i = main_face(np.array([f.box for f in faces]).reshape(-1, 4), (height, width))
    return None if i is None else faces[i]


class _PeopleSource:
    """Only the entries whose label (identity folder) is in ``people``."""

    def __init__(self, source: Source, people: set[str]) -> None:
        self.path = source.path
        self._source = source
        self._people = people
        self._count: int | None = None

    def entries(self) -> Iterator[Entry]:
        return (e for e in self._source.entries() if e.label in self._people)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.entries())
        return self._count


def _align_step(detector: Detector, size: int, template: str) -> Callable[[Entry], Result]:
    def step(entry: Entry) -> Result:
        image = entry.load()
        face = central_face(detector(image), image.shape[0], image.shape[1])
        if face is None:
            return Result(NO_FACE, reason="no face detected")
        crops, _ = align(image, face.landmarks5[None], template, size)
        name = entry.relpath if Path(entry.relpath).suffix else entry.relpath + ".jpg"
        return Result(OK, data=encode(crops[0], name, JPEG_QUALITY),
                      extra={"landmarks5": np.round(face.landmarks5, 2).tolist(),
                             "score": round(face.score, 4)})

    return step


def prepare(input_path: str | Path, out: str | Path, size: int = 128,
            people: str | Path | None = None, detector: Detector | None = None,
            progress: Callable[[int, int], None] | None = None,
            template: str = DEFAULT_TEMPLATE) -> tuple[Job, dict[str, int]]:
    """Detect the central face of every image, align it on ``template`` at ``size`` px and
    pack an archive.

    Returns the job (its manifest lists faces not found) and the status counts.
    """
    out = Path(out)
    if not is_archive(out):
        raise FaceanonError("output must be a .h5 archive", out)
    if size < 16 or size % 4:
        raise FaceanonError(f"size must be a multiple of 4, at least 16; got {size}")
    if template not in TEMPLATES:
        raise FaceanonError(f"unknown template {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    source: Source = open_input(input_path)
    if people is not None:
        source = _PeopleSource(source, {name for fold in read_people(people) for name, _ in fold})
    job = Job("prepare", source, out, settings={"size": size, "template": template,
                                                "people": None if people is None else str(people),
                                                "jpeg_quality": JPEG_QUALITY})
    counts = job.run(_align_step(detector or Detector(min_face_size=20.0), size, template),
                     progress)
    with h5py.File(out, "a") as h5:
        h5.attrs["aligned_template"] = template
        h5.attrs["aligned_size"] = size
    return job, counts


def load_aligned(path: str | Path) -> AlignedFaces:
    """Decode a whole aligned archive into memory (LFW DevTrain at 128 px: ~470 MB)."""
    source = open_input(path)
    if not isinstance(source, ArchiveSource):
        raise FaceanonError("training data must be an aligned .h5 archive from 'faceanon prepare'",
                            path)
    with h5py.File(path, "r") as h5:
        template = h5.attrs.get("aligned_template")
        size = h5.attrs.get("aligned_size")
    if template is None or size is None:
        raise FaceanonError("not an aligned-face archive (make one with 'faceanon prepare')", path)
    images, identities, names = [], [], []
    for entry in source.entries():
        crop = entry.load()
        if crop.shape != (int(size), int(size), 3):
            raise FaceanonError(f"crop is {crop.shape[1]}x{crop.shape[0]}, expected {size}px",
                                f"{path}:{entry.relpath}")
        images.append(crop)
        identities.append(entry.label or "")
        names.append(entry.relpath)
    if not images:
        raise FaceanonError("archive holds no faces", path)
    people = sorted(set(identities))
    index = {p: i for i, p in enumerate(people)}
    labels = np.array([index[p] for p in identities], dtype=np.int64)
    return AlignedFaces(np.stack(images), labels, people, names, str(template))
