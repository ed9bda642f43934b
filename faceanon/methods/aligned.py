"""Methods that draw a new face on each face's aligned crop and paste it back (kfaar, ivfg,
obfuscate): the alignment, the paste and the check that the pasted face covers the detected
one are theirs in common; each method only makes the new crops."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from faceanon.align import align, transform_points
from faceanon.composite import ellipse_mask, paste_faces
from faceanon.methods.base import FaceBatch, FaceReplacer, Replacement

if TYPE_CHECKING:
    from faceanon.pose_transfer import LandmarkWarp

MIN_COVERAGE = 0.7  # share of the detector box's inner ellipse the pasted face must cover


class AlignedReplacer(FaceReplacer):
    """A method that replaces each aligned face crop with a new one.

    Faces are aligned on the method's ``template`` at ``crop_size`` px: for a generated face,
    the generator's own (it draws faces as it was trained to), so a generator trained on
    another template changes nothing here.
    """

    match_colour = True  # recolour each new face to the one it replaces (see composite.paste)
    template: str
    crop_size: int
    # The pose transfer that gives new faces the originals' pose (kfaar's), if the method has
    # one: a clip's tracks hold its original landmarks steady (``LandmarkWarp.hold``).
    pose: LandmarkWarp | None = None

    @abstractmethod
    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        """(N, crop_size, crop_size, 3) uint8 new faces for aligned ``crops`` and their
        identity embeddings; each ``attempt`` (a face's first draw, ``FaceBatch.attempts``,
        then its retries counted on from there) must give other faces."""

    def replace(self, batch: FaceBatch) -> Replacement:
        return AlignedReplacement(self, batch)


class AlignedReplacement(Replacement):
    """The new crops of a batch, kept so that a retry replaces only the faces it names and
    pastes every face again in one go, as the first attempt did."""

    def __init__(self, method: AlignedReplacer, batch: FaceBatch) -> None:
        self.method, self.batch = method, batch
        self.crops, self.mats = align_all(batch.images, batch.owners, batch.landmarks,
                                          method.template, method.crop_size)
        self.new = self._draw(np.arange(len(batch.owners)), 0)
        # Landmarks of profile or occluded faces can put the aligned crop beside the face:
        # where the pasted region misses much of the detector's box, the new face is no use.
        mask = ellipse_mask(method.template, method.crop_size)
        missed = np.array([mask_coverage(batch.images[i].shape[:2], m, box, mask) < MIN_COVERAGE
                           for i, m, box in zip(batch.owners, self.mats, batch.boxes)], bool)
        super().__init__(self._paste(), missed)

    def retry(self, which: np.ndarray, attempt: int) -> dict[int, np.ndarray]:
        faces = np.flatnonzero(which)
        self.new[faces] = self._draw(faces, attempt)
        return self._paste()

    def _draw(self, faces: np.ndarray, retry: int) -> np.ndarray:
        """New crops for ``faces`` (indices), each at its own first attempt plus ``retry``: one
        call per attempt, since a new face does not depend on the others drawn with it."""
        attempts = self.batch.attempts[faces] + retry
        new = np.empty((len(faces), *self.crops.shape[1:]), np.uint8)
        for attempt in np.unique(attempts):
            these = faces[attempts == attempt]
            new[attempts == attempt] = self.method.new_faces(
                self.crops[these], self.batch.identities[these], int(attempt))
        return new

    def _paste(self) -> dict[int, np.ndarray]:
        owners = self.batch.owners
        return {i: paste_faces(image, self.new[owners == i], self.mats[owners == i],
                               template=self.method.template,
                               match_colour=self.method.match_colour)
                for i, image in self.batch.images.items()}


def mask_coverage(shape: tuple[int, int], matrix: np.ndarray, box: np.ndarray,
                  mask: np.ndarray) -> float:
    """Share of the ellipse inscribed in the detector's ``box`` (shrunk to 60 %: the eyes, nose
    and mouth) that the paste ``mask`` of a square crop aligned by ``matrix`` covers at more
    than half strength."""
    x1, y1, x2, y2 = box
    cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, 0.3 * (x2 - x1), 0.3 * (y2 - y1)
    h, w = shape
    xs, ys = np.meshgrid(np.arange(max(int(cx - ax), 0), min(int(cx + ax) + 1, w)),
                         np.arange(max(int(cy - ay), 0), min(int(cy + ay) + 1, h)))
    inside = ((xs - cx) / max(ax, 1e-6)) ** 2 + ((ys - cy) / max(ay, 1e-6)) ** 2 <= 1
    if not inside.any():
        return 1.0
    pts = np.stack([xs[inside], ys[inside]], 1).astype(np.float64)
    crop_pts = transform_points(matrix, pts)
    size = len(mask)
    u = np.clip(np.round(crop_pts).astype(int), 0, size - 1)
    within = (crop_pts >= 0).all(1) & (crop_pts <= size - 1).all(1)
    return float(((mask[u[:, 1], u[:, 0]] > 0.5) & within).mean())


def align_all(images: dict[int, np.ndarray], owners: np.ndarray, landmarks: np.ndarray,
              template: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops of all faces aligned on ``template`` at ``size`` px, and their matrices, in
    ``owners`` order."""
    crops, mats = zip(*(align(images[i], landmarks[owners == i], template, size)
                        for i in images))
    return np.concatenate(crops), np.concatenate(mats)
