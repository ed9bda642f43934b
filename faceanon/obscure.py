"""Blurring or pixelating face boxes in the photo: the classical anonymizers, and the fail-safe
wherever a new face cannot be used.

Works on the detector's boxes, not on the alignment, so profile faces whose landmarks are
unreliable are covered all the same.
"""

from __future__ import annotations

import cv2
import numpy as np


def obscure(image: np.ndarray, boxes: np.ndarray, cells: int | None) -> np.ndarray:
    """``image`` with each face box (enlarged to take in forehead and chin) pixelated to
    ``cells`` blocks across, or blurred when ``cells`` is None, under a feathered ellipse."""
    out = image.copy()
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.3, (y2 - y1) * 1.4
        xa, ya = max(int(cx - bw / 2), 0), max(int(cy - bh / 2), 0)
        xb, yb = min(int(np.ceil(cx + bw / 2)), w), min(int(np.ceil(cy + bh / 2)), h)
        if xb - xa < 2 or yb - ya < 2:
            continue
        region = out[ya:yb, xa:xb]
        if cells is None:
            done = cv2.GaussianBlur(region, (0, 0), max(bw, bh) * 0.08)
        else:
            small = cv2.resize(region, (cells, max(1, round(cells * bh / bw))),
                               interpolation=cv2.INTER_AREA)
            done = cv2.resize(small, (xb - xa, yb - ya), interpolation=cv2.INTER_NEAREST)
        mask = np.zeros(region.shape[:2], np.float32)
        cv2.ellipse(mask, (round(cx - xa), round(cy - ya)), (round(bw * 0.45), round(bh * 0.45)),
                    0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(bw, bh) * 0.04)[..., None]
        out[ya:yb, xa:xb] = np.clip(region + mask * (done.astype(np.float32) - region) + 0.5,
                                    0, 255).astype(np.uint8)
    return out
