"""Contact sheet of --method obfuscate on examples/images: each row original | obfuscated.

    python benchmarks/obfuscate_sheet.py [--strength 0.75] [--out examples/obfuscate_contact_sheet.jpg]

Runs `faceanon anonymize examples/images --method obfuscate --keep-names` into a temporary
folder under a fixed demo key and puts every image with a face beside its original.
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
    return np.concatenate([scaled[0], gap, *scaled[1:]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strength", default="0.75")
    ap.add_argument("--out", type=Path, default=EXAMPLES.parent / "obfuscate_contact_sheet.jpg")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key, out = Path(tmp) / "demo.key", Path(tmp) / "out"
        keys.save(keys.Key(bytes(range(32)), 0), key)
        subprocess.run([sys.executable, "-m", "faceanon", "anonymize", str(EXAMPLES), "--key",
                        str(key), "--out", str(out), "--method", "obfuscate", "--strength",
                        args.strength, "--keep-names", "--device", "cpu"], check=True)
        rows = [row(load_image(EXAMPLES / rec["path"]), load_image(out / rec["output"]))
                for rec in read_manifest(out) if rec["status"] == "ok"]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]
    save_image(args.out, np.concatenate(padded))
    print(f"wrote {args.out} ({len(rows)} faces)")


if __name__ == "__main__":
    main()
