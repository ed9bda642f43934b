"""Measuring anonymized datasets: the papers' metrics (``report``) and the independent models
they need (``pose``, ``expression``). Nothing here is used to make outputs, only to judge them."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["crop_box"]


def crop_box(image: np.ndarray, box: np.ndarray, size: int, margin: float = 0.0,
             square: bool = False) -> np.ndarray:
    """The pixels of ``box`` (x1, y1, x2, y2), made square about its centre by growing the short
    side when ``square``, grown by ``margin`` pixels on every side, resized to ``size`` x ``size``.
    Parts outside the image are black, as the evaluation models' own pipelines pad them."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if square:
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
    x1, y1, x2, y2 = (int(round(v)) for v in (x1 - margin, y1 - margin, x2 + margin, y2 + margin))
    h, w = image.shape[:2]
    pad = max(0, -x1, -y1, x2 - w, y2 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    patch = image[y1 + pad:max(y2, y1 + 1) + pad, x1 + pad:max(x2, x1 + 1) + pad]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
