"""FID of a shipped generator against aligned training crops (the figure in weights/README.md).

    python benchmarks/generator_fid.py --weights NAME --data aligned.h5 --n 1000

N images from the generator (seeded latents, psi 1, constant noise) vs min(N, crops) training
crops drawn without replacement and resized to the generator's resolution (area averaging);
both quantised to uint8 and fed to TF-Inception at 299 px. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time


from faceanon.fid import InceptionFeatures, fid, generated_images, reference_stats
from faceanon.nets.stylegan2 import pretrained_generator
from faceanon.training.aligned import load_aligned
from faceanon.training.generator import resize_uint8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="manifest name (default generator if omitted)")
    ap.add_argument("--data", required=True, help="aligned .h5 from `faceanon prepare`")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--psi", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t0 = time.time()
    g = pretrained_generator(args.weights, args.device)
    real = resize_uint8(load_aligned(args.data).images, g.cfg.resolution)
    extractor = InceptionFeatures(args.device)
    n_real = min(args.n, len(real))
    value = fid(reference_stats(real, n_real, extractor),
                generated_images(g, args.n, psi=args.psi), extractor)
    print(json.dumps({"weights": args.weights, "data": args.data, "fid": round(value, 3),
                      "n_generated": args.n, "n_real": n_real, "psi": args.psi,
                      "resolution": g.cfg.resolution, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
