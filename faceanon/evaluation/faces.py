"""The per-face part of ``faceanon eval``: find every face of an original, its counterpart in
each anonymized version (by box overlap), and what the evaluator reads of both.

A virtual face the detector misses is embedded, posed and read at its original's landmarks and
box, so a method cannot look faithful, or anonymous, by making faces undetectable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceanon.align import align
from faceanon.datasets import Entry
from faceanon.detect import main_face
from faceanon.errors import FaceanonError
from faceanon.evaluation.expression import expression_similarity
from faceanon.evaluation.pose import angle_error
from faceanon.identity import Recognizer
# A virtual face is "at the same place" as its original when the tracker's overlap matching
# pairs their boxes (``faceanon.tracking.match_faces``, at its ``MIN_IOU``).
from faceanon.tracking import match_faces

__all__ = ["FeatureSet", "EvalFace", "EvalModels", "faces_of_pair", "load_or_none"]


class FeatureSet:
    """TF-Inception features of images added one by one, run in batches of equal shape."""

    def __init__(self, extractor: Any, batch: int = 32) -> None:
        self._extractor, self._batch = extractor, batch
        self._pending: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._features: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        group = self._pending.setdefault(image.shape, [])
        group.append(image)
        if len(group) >= self._batch:
            self._features.append(self._extractor(np.stack(group)).astype(np.float32))
            group.clear()

    def features(self) -> np.ndarray:
        for group in self._pending.values():
            if group:
                self._features.append(self._extractor(np.stack(group)).astype(np.float32))
                group.clear()
        return np.concatenate(self._features) if self._features else np.zeros((0, 2048))


@dataclass
class EvalFace:
    """One face of an original image and what the anonymized versions made of it."""

    relpath: str
    index: int
    label: str | None
    central: bool
    box: np.ndarray
    landmarks5: np.ndarray
    emb_orig: np.ndarray
    emb_anon: np.ndarray
    detected: bool
    emb_anon2: np.ndarray | None = None
    detected2: bool | None = None
    pose_error: np.ndarray | None = None
    expression: float | None = None
    cosine: float = float("nan")  # original vs virtual, set once all faces are in
    flags: list[str] = field(default_factory=list)


def load_or_none(entry: Entry) -> np.ndarray | None:
    try:
        return entry.load()
    except FaceanonError:
        return None


class EvalModels:
    """The networks one evaluation needs, loaded once."""

    def __init__(self, device: str, recognizer: str, pose_model: Path | None = None,
                 expression_model: Path | None = None, fid: bool = True) -> None:
        from faceanon.detect import Detector
        from faceanon.evaluation.expression import ExpressionModel
        from faceanon.evaluation.pose import load_pose
        from faceanon.generators import generator_crop
        from faceanon.models import create_model

        self.detector = Detector(device=device)
        # Crops for FID and the contact sheet: the generator's own template and size.
        self.crop: tuple[str, int] = generator_crop()
        self.recognizer: Recognizer = create_model("recognizer", recognizer, device)
        self.pose = load_pose(pose_model)
        self.expression = (ExpressionModel(expression_model, device)
                           if expression_model is not None else None)
        self.fid: dict[str, FeatureSet] = {}
        if fid:
            from faceanon.fid import InceptionFeatures

            inception = InceptionFeatures(device)
            self.fid = {k: FeatureSet(inception) for k in
                        ("crops_orig", "crops_anon", "images_orig", "images_anon")}


def faces_of_pair(models: EvalModels, relpath: str, label: str | None, orig: np.ndarray,
                   anon: np.ndarray, anon2: np.ndarray | None) -> list[EvalFace]:
    """Match, embed and measure every face of one original against its anonymized versions."""
    images = [orig, anon] + ([anon2] if anon2 is not None else [])
    same_shape = all(im.shape == orig.shape for im in images)
    # One image per call: the detector's batched results depend on an image's batch position.
    found = [models.detector(im) for im in images]
    if models.fid:
        models.fid["images_orig"].add(orig)
        models.fid["images_anon"].add(anon)
    faces_o = found[0]
    if not faces_o:
        return []
    boxes_o = np.array([f.box for f in faces_o])
    marks_o = np.array([f.landmarks5 for f in faces_o])
    central = main_face(boxes_o, orig.shape)
    rec = models.recognizer

    def embed_version(image: np.ndarray, faces: list[Any]) -> tuple[np.ndarray, list[int | None], np.ndarray]:
        """Embeddings of each original face's counterpart, the matches, and their landmarks
        (the original's where nothing matched)."""
        match = match_faces(boxes_o, np.array([f.box for f in faces]).reshape(-1, 4)) \
            if same_shape else [None] * len(faces_o)
        marks = np.array([faces[j].landmarks5 if j is not None else marks_o[i]
                          for i, j in enumerate(match)])
        return rec.embed_faces(image, marks), match, marks

    emb_o = rec.embed_faces(orig, marks_o)
    emb_a, match_a, marks_a = embed_version(anon, found[1])
    emb_b, match_b, _ = embed_version(anon2, found[2]) if anon2 is not None else (None, None, None)
    out = [EvalFace(relpath, i, label, i == central, boxes_o[i], marks_o[i], emb_o[i], emb_a[i],
                 match_a[i] is not None, None if emb_b is None else emb_b[i],
                 None if match_b is None else match_b[i] is not None)
           for i in range(len(faces_o))]

    # Pose and expression of every face: a virtual face the detector misses is read at its
    # original's box and landmarks, so a method cannot look faithful by hiding faces.
    boxes_a = np.array([found[1][j].box if j is not None else boxes_o[i]
                        for i, j in enumerate(match_a)])
    err = angle_error(models.pose(orig, boxes_o, marks_o), models.pose(anon, boxes_a, marks_a))
    for i, face in enumerate(out):
        face.pose_error = err[i]
    if models.expression is not None:
        sim = expression_similarity(models.expression.probabilities(orig, boxes_o),
                                    models.expression.probabilities(anon, boxes_a))
        for i, face in enumerate(out):
            face.expression = float(sim[i])
    if models.fid:
        crops_o, _ = align(orig, marks_o, *models.crop)
        crops_a, _ = align(anon, marks_a, *models.crop)
        for co, ca in zip(crops_o, crops_a):
            models.fid["crops_orig"].add(co)
            models.fid["crops_anon"].add(ca)
    return out
