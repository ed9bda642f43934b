"""Pack a folder, unpack it, and check every image is pixel-identical; prints times and sizes.

    python benchmarks/pack_roundtrip.py ../shared/data/lfw/images [--work /tmp/pack-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from faceanon.images import load_image, is_image_name


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceanon-pack-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    archive, back = args.work / "set.h5", args.work / "back"
    cli = [sys.executable, "-m", "faceanon"]
    t_pack = timed(cli + ["pack", str(args.folder), str(archive)])
    t_unpack = timed(cli + ["unpack", str(archive), str(back)])
    originals = sorted(p for p in args.folder.rglob("*") if p.is_file() and is_image_name(p.name))
    mismatched = [str(p) for p in originals
                  if not np.array_equal(load_image(p), load_image(back / p.relative_to(args.folder)))]
    input_bytes = sum(p.stat().st_size for p in originals)
    print(json.dumps({"images": len(originals), "pixel_identical": len(originals) - len(mismatched),
                      "mismatched": mismatched[:10], "pack_s": round(t_pack, 1),
                      "unpack_s": round(t_unpack, 1), "input_mb": round(input_bytes / 2**20, 1),
                      "archive_mb": round(archive.stat().st_size / 2**20, 1)}))


if __name__ == "__main__":
    main()
