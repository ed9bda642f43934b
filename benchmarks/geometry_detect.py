"""Detection rate and throughput of faceanon's MTCNN on LFW.

A hit is a detected face whose box contains the image centre (LFW images are centred on
their subject). Images are decoded up front, so throughput counts detection only; on a
shared machine, images per CPU-second is the steadier figure.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/geometry_detect.py --batch 32
    OMP_NUM_THREADS=2 python benchmarks/geometry_detect.py --limit 300 --batch 1
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from faceanon.detect import Detector
from faceanon.images import load_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FACEANON_SHARED", "../shared"))
    ap.add_argument("--limit", type=int, default=0, help="evenly spaced sample of this many images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=512, help="images decoded at a time")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = sorted(Path(args.shared, "data/lfw/images").glob("*/*.jpg"))
    if args.limit:
        paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    det = Detector(batch_size=args.batch, device=args.device)
    det.detect([load_image(paths[0])])  # warm-up
    hits, faces, seconds, cpu, misses = 0, 0, 0.0, 0.0, []
    for start in range(0, len(paths), args.chunk):
        part = paths[start:start + args.chunk]
        images = [load_image(p) for p in part]
        t0, c0 = time.perf_counter(), time.process_time()
        found = [f for i in range(0, len(images), args.batch)
                 for f in det.detect(images[i:i + args.batch])]
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for p, img, fs in zip(part, images, found):
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            faces += len(fs)
            if any(f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3] for f in fs):
                hits += 1
            else:
                misses.append(p.name)
    n = len(paths)
    print(f"images {n}  centre face found {hits} ({100 * hits / n:.2f} %)  faces {faces}  "
          f"batch {args.batch}  threads {torch.get_num_threads()}  "
          f"{n / seconds:.1f} images/s wall ({1000 * seconds / n:.1f} ms/image), "
          f"{n / cpu:.1f} images per CPU-second; load average {os.getloadavg()[0]:.1f}")
    print("misses:", " ".join(misses[:50]) + (" ..." if len(misses) > 50 else ""))


if __name__ == "__main__":
    main()
