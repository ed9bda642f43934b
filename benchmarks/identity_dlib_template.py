"""Derive the ``dlib`` alignment template: where dlib's 150x150 face chip puts the 5 landmarks.

dlib aligns its recognizer's input with all 68 landmarks (``get_face_chip``); faceanon has only
MTCNN's 5 points (eye centres, nose tip, mouth corners). On LFW images this finds each face's
68 landmarks with dlib's HOG detector and predictor, reduces them to those 5 points (eye centre =
mean of the 6 eye-contour points, nose tip = 30, mouth corners = 48 / 54), maps them into dlib's
chip exactly (by chipping images whose pixel values are their own x / y coordinates), and prints
the mean positions: the template for ``faceanon/align.py``. It also reports how far individual
faces lie from the mean (how well a 5-point similarity can reproduce dlib's chip).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/identity_dlib_template.py --n 300
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dlib
import numpy as np

from faceanon.images import load_image
from faceanon.lfw import DlibLandmarks, five_from_68


def chip_to_image(shape: dlib.full_object_detection, height: int, width: int) -> np.ndarray:
    """The 2x3 affine matrix taking chip pixels to image pixels, measured on coordinate ramps."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # +1 so that dlib's zero fill outside the image is distinguishable from column/row 0.
    cx = dlib.get_face_chip(xs + 1.0, shape, size=150, padding=0.25) - 1.0
    cy = dlib.get_face_chip(ys + 1.0, shape, size=150, padding=0.25) - 1.0
    inside = (cx >= 0) & (cy >= 0) & (cx <= width - 1) & (cy <= height - 1)
    rows, cols = np.nonzero(inside)
    a = np.stack([cols, rows, np.ones_like(cols)], axis=1).astype(np.float64)
    m, *_ = np.linalg.lstsq(a, np.stack([cx[inside], cy[inside]], axis=1), rcond=None)
    return m.T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    args = ap.parse_args()
    paths = sorted(Path(args.shared, "data/lfw/images").glob("*/*.jpg"))
    paths = paths[:: max(1, len(paths) // args.n)][: args.n]
    source = DlibLandmarks()
    points = []
    for p in paths:
        image = load_image(p)
        shape = source.shape(image)
        if shape is None:
            continue
        lm68 = np.array([(q.x, q.y) for q in shape.parts()], dtype=np.float64)
        m = np.vstack([chip_to_image(shape, *image.shape[:2]), [0, 0, 1]])
        to_chip = np.linalg.inv(m)[:2]
        five = five_from_68(lm68)
        points.append(five @ to_chip[:, :2].T + to_chip[:, 2])
    pts = np.stack(points)
    mean = pts.mean(0)
    spread = np.linalg.norm(pts - mean, axis=2)
    print(f"faces: {len(pts)} of {len(paths)} images")
    print("template (x, y) in the 150x150 chip:")
    print("(" + ", ".join(f"({x:.4f}, {y:.4f})" for x, y in mean) + ")")
    print("per-point mean distance from the template (px):", np.round(spread.mean(0), 2))


if __name__ == "__main__":
    main()
