"""Contact sheets of a method on examples/images: each row is an original beside its output
under one or more keys (two keys show whether the virtual person changes with the key).

    python benchmarks/contact_sheet.py                       # the README's main job (kfaar), 2 keys
    python benchmarks/contact_sheet.py --method obfuscate --strength 0.75 --keys 1 \
        --out examples/obfuscate_contact_sheet.jpg

Runs `faceanon anonymize examples/images --keep-names` into a temporary folder under fixed demo
keys (bytes 0..31, then 32..63, ...) and puts every image with a face beside its outputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from faceanon import keys
from faceanon.images import load_image, save_image
from faceanon.records import read_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
ROW_HEIGHT = 320


def row(*images: np.ndarray) -> np.ndarray:
    scaled = [cv2.resize(im, (round(im.shape[1] * ROW_HEIGHT / im.shape[0]), ROW_HEIGHT),
                         interpolation=cv2.INTER_AREA) for im in images]
    gap = np.full((ROW_HEIGHT, 8, 3), 255, np.uint8)
    parts = [scaled[0]]
    for image in scaled[1:]:
        parts += [gap, image]
    return np.concatenate(parts, axis=1)


def anonymized(tmp: Path, method: str, strength: str | None, k: int) -> dict[str, Path]:
    """Input path → output file of the examples under demo key ``k``, for the images with a
    face."""
    key, out = tmp / f"demo{k}.key", tmp / f"out{k}"
    keys.save(keys.Key(bytes((32 * k + i) % 256 for i in range(32)), 0), key)
    subprocess.run([sys.executable, "-m", "faceanon", "anonymize", str(EXAMPLES), "--key",
                    str(key), "--out", str(out), "--method", method, "--keep-names",
                    "--device", "cpu", *(["--strength", strength] if strength else [])],
                   check=True)
    return {rec["path"]: out / rec["output"] for rec in read_manifest(out)
            if rec["status"] == "ok"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="kfaar")
    ap.add_argument("--strength", default=None)
    ap.add_argument("--keys", type=int, default=2)
    ap.add_argument("--out", type=Path, default=EXAMPLES.parent / "main_job_contact_sheet.jpg")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [anonymized(Path(tmp), args.method, args.strength, k) for k in range(args.keys)]
        rows = [row(load_image(EXAMPLES / path), *(load_image(o[path]) for o in outputs))
                for path in sorted(outputs[0])]
    if not rows:
        raise SystemExit(f"no face found in {EXAMPLES}")
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]
    save_image(args.out, np.concatenate(padded))
    print(f"wrote {args.out} ({len(rows)} images with faces, {args.keys} keys)")


if __name__ == "__main__":
    main()
