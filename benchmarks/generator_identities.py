"""How many different people a generator draws, as dlib sees them (weights/README.md, campaign).

    python benchmarks/generator_identities.py --run runs/g --data aligned.h5 [--n 400] [--psi 0.8]
    python benchmarks/generator_identities.py --weights NAME --data aligned.h5

N faces of the generator (seeded latents) go through dlib's chip path, the one the projector's
losses and KVFA read faces through; over all pairs it prints the mean cosine and the share of
pairs at or above dlib's match threshold (pairs "matched": taken for one person). The control
is N real crops of ``--data``, area-downscaled to the generator's resolution and sent through
the same path, split into pairs of unrelated people and pairs of one person. A generator whose
faces are mostly one person leaves the key projector nothing to move along. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from faceanon.fid import generated_images
from faceanon.identity import Recognizer
from faceanon.models import create_model, registry_entry
from faceanon.training.aligned import load_aligned
from faceanon.training.generator import resize_uint8
from faceanon.training.identity_spread import pair_cosines

from generator_fid import add_generator_args, chosen_generator  # this folder's FID benchmark


def descriptors(recognizer: Recognizer, images: torch.Tensor, template: str) -> torch.Tensor:
    """uint8 crops [N, 3, S, S] on ``template`` → dlib's unit descriptors."""
    with torch.no_grad():
        out = [recognizer.embed(recognizer.chips(b.float() / 255, template))
               for b in images.split(50)]
    return torch.cat(out)


def summary(cos: torch.Tensor, threshold: float) -> dict[str, float]:
    return {"pairs": len(cos), "mean_cosine": round(float(cos.mean()), 4),
            "matched": round(float((cos >= threshold).float().mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generator_args(ap)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--psi", type=float, default=0.8)
    args = ap.parse_args()

    t0 = time.time()
    faces = load_aligned(args.data)
    g = chosen_generator(args)
    template = (faces.template if args.run
                else registry_entry("generator", args.weights)["template"])
    dlib = create_model("recognizer", "dlib", "cpu")
    fake = torch.cat(list(generated_images(g, args.n, psi=args.psi)))
    fake_cos = pair_cosines(descriptors(dlib, fake, template))

    pick = torch.randperm(len(faces.images), generator=torch.Generator().manual_seed(0))[:args.n]
    real = resize_uint8(faces.images[pick.numpy()], g.cfg.resolution)
    real_cos = pair_cosines(descriptors(dlib, real, faces.template))
    labels = torch.as_tensor(faces.labels[pick.numpy()])
    i, j = torch.triu_indices(len(labels), len(labels), 1)
    same = labels[i] == labels[j]
    report = {"weights": args.weights, "run": str(args.run) if args.run else None,
              "n": args.n, "psi": args.psi, "threshold": dlib.match_threshold,
              "generated": summary(fake_cos, dlib.match_threshold),
              "real_unrelated": summary(real_cos[~same], dlib.match_threshold),
              "seconds": round(time.time() - t0, 1)}
    if same.any():
        report["real_same_person"] = summary(real_cos[same], dlib.match_threshold)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
