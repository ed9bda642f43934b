"""Alignment accuracy, paste-back round trip, a composite contact sheet, a large multi-face
photo and a no-face photo, all on LFW.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/geometry_composite.py --n 300

- alignment: mean distance (px in the 128-px crop) between the ``faceanon`` template points
  and the 5 landmarks MTCNN re-detects on the aligned crops;
- round trip: align, paste the unchanged crop back (colour matching on), PSNR inside the face
  region (where the paste mask is above 0.5) against the original;
- contact sheet: 16 pairs (original | another person's aligned face pasted in) → --sheet;
- large photo: LFW faces upscaled and tiled (some overlapping, some cut by the border) onto a
  3,600 x 2,700 canvas, every face replaced → --large;
- no face: a synthetic scene, detection count and the default no-face policy → --noface;
  optionally a real photo without people (--noface-photo), as is and enlarged.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from faceanon.align import align, template_points
from faceanon.composite import (DEFAULT_NO_FACE_POLICY, apply_no_face_policy, ellipse_mask, paste,
                                paste_faces)
from faceanon.detect import Detector, detect_and_align
from faceanon.images import load_image, save_image


def centre_face(det: Detector, img: np.ndarray):
    cy, cx = img.shape[0] / 2, img.shape[1] / 2
    for f in det(img):
        if f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3]:
            return f
    return None


def psnr_in(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2)[region].mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def alignment_and_round_trip(det: Detector, paths: list[Path], size: int,
                             template: str = "faceanon") -> None:
    ref = template_points(template, size)
    dists, psnrs, missed = [], [], 0
    mask = ellipse_mask(template, size)
    for p in paths:
        img = load_image(p)
        f = centre_face(det, img)
        if f is None:
            missed += 1
            continue
        crops, mats = align(img, f.landmarks5[None], template, size)
        again = [g for g in det(crops[0]) if g.box[0] < size / 2 < g.box[2]]
        if again:
            dists.append(np.linalg.norm(again[0].landmarks5 - ref, axis=1).mean())
        else:
            missed += 1
        back = paste(img, crops[0], mats[0], template=template)
        region = cv2.warpAffine(mask, mats[0], img.shape[1::-1],
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) > 0.5
        psnrs.append(psnr_in(back, img, region))
    print(f"alignment: {len(dists)} faces, mean landmark distance to the template "
          f"{np.mean(dists):.2f} px at {size} px (median {np.median(dists):.2f}, "
          f"95th pct {np.percentile(dists, 95):.2f}); not re-detected {missed}")
    print(f"round trip at {size} px: PSNR inside the face region mean {np.mean(psnrs):.2f} dB, "
          f"min {np.min(psnrs):.2f} dB, {100 * np.mean(np.asarray(psnrs) >= 35):.1f} % of "
          f"{len(psnrs)} faces at or above 35 dB")


def contact_sheet(det: Detector, paths: list[Path], out: Path) -> None:
    people = {}
    for p in paths:
        people.setdefault(p.parent.name, p)
    chosen = list(people.values())[:32]
    targets, donors = chosen[:16], chosen[16:32]
    tiles = []
    for t, d in zip(targets, donors):
        img = load_image(t)
        faces, _, mats = detect_and_align(img, det)
        _, donor_crops, _ = detect_and_align(load_image(d), det)
        if not faces or not len(donor_crops):
            continue
        comp = paste(img, donor_crops[0], mats[0])
        tiles.append(np.concatenate([img, comp], axis=1))
    rows = [np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles) - 3, 4)]
    save_image(out, np.concatenate(rows, axis=0))
    print(f"contact sheet: {len(tiles)} pairs (original | other person's face pasted) → {out}")


def large_photo(det: Detector, paths: list[Path], out: Path) -> None:
    rng = np.random.default_rng(0)
    canvas = np.full((2700, 3600, 3), 90, np.uint8)
    canvas[:] = cv2.resize(load_image(paths[7]), (3600, 2700), interpolation=cv2.INTER_CUBIC) // 3
    spots = [(0, 0, 900), (-150, 1000, 700), (300, 2000, 1100), (1500, 300, 600),
             (1350, 1400, 1000), (1800, 2700, 1000), (2100, -200, 800)]  # (y, x, side)
    for (y, x, side), p in zip(spots, paths[100::211]):
        tile = cv2.resize(load_image(p), (side, side), interpolation=cv2.INTER_CUBIC)
        ys, xs = slice(max(y, 0), min(y + side, 2700)), slice(max(x, 0), min(x + side, 3600))
        canvas[ys, xs] = tile[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
    donors = [detect_and_align(load_image(p), det)[1][0] for p in paths[50::300][:20]]
    t0 = time.perf_counter()
    faces, _, mats = detect_and_align(canvas, det)
    t1 = time.perf_counter()
    crops = np.stack([donors[int(rng.integers(len(donors)))] for _ in faces])
    result = paste_faces(canvas, crops, mats)
    t2 = time.perf_counter()
    save_image(out, result)
    print(f"large photo {canvas.shape[1]}x{canvas.shape[0]}: {len(faces)} faces "
          f"(7 placed, some overlapping or cut by the border; scores "
          f"{[round(f.score, 3) for f in faces]}); detect+align {t1 - t0:.1f} s, "
          f"paste {t2 - t1:.2f} s → {out}")


def no_face_photo(det: Detector, path: Path) -> None:
    """A real photo without people, at its size and enlarged to 3,000 px high."""
    img = load_image(path)
    big = cv2.resize(img, (img.shape[1] * 3000 // img.shape[0], 3000), interpolation=cv2.INTER_CUBIC)
    for name, im in (("original", img), ("enlarged", big)):
        faces = det(im)
        print(f"no-face photo {path.name} {name} {im.shape[1]}x{im.shape[0]}: {len(faces)} faces "
              f"(scores {[round(f.score, 3) for f in faces]})")


def no_face(det: Detector, out: Path) -> None:
    rng = np.random.default_rng(1)
    img = np.zeros((1200, 1600, 3), np.uint8)
    img[:] = np.linspace(60, 200, 1600)[None, :, None].astype(np.uint8)
    for _ in range(40):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(0, 1500, 2))
        cv2.rectangle(img, (x, y % 1100), (x + int(rng.integers(20, 300)), y % 1100 + 80), c, -1)
    cv2.putText(img, "no face here", (200, 600), cv2.FONT_HERSHEY_SIMPLEX, 4, (20, 20, 20), 8)
    faces = det(img)
    result = apply_no_face_policy(img, DEFAULT_NO_FACE_POLICY)
    save_image(out, np.concatenate([img, result], axis=1))
    print(f"no-face photo 1600x1200: {len(faces)} faces; default policy "
          f"{DEFAULT_NO_FACE_POLICY!r} applied → {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--template", default="faceanon", help="crop template (faceanon or face)")
    ap.add_argument("--round-trip-only", action="store_true",
                    help="only the alignment and round-trip figures")
    ap.add_argument("--sheet", type=Path, default=Path("/tmp/geometry_sheet.png"))
    ap.add_argument("--large", type=Path, default=Path("/tmp/geometry_large.jpg"))
    ap.add_argument("--noface", type=Path, default=Path("/tmp/geometry_noface.jpg"))
    ap.add_argument("--noface-photo", type=Path, help="a real photo without faces to check too")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = sorted(Path(args.shared, "data/lfw/images").glob("*/*.jpg"))
    sample = paths[:: max(1, len(paths) // args.n)][: args.n]
    det = Detector()
    if args.round_trip_only:
        alignment_and_round_trip(det, sample, args.size, args.template)
        return
    contact_sheet(det, paths[::37], args.sheet)
    alignment_and_round_trip(det, sample, args.size, args.template)
    large_photo(det, paths, args.large)
    no_face(det, args.noface)
    if args.noface_photo:
        no_face_photo(det, args.noface_photo)


if __name__ == "__main__":
    main()
