"""How a run's peak memory grows with the images it has seen: the pipeline over rows of an array
archive in batches of 8, one thread, reporting CPU time and the peak RSS (VmHWM) after the
first batch and at the end. Compare settings through the environment, e.g. oneDNN's cache
(faceanon sets 64 unless told otherwise; 1024 is oneDNN's own default):

    python benchmarks/memory_growth.py /work/data/arrays/lfw.h5 --start 3000 --rows 1200
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 python benchmarks/memory_growth.py ... --method kfaar --key k.bin
"""

from __future__ import annotations

import argparse
import json
import os
import time

import h5py
import torch

from faceanon.anonymize import build_anonymizer
from faceanon.datasets import release_free_memory


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive")
    ap.add_argument("--start", type=int, default=3000)
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument("--method", default="blur")
    ap.add_argument("--key", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    anonymizer = build_anonymizer(args.method, args.key)
    with h5py.File(args.archive, "r") as h5:
        images = h5["images"]
        anonymizer.anonymize(list(images[0:8]))
        first, started = peak_rss_mib(), time.process_time()
        for row in range(args.start, args.start + args.rows, 8):
            anonymizer.anonymize(list(images[row:row + 8]))
            release_free_memory()
    print(json.dumps({"method": args.method, "rows": args.rows,
                      "onednn_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"),
                      "cpu_s": round(time.process_time() - started, 1),
                      "peak_rss_mib": [round(first, 1), round(peak_rss_mib(), 1)]}))


if __name__ == "__main__":
    main()
