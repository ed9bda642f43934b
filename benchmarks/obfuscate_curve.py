"""--method obfuscate over strengths, and --method blur, on LFW DevTest: the independent
evaluator's match rate to the original (1 - anonymity, at its LFW EER threshold) and the SSIM
of each face region to the original's.

    python benchmarks/obfuscate_curve.py --shared ../shared --n 60 --strengths 0.5,0.75,1.0 \
        --eval-recognizer mobilefacenet:../shared/models/mobilefacenet/068.ckpt --work /work/data/obf

The evaluator only measures here; nothing in faceanon.obfuscate was fitted to it. SSIM: 8-bit
grey levels, Gaussian window (sigma 1.5, 11 px), over the detector's box of each face (as the
manifest records it), averaged per face.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from faceanon.images import load_image
from faceanon.records import read_manifest


def devtest_images(lfw: Path, n: int) -> list[Path]:
    """The first image of each of the first ``n`` people of peopleDevTest.txt."""
    people = [line.split("\t")[0] for line in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    return [sorted((lfw / "images" / p).glob("*.jpg"))[0] for p in people[:n]]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of two RGB images' grey levels."""
    x, y = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float64) for im in (a, b))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) /
                  ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())


def face_ssim(src: Path, anon: Path) -> list[float]:
    values = []
    for rec in read_manifest(anon):
        if rec.get("status") != "ok":
            continue
        original, output = load_image(src / rec["path"]), load_image(anon / rec["output"])
        h, w = original.shape[:2]
        for face in rec["faces"]:
            x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if x2 - x1 >= 11 and y2 - y1 >= 11:
                values.append(ssim(original[y1:y2, x1:x2], output[y1:y2, x1:x2]))
    return values


def faceanon(*args: str) -> str:
    print("$ faceanon", " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "faceanon", *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--strengths", default="0.5,0.75,1.0")
    ap.add_argument("--eval-recognizer", required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceanon-obfuscate"))
    args = ap.parse_args()
    src, key = args.work / "in", args.work / "k.bin"
    if not src.exists():
        for f in devtest_images(args.shared / "data" / "lfw", args.n):
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / f.parent.name / f.name)
        faceanon("keygen", "--out", str(key), "--force")
    runs = [(f"obfuscate {s}", ["--method", "obfuscate", "--strength", s])
            for s in args.strengths.split(",")] + [("blur", ["--method", "blur"])]
    rows = []
    for name, options in runs:
        out = args.work / name.replace(" ", "-")
        done = out.with_name(out.name + ".result.json")  # a finished run is not measured again
        if done.exists():
            rows.append(json.loads(done.read_text()))
            continue
        faceanon("anonymize", str(src), "--key", str(args.work / "k.bin"), "--out", str(out),
                 *options, "--device", "cpu")
        report = json.loads(faceanon("eval", str(out), "--eval-recognizer", args.eval_recognizer,
                                     "--no-fid", "--json").splitlines()[-1])
        values = face_ssim(src, out)
        flagged = sum(1 for rec in read_manifest(out) for f in rec.get("faces", []) if "flag" in f)
        rows.append({"run": name, "faces": report["faces"],
                     "match_rate": round(1 - report["anonymity"], 3),
                     "match_rate_main_faces": round(1 - report["anonymity_main_faces"], 3),
                     "cosine_mean": round(report["cosine_to_original"]["mean"], 3),
                     "threshold": report["recognizer"]["threshold"],
                     "ssim_mean": round(float(np.mean(values)), 3),
                     "ssim_max": round(float(np.max(values)), 3),
                     "flagged_by_post_check": flagged})
        done.write_text(json.dumps(rows[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
