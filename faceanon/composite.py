"""Pasting generated face crops back into the photo, and what to do when there is no face.

A crop made by :func:`faceanon.align.align` goes back through the inverse of its matrix under a
soft mask (an ellipse fitted to the template, or the hull of 68 landmarks), feathered by
distance to its edge so no box or mask outline shows. Before blending, the crop's colour is
matched to the face it replaces: mean and contrast over the inner face in Lab, then a smooth
correction interpolated inward from the feather band only, so the new face meets the
surrounding skin and lighting without importing the old face's interior (its identity).
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import cv2
import numpy as np

from faceanon.align import invert_affine, template_points, transform_points

__all__ = ["NoFacePolicy", "NO_FACE_POLICIES", "DEFAULT_NO_FACE_POLICY", "NO_FACE_POLICY_HELP",
           "apply_no_face_policy", "blur_image", "ellipse_mask", "hull_mask", "paste",
           "paste_faces"]

NoFacePolicy = Literal["blur", "copy", "skip"]
NO_FACE_POLICIES: tuple[str, ...] = get_args(NoFacePolicy)
DEFAULT_NO_FACE_POLICY: NoFacePolicy = "blur"
NO_FACE_POLICY_HELP = (
    "What to do with an image in which no face is found, or a face too small to anonymize: "
    "'blur' (default) blurs the whole image beyond recognition, so a face the detector missed "
    "never leaks; 'copy' keeps the original image unchanged (it may show a real face); "
    "'skip' leaves the image out of the output. The choice is recorded in the manifest.")

# Feather width as a fraction of the crop's width; the colour band is where the mask is partial.
_FEATHER = 0.06
# Bounds on the Lab contrast ratio and on the band correction (in 8-bit levels), so a band that
# crosses hair or background cannot repaint the face.
_CONTRAST = (0.6, 1.6)
_BAND_LIMIT = 24.0


def blur_image(image: np.ndarray, cells: int = 12) -> np.ndarray:
    """The image reduced to about ``cells`` blocks along its long side and smoothly enlarged:
    no face survives at that resolution, while the scene's colours stay recognisable."""
    h, w = image.shape[:2]
    f = cells / max(h, w)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def apply_no_face_policy(image: np.ndarray, policy: NoFacePolicy) -> np.ndarray | None:
    """The output for an image that cannot be anonymized face by face (None means skip it)."""
    if policy == "blur":
        return blur_image(image)
    if policy == "copy":
        return image
    if policy == "skip":
        return None
    raise ValueError(f"unknown no-face policy {policy!r}; choose one of {NO_FACE_POLICIES}")


def _feather(inside: np.ndarray, width: float) -> np.ndarray:
    """Binary region → float mask rising smoothly from 0 at its edge to 1 at ``width`` px in."""
    dist = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(dist / max(width, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _ellipse(template: str, width: int, height: int) -> np.ndarray:
    pts = template_points(template, width, height)
    eyes, mouth = pts[:2].mean(0), pts[3:].mean(0)
    d = float(np.linalg.norm(mouth - eyes))          # eye-to-mouth distance
    iod = float(np.linalg.norm(pts[1] - pts[0]))      # inter-ocular distance
    # Outer edge from mid-forehead (0.95 d above the eyes) to the chin (0.95 d below the
    # mouth) and across the cheeks to the face outline; hair, ears and background stay the
    # original's. Forehead and outline carry identity: a mask ending at the brows and inside
    # the cheeks left a third of virtual faces recognisable (LFW DevTrain, see README).
    centre = (eyes + mouth) / 2
    axes = (1.1 * iod, 1.45 * d)
    inside = np.zeros((height, width), np.uint8)
    cv2.ellipse(inside, (round(centre[0] * 16), round(centre[1] * 16)),
                (round(axes[0] * 16), round(axes[1] * 16)), 0.0, 0.0, 360.0, 1, -1,
                cv2.LINE_8, 4)
    mask = _feather(inside, _FEATHER * width)
    mask.setflags(write=False)
    return mask


def ellipse_mask(template: str = "faceanon", width: int = 128, height: int | None = None) -> np.ndarray:
    """Soft (h, w) float32 mask in [0, 1] covering forehead to chin on crops of ``template``."""
    return _ellipse(template, width, width if height is None else height)


def hull_mask(landmarks68: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """Soft mask from the hull of 68-point landmark sets in crop pixels ((68, 2) or (K, 68, 2));
    give both the original's and the new face's landmarks so the mask covers both.

    The 68 points stop at the brows, so the brows are lifted by half the brow-to-nose-tip
    distance to take in the forehead.
    """
    height = width if height is None else height
    sets = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 68, 2)
    lifted = []
    for pts in sets:
        brows = pts[17:27]
        lift = (pts[30] - brows.mean(0)) * 0.5
        lifted.append(np.concatenate([pts[:17], brows - lift]))
    hull = cv2.convexHull(np.concatenate(lifted).astype(np.float32)).round().astype(np.int32)
    inside = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(inside, hull, 1)
    return _feather(inside, _FEATHER * width)


def _push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill (h, w, c) ``values`` where ``weights`` is 0 by smooth interpolation from where it
    is not (a pyramid push-pull: cheap, membrane-like)."""
    pyramid = []
    v, w = values * weights[..., None], weights.astype(np.float32)
    while min(w.shape) > 4:
        pyramid.append((v, w))
        v, w = cv2.pyrDown(v), cv2.pyrDown(w)
        if v.ndim == 2:
            v = v[..., None]
    est = v.sum((0, 1)) / max(float(w.sum()), 1e-6) + np.zeros_like(v)
    for v, w in reversed(pyramid):
        up = cv2.pyrUp(est, dstsize=(w.shape[1], w.shape[0]))
        if up.ndim == 2:
            up = up[..., None]
        conf = np.clip(w * 4.0, 0.0, 1.0)[..., None]
        est = conf * (v / np.maximum(w, 1e-6)[..., None]) + (1.0 - conf) * up
    return est


def _match_colour(new: np.ndarray, old: np.ndarray, mask: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
    """``new`` (float32 RGB 0..255 crop) recoloured to sit where ``old`` was."""
    lab_new = cv2.cvtColor(new / 255.0, cv2.COLOR_RGB2LAB)
    lab_old = cv2.cvtColor(old / 255.0, cv2.COLOR_RGB2LAB)
    core = (mask > 0.9) & valid
    if core.sum() >= 16:
        mu_n, sd_n = lab_new[core].mean(0), lab_new[core].std(0) + 1e-3
        mu_o, sd_o = lab_old[core].mean(0), lab_old[core].std(0) + 1e-3
        lab_new = (lab_new - mu_n) * np.clip(sd_o / sd_n, *_CONTRAST) + mu_o
    out = np.clip(cv2.cvtColor(lab_new.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0) * 255.0
    band = ((mask > 0.02) & (mask < 0.98) & valid).astype(np.float32)
    if band.sum() >= 16:
        diff = np.clip(old - out, -_BAND_LIMIT, _BAND_LIMIT)
        out = out + _push_pull(diff.astype(np.float32), band)
    return out


def paste(image: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None,
          template: str = "faceanon", match_colour: bool = True) -> np.ndarray:
    """``image`` with ``crop`` (h, w, 3) blended back where ``matrix`` (image → crop, from
    :func:`faceanon.align.align`) took it from. ``mask`` defaults to the template's ellipse.

    Only the face's bounding region is resampled, so large photos cost no more than small
    ones; parts of the crop that fall outside the image (border faces) are dropped.
    """
    h, w = crop.shape[:2]
    mask = ellipse_mask(template, w, h) if mask is None else mask.astype(np.float32)
    m = np.asarray(matrix, dtype=np.float64)
    corners = transform_points(invert_affine(m), np.array([[0, 0], [w, 0], [0, h], [w, h]]))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return image
    new = crop.astype(np.float32)
    if match_colour:
        old = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        inside = cv2.warpAffine(np.ones(image.shape[:2], np.float32), m, (w, h),
                                flags=cv2.INTER_LINEAR, borderValue=0.0) > 0.999
        new = _match_colour(new, old, mask, inside)
    if is_grey(image[y0:y1, x0:x1]):
        # A grey photo stays grey: matching cannot take all the colour out of a generated face
        # (its contrast is clipped), and a tinted face in a grey photo gives the paste away.
        # Only the region pasted into is read: a whole frame per face would be on the hot path.
        new = np.repeat(cv2.cvtColor(new, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    roi = m.copy()
    roi[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    size = (x1 - x0, y1 - y0)
    # Bicubic keeps the enlarged face sharp (about 4 dB better than bilinear on LFW).
    face = cv2.warpAffine(new, roi, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, roi, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderValue=0.0)[..., None]
    out = image.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region + alpha * (face - region) + 0.5, 0, 255).astype(np.uint8)
    return out


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB image has no colour at all (a grey photo decoded to three channels)."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def paste_faces(image: np.ndarray, crops: np.ndarray, matrices: np.ndarray,
                masks: list[np.ndarray | None] | None = None, template: str = "faceanon",
                match_colour: bool = True) -> np.ndarray:
    """Paste several faces; the smallest go first, so where faces overlap the larger (usually
    nearer) face ends on top."""
    mats = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    masks = masks if masks is not None else [None] * len(mats)
    zoom = np.abs(np.linalg.det(mats[:, :, :2]))  # crop px per image px: large = small face
    out = image
    for i in np.argsort(-zoom, kind="stable"):
        out = paste(out, crops[i], mats[i], masks[i], template, match_colour)
    return out
