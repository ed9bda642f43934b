"""FID of a generator against aligned training crops (the figures in weights/README.md).

    python benchmarks/generator_fid.py --weights NAME --data aligned.h5 --n 2000
    python benchmarks/generator_fid.py --run runs/g --data aligned.h5 --n 2000 --ref-cache ref.npz

N images from the generator (seeded latents, psi 1, constant noise) vs min(N, crops) training
crops drawn without replacement and resized to the generator's resolution (area averaging);
both quantised to uint8 and fed to TF-Inception at 299 px. ``--run`` takes the generator a
training run last exported (a chunk's end); ``--ref-cache`` keeps the training crops' Inception
statistics between calls, since they cost as much as the generated side. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from faceanon.fid import InceptionFeatures, Stats, fid, generated_images, reference_stats
from faceanon.models import create_model
from faceanon.training.aligned import load_aligned
from faceanon.nets.stylegan2 import Generator
from faceanon.training.generator import resize_uint8, run_generator


def add_generator_args(ap: argparse.ArgumentParser) -> None:
    """Which generator (a registered one or a run's last export) and the aligned crops it is
    measured against; shared with generator_identities.py."""
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", default=None, help="manifest name (default generator)")
    src.add_argument("--run", type=Path, help="a training run folder (its last export)")
    ap.add_argument("--data", required=True, help="aligned .h5 from `faceanon prepare`")


def chosen_generator(args: argparse.Namespace, device: str = "cpu") -> Generator:
    return (run_generator(args.run, device) if args.run
            else create_model("generator", args.weights, device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generator_args(ap)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--psi", type=float, default=1.0)
    ap.add_argument("--ref-cache", type=Path, help="npz of the training crops' statistics")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t0 = time.time()
    g = chosen_generator(args, args.device)
    extractor = InceptionFeatures(args.device)
    if args.ref_cache and args.ref_cache.exists():
        ref = Stats.load(args.ref_cache)
        if ref.n != args.n:
            raise SystemExit(f"{args.ref_cache}: holds statistics of {ref.n} crops, not {args.n}")
    else:
        real = resize_uint8(load_aligned(args.data).images, g.cfg.resolution)
        ref = reference_stats(real, min(args.n, len(real)), extractor)
        if args.ref_cache:
            ref.save(args.ref_cache)
    value = fid(ref, generated_images(g, args.n, psi=args.psi), extractor)
    print(json.dumps({"weights": args.weights, "run": str(args.run) if args.run else None,
                      "data": args.data, "fid": round(value, 3), "n_generated": args.n,
                      "n_real": ref.n, "psi": args.psi, "resolution": g.cfg.resolution,
                      "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
