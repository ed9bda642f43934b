"""``faceanon detect`` as a dataset job: faces, scores and landmarks of every image as JSON lines.

Detection runs through the same :class:`~faceanon.datasets.Job` as every other command, so it
gets what they get: a manifest and run record in ``OUT.private/``, resume after a kill (a
finished image is not detected again), one bad file failing alone, and a refused resume under
other settings. The JSON-lines file is written from the manifest in one atomic step at the
end, so a reader never sees half of it; previews, when asked for, are the job's image output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from faceanon.datasets import NO_FACE, OK, Entry, FolderSink, Job, Result, Sink, Source
from faceanon.detect import Detector, Face, draw_faces
from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_text
from faceanon.images import encode
from faceanon.landmarks import Landmarks68
from faceanon.records import FAILED, SKIPPED, manifest_lines


class _NoImages:
    """The sink of a detect job without previews: the step returns no bytes to write."""

    def write(self, relpath: str, data: bytes, label: str | None,
              payload: bytes | None = None) -> str:
        raise FaceanonError("detect writes no images without --preview", relpath)

    def finish(self) -> None:
        pass


class DetectJob(Job):
    """A job whose output is one JSON-lines file (``out``) and, optionally, a preview folder."""

    def __init__(self, source: Source, out: Path, settings: dict[str, Any],
                 preview: Path | None) -> None:
        super().__init__("detect", source, out, settings)
        self.preview = preview

    def written_path(self) -> Path:
        # The JSON lines appear only at the end; until then the manifest is the output.
        return self.manifest_path

    def open_sink(self) -> Sink:
        return _NoImages() if self.preview is None else FolderSink(self.preview)

    def check_paths(self) -> None:
        super().check_paths()
        if self.out.is_dir():
            raise FaceanonError("--out is a folder; give a file name such as faces.jsonl",
                                self.out)

    def write_lines(self) -> int:
        """The manifest, in input order, as ``detect``'s JSON lines: faces, or why none.
        Returns the number of faces written (one pass over the manifest for both)."""
        lines, faces = [], 0
        for rec in manifest_lines(self.manifest_path):
            line: dict[str, Any] = {"path": rec["path"]}
            if rec["status"] == FAILED:
                line["error"] = rec.get("reason")
            elif rec["status"] == SKIPPED:
                line["skipped"] = rec.get("reason")
            else:
                line["faces"] = rec.get("faces", [])
                faces += len(line["faces"])
            lines.append(json.dumps(line) + "\n")
        atomic_write_text(self.out, "".join(lines))
        return faces


def face_record(face: Face, landmarks68: np.ndarray | None) -> dict[str, Any]:
    """One face as ``detect`` writes it: box, score, 5 landmarks and, if asked, 68."""
    rec: dict[str, Any] = {"box": [round(float(v), 2) for v in face.box],
                           "score": round(face.score, 5),
                           "landmarks5": np.round(face.landmarks5, 2).tolist()}
    if landmarks68 is not None:
        rec["landmarks68"] = np.round(landmarks68, 2).tolist()
    return rec


def detect_step(detector: Detector, landmarks68: Landmarks68 | None,
                preview: bool) -> Callable[[list[Entry]], list[Result]]:
    """The job's step: detect a batch of images at once; draw a preview of each if asked."""

    def step(batch: list[Entry]) -> list[Result]:
        images = [entry.load() for entry in batch]
        results = []
        for entry, image, faces in zip(batch, images, detector.detect(images)):
            marks = (landmarks68(image, np.array([f.landmarks5 for f in faces]).reshape(-1, 5, 2))
                     if landmarks68 is not None else None)
            records = [face_record(f, None if marks is None else marks[k])
                       for k, f in enumerate(faces)]
            data = (encode(draw_faces(image, faces, marks), entry.relpath) if preview else None)
            results.append(Result(OK if faces else NO_FACE, data=data,
                                  extra={"faces": records}))
        return results

    return step


def run_detect(source: Source, out: Path, detector: Detector, landmarks68: Landmarks68 | None,
               preview: Path | None, settings: dict[str, Any], batch_size: int = 16,
               progress: Callable[[int, int], None] | None = None
               ) -> tuple[DetectJob, dict[str, int]]:
    """Detect faces in every image of ``source`` into the JSON-lines file ``out``; returns the
    job and its counts (images, faces, no_face, failed, skipped)."""
    job = DetectJob(source, out, settings, preview)
    counts = job.run_batches(detect_step(detector, landmarks68, preview is not None),
                             batch_size, progress)
    faces = job.write_lines()
    return job, {"images": counts[OK] + counts[NO_FACE], "faces": faces,
                 "no_face": counts[NO_FACE], "failed": counts[FAILED],
                 "skipped": counts[SKIPPED]}
