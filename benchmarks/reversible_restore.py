"""anonymize --reversible and faceanon restore on LFW DevTest: pixel-identical restores, a wrong
key, a flipped payload byte, payload size overhead, restore throughput, and a check that each
payload is ciphertext only (no names, no image data readable without the key).

    python benchmarks/reversible_restore.py --shared ../shared --n 500 --work /work/data/rev

Every step is a `faceanon` command (printed before it runs); inputs are the first N images of
peopleDevTest.txt's people in file order, copied into WORK/in.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from faceanon.datasets import PAYLOAD_SUFFIX
from faceanon.images import load_image
from faceanon.records import read_manifest, read_names
from faceanon.reversible import IMAGE, parse, restored_name


def devtest_images(lfw: Path, n: int) -> list[Path]:
    people = [line.split("\t")[0] for line in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    files = [p for person in people for p in sorted((lfw / "images" / person).glob("*.jpg"))]
    return files[:n]


def faceanon(*args: str, check: bool = True) -> tuple[int, float, str]:
    """Run one command; (exit code, seconds, stderr)."""
    cmd = ["faceanon", *args]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "faceanon", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if check and done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode, seconds, done.stderr


def restored_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def check_restored(src: Path, anon: Path, back: Path) -> tuple[int, int]:
    """(pixel-identical restores, originals written by anonymize)."""
    same = total = 0
    for rec in read_manifest(anon):
        if "output" not in rec:
            continue
        total += 1
        target = back / restored_name(rec["path"])
        same += target.exists() and np.array_equal(load_image(target), load_image(src / rec["path"]))
    return same, total


def ciphertext_only(anon: Path, src: Path) -> dict[str, object]:
    """What a reader without the key finds in the payloads."""
    sidecars = sorted(anon.rglob("*" + PAYLOAD_SUFFIX))
    # Names of 6 or more characters: a shorter one turns up in 30 kB of random bytes by chance.
    names = {n for n in set(read_names(anon)) | {p.stem for p in src.rglob("*.jpg")}
             if len(n) >= 6}
    blobs, headers, name_hits, image_magic = [], 0, 0, 0
    for path in sidecars:
        payload = path.read_bytes()
        records = list(parse(payload))
        headers += len(payload) - sum(len(r[3]) for r in records)
        blobs += [r[3] for r in records]
        lowered = payload.lower()
        name_hits += any(n.lower().encode() in lowered or n.lower().replace("_", " ").encode()
                         in lowered for n in names)
        image_magic += any(m in payload for m in (b"RIFF", b"WEBP", b"\x89PNG", b"\xff\xd8\xff"))
    data = b"".join(blobs)
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    expected = len(data) / 256
    return {"payloads": len(sidecars), "names_checked": len(names),
            "payloads_with_a_name": int(name_hits), "payloads_with_image_magic": int(image_magic),
            "plaintext_header_bytes_per_payload": round(headers / max(len(sidecars), 1), 1),
            "ciphertext_bytes": len(data),
            "lzma_ratio": round(len(lzma.compress(data)) / max(len(data), 1), 4),
            "byte_chi2_255dof": round(float(((counts - expected) ** 2 / expected).sum()), 1)}


def flip_one_face_byte(anon: Path, tampered: Path) -> str:
    """Copy ``anon`` and flip one byte in the first face record of its first payload; returns
    that image's path."""
    shutil.copytree(anon, tampered)
    first = sorted(tampered.rglob("*" + PAYLOAD_SUFFIX))[0]
    payload = bytearray(first.read_bytes())
    sealed = next(r[3] for r in parse(bytes(payload)) if r[0] != IMAGE)
    payload[bytes(payload).find(sealed) + len(sealed) // 2] ^= 0x01
    first.write_bytes(bytes(payload))
    return str(first.relative_to(tampered))[:-len(PAYLOAD_SUFFIX)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceanon-reversible"))
    ap.add_argument("--method", default="kfaar")
    args = ap.parse_args()
    src, key, other = args.work / "in", args.work / "k.bin", args.work / "other.bin"
    if not src.exists():  # else a killed run resumes: anonymize picks up where it stopped
        for f in devtest_images(args.shared / "data" / "lfw", args.n):
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / f.parent.name / f.name)
        faceanon("keygen", "--out", str(key))
        faceanon("keygen", "--out", str(other))
    for done in ("back", "back-wrong", "anon-tampered", "back-tampered"):
        shutil.rmtree(args.work / done, ignore_errors=True)
        shutil.rmtree(args.work / (done + ".private"), ignore_errors=True)
    anon = args.work / "anon"
    _, t_anon, _ = faceanon("anonymize", str(src), "--key", str(key), "--out", str(anon),
                            "--method", args.method, "--reversible", "--device", "cpu")
    back = args.work / "back"
    _, t_restore, _ = faceanon("restore", str(anon), "--key", str(key), "--out", str(back))
    same, total = check_restored(src, anon, back)
    code_wrong, _, err_wrong = faceanon("restore", str(anon), "--key", str(other), "--out",
                                        str(args.work / "back-wrong"), check=False)
    tampered = args.work / "anon-tampered"
    victim = flip_one_face_byte(anon, tampered)
    code_flip, _, err_flip = faceanon("restore", str(tampered), "--key", str(key), "--out",
                                      str(args.work / "back-tampered"), check=False)
    flip_errors = [l for l in err_flip.splitlines() if l.startswith("error:")]
    sizes = np.array([p.stat().st_size for p in anon.rglob("*" + PAYLOAD_SUFFIX)])
    images = np.array([p.stat().st_size for p in anon.rglob("*.jpg")])
    code_audit, _, _ = faceanon("audit", str(anon), check=False)
    result = {
        "images": total, "method": args.method, "anonymize_s": round(t_anon, 1),
        "restored_pixel_identical": f"{same}/{total}",
        "restore_s": round(t_restore, 1), "restore_images_per_s": round(total / t_restore, 1),
        "wrong_key": {"exit": code_wrong, "restored": len(restored_files(args.work / "back-wrong")),
                      "error_lines": sum(l.startswith("error:") for l in err_wrong.splitlines())},
        "flipped_byte": {"image": victim, "exit": code_flip, "error_lines": flip_errors,
                         "restored": len(restored_files(args.work / "back-tampered"))},
        "payload_bytes": {"mean": round(float(sizes.mean())), "max": int(sizes.max()),
                          "published_image_mean": round(float(images.mean())),
                          "overhead_vs_published_mean": round(float(sizes.mean() / images.mean()), 2)},
        "ciphertext_check": ciphertext_only(anon, src),
        "audit_exit": code_audit,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
