"""Fit where dlib's HOG detector puts its box, in the ArcFace template frame of MTCNN's landmarks.

dlib's 68-point shape predictor was trained on its own detector's boxes; faceanon feeds it a
box derived from MTCNN's 5 landmarks instead. This prints the square (centre, side) in the
112-px ArcFace frame that reproduces dlib's boxes (medians over LFW), and how far the 68
landmarks from the derived box land from those from dlib's own box.

    python benchmarks/geometry_dlib_box.py --n 400
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dlib
import numpy as np
import torch

from faceanon.align import similarity_transform, template_points, transform_points
from faceanon.detect import Detector
from faceanon.images import load_image
from faceanon.landmarks import Landmarks68


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = sorted(Path(args.shared, "data/lfw/images").glob("*/*.jpg"))
    paths = paths[:: max(1, len(paths) // args.n)][: args.n]
    det, hog, lm68 = Detector(), dlib.get_frontal_face_detector(), Landmarks68()
    ref = template_points("arcface", 112)
    rows, pairs = [], []
    for p in paths:
        img = load_image(p)
        faces = [f for f in det(img) if f.box[0] < 125 < f.box[2] and f.box[1] < 125 < f.box[3]]
        rects = [r for r in hog(img, 1) if r.left() < 125 < r.right() and r.top() < 125 < r.bottom()]
        if not faces or not rects:
            continue
        m = similarity_transform(faces[0].landmarks5, ref)
        r = rects[0]
        corners = np.array([[r.left(), r.top()], [r.right() + 1, r.bottom() + 1]], dtype=float)
        c = transform_points(m, corners.mean(0, keepdims=True))[0]
        side = (corners[1, 0] - corners[0, 0]) * np.hypot(*m[:, 0])
        rows.append([c[0], c[1], side])
        pairs.append((img, faces[0], r))
    fit = np.median(np.asarray(rows), axis=0)
    print(f"faces used: {len(rows)}; dlib box in ArcFace-112 frame: centre ({fit[0]:.2f}, "
          f"{fit[1]:.2f}), side {fit[2]:.2f}  (spread: {np.std(rows, axis=0).round(2)})")
    errs = []
    for img, face, r in pairs:
        own = lm68.predict(img, np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float))
        ours = lm68(img, face.landmarks5)
        iod = np.linalg.norm(own[36:42].mean(0) - own[42:48].mean(0))
        errs.append(np.linalg.norm(own - ours, axis=1).mean() / iod)
    print(f"68-point distance, derived box vs dlib box: mean {np.mean(errs):.4f} of the "
          f"inter-ocular distance (median {np.median(errs):.4f})")


if __name__ == "__main__":
    main()
