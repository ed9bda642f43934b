"""Similarity-transform alignment of faces from their 5 landmarks onto named templates.

Every network sees faces through one of these templates, so the template a model was trained
with is part of that model: generator crops use ``faceanon``, recognizers their own.
Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner
(left/right as seen in the image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Template", "TEMPLATES", "template_points", "similarity_transform", "invert_affine",
           "align", "transform_points"]


@dataclass(frozen=True)
class Template:
    """Where the 5 landmarks land in a crop of ``width`` x ``height`` pixels."""

    name: str
    width: int
    height: int
    points: tuple[tuple[float, float], ...]

    def scaled(self, width: int, height: int | None = None) -> np.ndarray:
        """The template's points for a crop of another size (aspect kept unless height given)."""
        height = height if height is not None else round(width * self.height / self.width)
        pts = np.asarray(self.points, dtype=np.float64)
        return pts * np.array([width / self.width, height / self.height])


_ARCFACE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
            (41.5493, 92.3655), (70.7299, 92.2041))


def _loose(points: tuple[tuple[float, float], ...], size: float, scale: float,
           centre: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """Shrink a tight template about the face's centre so the crop keeps hair, chin and ears."""
    pts = np.asarray(points) / size
    mid = pts.mean(axis=0)
    out = (pts - mid) * scale + np.asarray(centre)
    return tuple((float(x), float(y)) for x, y in out)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        # The generator's crop: the face at about 0.7 of ArcFace's scale, centred a little low,
        # so that forehead, hair line and chin are inside and the paste-back mask fits.
        Template("faceanon", 1, 1, _loose(_ARCFACE, 112.0, 0.70, (0.5, 0.56))),
        # The tight generator crop: exactly the paste region (composite.ellipse_mask, mid-
        # forehead to chin, out to the face outline) plus a 4 % margin top and bottom, so a
        # 64-px generator spends its pixels on the face it replaces, not on hair and shoulders
        # (eyes 17.7 px apart at 64 px, against 14.1 in ``faceanon``).
        Template("face", 1, 1, _loose(_ARCFACE, 112.0, 0.88, (0.5, 0.5))),
        Template("arcface", 112, 112, _ARCFACE),
        # SphereFace / MobileFaceNet (112 high x 96 wide), from the evaluator's publisher.
        Template("sphereface", 96, 112, ((30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366),
                                         (33.5493, 92.3655), (62.7299, 92.2041))),
        # dlib's 150x150 recognizer chip (get_face_chip, padding 0.25): mean positions of the
        # 5 points on 299 LFW faces, from benchmarks/identity_dlib_template.py.
        Template("dlib", 150, 150, ((47.3793, 46.2229), (99.8048, 46.1870), (73.1809, 75.0036),
                                    (49.9117, 103.9348), (97.6486, 104.0139))),
    )
}


def template_points(name: str, width: int, height: int | None = None) -> np.ndarray:
    """The (5, 2) landmark targets of template ``name`` for a ``width`` x ``height`` crop."""
    try:
        tpl = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown alignment template {name!r}; known: {sorted(TEMPLATES)}") from None
    return tpl.scaled(width, height)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``src`` onto ``dst`` (Umeyama).

    Returns the 2x3 matrix M with dst ≈ M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign) / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (crop → image coordinates)."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (..., 2) points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def align(image: np.ndarray, landmarks: np.ndarray, template: str = "faceanon", width: int = 128,
          height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp every face of ``image`` (H, W, C uint8) onto ``template``.

    ``landmarks`` is (N, 5, 2) in image pixels. Returns crops (N, h, w, C) and the image→crop
    matrices (N, 2, 3); pixels outside the image are filled by reflection so that border faces
    carry no black wedges into the networks.
    """
    lms = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    dst = template_points(template, width, height)
    dst_h = height if height is not None else round(width * TEMPLATES[template].height
                                                          / TEMPLATES[template].width)
    crops, mats = [], []
    for pts in lms:
        m = similarity_transform(pts, dst)
        crops.append(cv2.warpAffine(image, m, (width, dst_h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101))
        mats.append(m)
    channels = image.shape[2:] if image.ndim == 3 else ()
    empty = np.zeros((0, dst_h, width, *channels), dtype=image.dtype)
    return (np.stack(crops) if crops else empty), np.asarray(mats).reshape(-1, 2, 3)



def template_transform(src: str, src_width: int, dst: str, dst_width: int) -> np.ndarray:
    """The 2x3 matrix taking a crop on template ``src`` to one on template ``dst``.

    Lets a network fed one template (the generator's crops) feed another (a recognizer's chip)
    without going back to the photo.
    """
    return similarity_transform(template_points(src, src_width), template_points(dst, dst_width))


def warp_tensor(images: "torch.Tensor", matrix: np.ndarray, width: int,
                height: int | None = None) -> "torch.Tensor":
    """Differentiable ``cv2.warpAffine`` for a batch (N, C, H, W) under one 2x3 pixel matrix."""
    import torch
    import torch.nn.functional as F

    n, _, h_in, w_in = images.shape
    height = height or width
    inv = invert_affine(matrix)  # output pixel → input pixel
    # Normalised coordinates (align_corners=False): u = (2x + 1) / size - 1.
    to_pix_out = np.array([[width / 2, 0, (width - 1) / 2], [0, height / 2, (height - 1) / 2],
                           [0, 0, 1]])
    to_norm_in = np.array([[2 / w_in, 0, 1 / w_in - 1], [0, 2 / h_in, 1 / h_in - 1], [0, 0, 1]])
    theta = (to_norm_in @ np.vstack([inv, [0, 0, 1]]) @ to_pix_out)[:2]
    theta_t = torch.as_tensor(theta, dtype=images.dtype, device=images.device).expand(n, 2, 3)
    grid = F.affine_grid(theta_t, [n, images.shape[1], height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
