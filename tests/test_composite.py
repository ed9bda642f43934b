"""Paste-back: round trip, colour matching, border and overlapping faces, no-face policy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceanon.align import similarity_transform, template_points
from faceanon.composite import (DEFAULT_NO_FACE_POLICY, apply_no_face_policy, ellipse_mask,
                                hull_mask, paste, paste_faces)
from faceanon.detect import Detector, detect_and_align
from faceanon.images import load_image

FACE = "Colin_Powell/Colin_Powell_0001.jpg"


@pytest.fixture(scope="module")
def face(lfw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An LFW image, its aligned 128-px crop and matrix."""
    torch.set_num_threads(1)
    img = load_image(lfw / "images" / FACE)
    _, crops, mats = detect_and_align(img, Detector())
    return img, crops[0], mats[0]


def face_region(mask: np.ndarray, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.warpAffine(mask, m, (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 0.5


def test_round_trip_keeps_the_face(face: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    img, crop, m = face
    back = paste(img, crop, m)
    region = face_region(ellipse_mask(), m, img.shape)
    assert region.sum() > 2000
    mse = ((back.astype(float) - img.astype(float)) ** 2)[region].mean()
    assert 10 * np.log10(255 ** 2 / mse) > 33.0
    far = np.ones(img.shape[:2], bool)
    far[30:220, 30:220] = False
    assert np.array_equal(back[far], img[far])  # nothing changes away from the face


def test_colour_is_matched_to_the_replaced_face(
        face: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    img, crop, m = face
    brighter = np.clip(crop.astype(int) + 45, 0, 255).astype(np.uint8)
    region = face_region(ellipse_mask(), m, img.shape)
    plain = paste(img, brighter, m, match_colour=False)
    matched = paste(img, brighter, m)
    shift = lambda out: float(out[region].astype(float).mean() - img[region].astype(float).mean())
    assert shift(plain) > 30.0
    assert abs(shift(matched)) < 5.0


def test_a_grey_photo_stays_grey(face: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """A colour face pasted into a grey photo comes out grey; into a colour photo, in colour."""
    img, crop, m = face
    grey = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    tinted = np.clip(crop[::-1].astype(int) + [40, 0, -40], 0, 255).astype(np.uint8)  # another face
    out = paste(grey, tinted, m)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    region = face_region(ellipse_mask(), m, img.shape)
    assert np.abs(out[region].astype(float) - grey[region]).mean() > 3, "the face was pasted"
    coloured = paste(img, tinted, m)
    assert np.abs(coloured[..., 0].astype(int) - coloured[..., 2])[region].mean() > 5


def test_border_face_and_overlapping_faces() -> None:
    img = np.full((200, 300, 3), 100, np.uint8)
    tpl = template_points("faceanon", 128)
    # A face hanging over the left edge, and two overlapping faces of different sizes.
    edge = similarity_transform(tpl * 0.8 + [-60, 40], tpl)
    small = similarity_transform(tpl * 0.7 + [150, 20], tpl)
    large = similarity_transform(tpl * 1.0 + [160, 40], tpl)
    crops = np.stack([np.full((128, 128, 3), c, np.uint8) for c in (10, 200, 250)])
    out = paste_faces(img, crops, np.stack([edge, large, small]), match_colour=False)
    assert out.shape == img.shape
    assert out[110, 0, 0] < 40  # the border face reaches the edge
    overlap = (205, 110)  # inside both faces: the larger one was pasted last
    assert abs(int(out[overlap[1], overlap[0], 0]) - 200) <= 2
    assert np.array_equal(out[190:, 60:120], img[190:, 60:120])


def test_masks_cover_the_face_softly() -> None:
    mask = ellipse_mask("faceanon", 128)
    tpl = template_points("faceanon", 128)
    assert mask.dtype == np.float32 and 0.0 <= mask.min() and mask.max() <= 1.0
    for x, y in tpl:
        assert mask[round(y), round(x)] > 0.95
    assert mask[0, 0] == 0.0 and mask[5, 64] == 0.0 and 0.0 < mask[:, 64].mean() < 1.0
    jaw = np.stack([64 + 40 * np.cos(np.linspace(0.2, np.pi - 0.2, 17)),
                    60 + 50 * np.sin(np.linspace(0.2, np.pi - 0.2, 17))], axis=1)
    brows = np.stack([np.linspace(34, 94, 10), np.full(10, 50.0)], axis=1)
    rest = np.tile([64.0, 70.0], (41, 1))
    rest[3] = [64, 80]  # nose tip (point 30 overall)
    hull = hull_mask(np.concatenate([jaw, brows, rest]), 128)
    assert hull[80, 64] == 1.0 and hull[2, 2] == 0.0 and hull[40, 64] > 0.0


def test_no_face_policy_defaults_to_blur(lfw: Path) -> None:
    img = load_image(lfw / "images" / FACE)
    assert DEFAULT_NO_FACE_POLICY == "blur"
    assert apply_no_face_policy(img, "copy") is img
    assert apply_no_face_policy(img, "skip") is None
    blurred = apply_no_face_policy(img, "blur")
    assert blurred.shape == img.shape
    detail = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    assert detail(blurred) < 0.02 * detail(img)
    assert Detector()(blurred) == []
    with pytest.raises(ValueError):
        apply_no_face_policy(img, "keep")  # type: ignore[arg-type]
