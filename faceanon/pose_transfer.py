"""Pose and expression transfer: the virtual face takes the original's head pose and expression.

KFAAR uses a neural reenactor (FaceVid2Vid) whose weights cannot be had offline, so the default
backend is geometric and needs no network. Both faces' 68 landmarks, in the same aligned crop
frame, are compared through a ``PoseBasis`` learnt from LFW: the directions of landmark space
along which photos *of one person* vary (head pose, expression) as opposed to those along which
*different people* vary (face shape). The virtual face is warped by a smooth displacement field so that
its pose/expression coordinates become the original's while its face-shape coordinates stay its
own: the original's identity-bearing shape is not copied over.

Backends implement ``PoseTransfer``; a neural reenactor can be added as another one. A face
generator that can turn a head itself (``faceanon.generators``, ``pose_control``) is given the
pose as a ``PoseGoal`` of landmarks first; the warp then refines what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import torch

from faceanon.align import template_points
from faceanon.errors import FaceanonError
from faceanon.memo import Memo, content_key

if TYPE_CHECKING:
    from faceanon.generators import PoseGoal
    from faceanon.landmarks import Landmarks68

MAX_SHIFT = 0.06  # of the crop width

__all__ = ["PoseTransfer", "PoseBasis", "LandmarkWarp", "fit_pose_basis", "smooth_warp"]


class PoseTransfer(Protocol):
    """Re-pose virtual crops like the original crops (same template and size)."""

    def goal(self, virtual: np.ndarray, original: np.ndarray) -> PoseGoal:
        """The pose of the (N, S, S, 3) original crops, for a generator with pose control to
        draw the virtual faces in before any image-space step."""
        ...

    def __call__(self, virtual: np.ndarray, original: np.ndarray) -> np.ndarray:
        """One virtual crop re-posed like one original crop."""
        ...


@dataclass(frozen=True)
class PoseBasis:
    """Projection onto the pose/expression subspace of 68-landmark shapes (136-d).

    ``projection`` P maps a shape difference d to its pose/expression part P @ d; it is oblique
    (not orthogonal) because it is built in the metric of the total landmark covariance.
    ``size`` is the crop width the landmarks were measured at.
    """

    projection: np.ndarray  # (136, 136)
    size: int
    within_share: np.ndarray  # per kept direction: share of its variance that is within-person

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for ``torch.save`` and the weights registry."""
        return {"projection": torch.from_numpy(self.projection.astype(np.float32)),
                "size": torch.tensor(self.size),
                "within_share": torch.from_numpy(self.within_share.astype(np.float32))}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "PoseBasis":
        return cls(state["projection"].double().numpy(), int(state["size"]),
                   state["within_share"].double().numpy())

    def pose_part(self, delta: np.ndarray, size: int) -> np.ndarray:
        """The pose/expression part of a (68, 2) landmark difference measured at ``size`` px."""
        scale = self.size / size
        flat = (np.asarray(delta, dtype=np.float64) * scale).reshape(136)
        return (self.projection @ flat).reshape(68, 2) / scale


def fit_pose_basis(shapes: np.ndarray, labels: np.ndarray, size: int,
                   min_within_share: float = 0.5, variance_floor: float = 1e-3) -> PoseBasis:
    """Learn the basis from (N, 68, 2) aligned landmark shapes and their identity labels.

    Solves S_w v = λ S_t v (within-person vs total covariance); a direction with λ close to 1
    varies within a person (pose, expression), close to 0 between people (face shape). The
    directions with λ ≥ ``min_within_share`` span the pose/expression subspace; nothing of the
    others (face shape) is ever transferred.
    """
    x = np.asarray(shapes, dtype=np.float64).reshape(len(shapes), 136)
    labels = np.asarray(labels)
    people, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    means = np.zeros((len(people), 136))
    np.add.at(means, inverse, x)
    means /= counts[:, None]
    several = counts[inverse] >= 2
    if several.sum() < 2 * 136:
        raise FaceanonError(f"too few people with two or more images to fit a pose basis "
                            f"({int(several.sum())} shapes)")
    within = x[several] - means[inverse[several]]
    s_w = within.T @ within / (len(within) - (counts >= 2).sum())
    centred = x - x.mean(0)
    s_t = centred.T @ centred / (len(x) - 1)
    # Work in the principal subspace of S_t: directions with almost no variance are landmark
    # noise, ill-conditioned in the ratio below; they are never transferred.
    var, pcs = np.linalg.eigh(s_t)
    top = var > variance_floor * var.max()
    u, var = pcs[:, top], var[top]
    white = u / np.sqrt(var)  # x → whitened coordinates: white.T @ S_t @ white = I
    lam, rot = np.linalg.eigh(white.T @ s_w @ white)
    v = white @ rot  # columns: V^T S_t V = I, V^T S_w V = diag(lam)
    keep = lam >= min_within_share
    # Each kept direction is weighted by its within-person share (the least-squares estimate of
    # the pose/expression difference given a landmark difference), so noisy directions shrink.
    weight = np.clip(lam[keep], 0.0, 1.0)
    projection = (v[:, keep] * weight) @ v[:, keep].T @ s_t
    return PoseBasis(projection, size, lam[keep])


def smooth_warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray, sigma: float = 0.08
                ) -> np.ndarray:
    """Warp ``image`` so that points ``src`` move towards ``dst`` under a smooth displacement field.

    The field is a Gaussian-weighted average of the landmark displacements (``sigma`` in crop
    widths) that fades to zero away from the face, so it can neither fold nor blow up, whatever
    the landmarks (unlike an interpolating spline, which nearby inconsistent points make wild).
    """
    h, w = image.shape[:2]
    dst = np.asarray(dst, np.float64)
    back = np.asarray(src, np.float64) - dst  # at an output point near dst_i, sample at +back_i
    s2 = 2 * (sigma * w) ** 2
    # A Gaussian is separable, exp(-(dx² + dy²)/s2) = exp(-dx²/s2) exp(-dy²/s2), so the
    # weighted sums over the landmarks are (H, n) @ (n, W) products: the field costs
    # O((H + W) n) exponentials instead of O(H W n).
    wy = np.exp(-(np.arange(h)[:, None] - dst[None, :, 1]) ** 2 / s2)  # (H, n)
    wx = np.exp(-(np.arange(w)[:, None] - dst[None, :, 0]) ** 2 / s2)  # (W, n)
    total = wy @ wx.T + np.exp(-2.0)
    field = np.stack([(wy * back[:, k]) @ wx.T for k in (0, 1)], -1) / total[..., None]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    maps = (np.stack([xs, ys], -1) + field).astype(np.float32)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


class LandmarkWarp:
    """The default ``PoseTransfer``: a landmark-driven smooth warp through a PoseBasis, on
    crops of ``template`` (the generator's)."""

    MEMO_FACES = 64

    def __init__(self, basis: PoseBasis, landmarks68: Landmarks68, template: str) -> None:
        self.basis = basis
        self.landmarks68 = landmarks68
        self.template = template
        # The virtual faces' landmarks, by the faces' bytes: a clip's track re-poses one face
        # in every frame (``faceanon.memo``).
        self._virtual: Memo[np.ndarray] = Memo(self.MEMO_FACES)
        self._held: dict[bytes, np.ndarray] = {}

    def landmarks(self, crop: np.ndarray) -> np.ndarray:
        """68 landmarks of the face that an aligned crop holds (its 5 points are the template's)."""
        return self.landmarks68(crop, template_points(self.template, crop.shape[1], crop.shape[0]))

    def hold(self, keys: list[bytes], marks: np.ndarray) -> None:
        """Take ``marks`` (N, 68, 2) as the landmarks of the original crops with these
        ``content_key``s (``faceanon.memo``), until ``release``. A clip's track gives its faces' landmarks smoothed
        over time: read anew in each frame, they shake by a pixel or two, and the warp with
        them, so the pasted features shiver where the face is still."""
        self._held.update(zip(keys, np.asarray(marks, np.float64)))

    def release(self) -> None:
        """Forget what ``hold`` gave."""
        self._held = {}

    def original_landmarks(self, crop: np.ndarray) -> np.ndarray:
        """An original crop's landmarks: those held for it, else read from it."""
        held = self._held.get(content_key(crop)) if self._held else None
        return self.landmarks(crop) if held is None else held

    def goal(self, virtual: np.ndarray, original: np.ndarray) -> PoseGoal:
        from faceanon.generators import PoseGoal

        return PoseGoal(self.basis, np.stack([self.original_landmarks(c) for c in original]),
                        np.stack([self.landmarks(c) for c in virtual]), virtual.shape[2])

    def __call__(self, virtual: np.ndarray, original: np.ndarray) -> np.ndarray:
        size = virtual.shape[1]
        l_o = self.original_landmarks(original)
        name = content_key(virtual)
        l_v = self._virtual.find(name)
        if l_v is None:
            l_v = self.landmarks(virtual)
            l_v.setflags(write=False)  # kept: no caller may change it
            self._virtual.put(name, l_v)
        shift = self.basis.pose_part(l_o - l_v, size)
        # A 2-D warp cannot turn a head: beyond a few pixels it distorts instead, so each
        # landmark's shift is capped (large pose differences are only partly transferred).
        cap = MAX_SHIFT * size
        norm = np.linalg.norm(shift, axis=1, keepdims=True)
        shift = shift * np.minimum(1.0, cap / np.maximum(norm, 1e-9))
        return smooth_warp(virtual, l_v, l_v + shift)
