"""Throughput and peak memory of a recognizer on aligned crops (default: dlib port, batch 64).

Peak memory is the process's peak resident set (CPU) or torch's peak allocation (CUDA), shown
before loading the network, after loading it and after the timed batches. ``--grad`` also
back-propagates to the input, as the training losses do.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/identity_throughput.py --batches 5
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from faceanon.identity import load_recognizer


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recognizer", default="dlib")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--grad", action="store_true", help="forward + backward to the input")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device(args.device)
    before = peak_mib(device)
    rec = load_recognizer(args.recognizer, device)
    loaded = peak_mib(device)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.batch, rec.height, rec.width, 3), dtype=np.uint8)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(device)

    def step() -> None:
        if args.grad:
            xg = x.clone().requires_grad_(True)
            rec.embed(xg).sum().backward()
        else:
            rec.embed(crops)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.batches):
        step()
    seconds = time.perf_counter() - t0
    print(f"{rec.name} on {device} ({torch.get_num_threads()} thread(s)), batch {args.batch}, "
          f"{'forward+backward' if args.grad else 'inference'}: "
          f"{args.batch * args.batches / seconds:.1f} faces/s "
          f"({1000 * seconds / args.batches:.0f} ms per batch); load average {os.getloadavg()[0]:.1f}")
    print(f"peak memory: {before:.0f} MiB before loading, {loaded:.0f} MiB loaded, "
          f"{peak_mib(device):.0f} MiB after the batches")


if __name__ == "__main__":
    main()
