"""Array archives (issue 18) on LFW: build the archives, compare an output with its input, run
a job under /usr/bin/time -v, and kill a job midway and resume it.

    python benchmarks/arrays_lfw.py build --lfw ../shared/data/lfw --out /work/data/arrays
    python benchmarks/arrays_lfw.py compare IN.h5 OUT.h5
    python benchmarks/arrays_lfw.py memory IN.h5 OUT.h5 --method blur|copy
    python benchmarks/arrays_lfw.py kill-resume IN.h5 OUT.h5 --method blur --after 150

``build`` writes (outside the repository): ``lfw.h5`` — all 13,233 images as (N, 250, 250, 3)
uint8 in gzip-compressed chunks of 16 rows, ``labels`` from the folder names, ``person_id``
ints and attributes; ``lfw1000.h5`` — its first 1,000 rows, same layout; ``lfw_nchw112.h5`` —
300 images resized to 112 px as (N, 3, 112, 112) float32 in [-1, 1]; ``lfw_gray.h5`` — 300
images as (N, 250, 250) uint8 grayscale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceanon.images import load_image  # noqa: E402


def lfw_files(lfw: Path) -> list[Path]:
    root = lfw / "images" if (lfw / "images").is_dir() else lfw
    return sorted(root.glob("*/*.jpg"))


def write_archive(path: Path, files: list[Path], convert, row_shape: tuple[int, ...],
                  dtype: str, chunk_rows: int, attrs: dict) -> None:
    """Stream ``files`` through ``convert`` into an ML-style archive, a chunk at a time."""
    names = sorted({f.parent.name for f in files})
    ids = {n: i for i, n in enumerate(names)}
    tmp = path.with_name(path.name + ".building")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["description"] = "LFW as an array archive (faceanon benchmark)"
        h5.attrs["source"] = "http://vis-www.cs.umass.edu/lfw/"
        images = h5.create_dataset("images", (len(files), *row_shape), dtype=dtype,
                                   chunks=(chunk_rows, *row_shape), compression="gzip",
                                   compression_opts=4)
        for k, v in attrs.items():
            images.attrs[k] = v
        h5.create_dataset("labels", data=[f.parent.name for f in files],
                          dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("person_id", data=np.array([ids[f.parent.name] for f in files], np.int32))
        h5.create_dataset("label_names", data=names, dtype=h5py.string_dtype("utf-8"))
        for start in range(0, len(files), chunk_rows):
            part = files[start:start + chunk_rows]
            images[start:start + len(part)] = np.stack([convert(load_image(f)) for f in part])
    os.replace(tmp, path)


def build(lfw: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = lfw_files(lfw)
    t0 = time.time()
    write_archive(out / "lfw.h5", files, lambda im: im, (250, 250, 3), "uint8", 16,
                  {"layout": "NHWC", "channels": "RGB"})
    write_archive(out / "lfw1000.h5", files[:1000], lambda im: im, (250, 250, 3), "uint8", 16,
                  {"layout": "NHWC", "channels": "RGB"})
    every = files[::len(files) // 300][:300]
    write_archive(out / "lfw_nchw112.h5", every,
                  lambda im: np.moveaxis(cv2.resize(im, (112, 112), interpolation=cv2.INTER_AREA)
                                         .astype(np.float32) / 127.5 - 1, -1, 0),
                  (3, 112, 112), "float32", 32, {"layout": "NCHW", "normalisation": "x/127.5-1"})
    write_archive(out / "lfw_gray.h5", every,
                  lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (250, 250), "uint8", 8,
                  {"layout": "NHW", "channels": "L"})
    print(json.dumps({"built": [str(p) for p in sorted(out.glob("*.h5"))], "images": len(files),
                      "seconds": round(time.time() - t0, 1)}))


def loader(path: Path) -> dict:
    """What a training pipeline does: find the arrays by name, read a batch, read the labels."""
    with h5py.File(path, "r") as h5:
        images, labels = h5["images"], h5["labels"]
        batch = images[:32]
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in labels[:32]]
        return {"images": (images.shape, str(images.dtype), images.chunks, images.compression,
                           images.compression_opts, dict(images.attrs)),
                "batch": (batch.shape, str(batch.dtype), float(batch.min()), float(batch.max())),
                "labels": (labels.shape, str(labels.dtype), type(names[0]).__name__),
                # Values differ when names are pseudonymized, which is the point: the loader's
                # code reads them the same way.
                "label_values": names}


def compare(a: Path, b: Path) -> dict:
    """Every object of ``a`` in ``b`` with the same shape, dtype, chunks, filters, fill and
    attributes; values equal except the images; and the loader's view of both."""
    diffs: list[str] = []
    changed_rows, changed_values = 0, 0
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        names_x, names_y = [], []
        x.visit(names_x.append)
        y.visit(names_y.append)
        if names_x != names_y:
            diffs.append(f"objects {names_x} != {names_y}")
        if {k: str(v) for k, v in x.attrs.items()} != {k: str(v) for k, v in y.attrs.items()}:
            diffs.append("root attributes")
        for name in names_x:
            p, q = x[name], y.get(name)
            if q is None:
                continue
            if {k: str(v) for k, v in p.attrs.items()} != {k: str(v) for k, v in q.attrs.items()}:
                diffs.append(f"{name}: attributes")
            if not isinstance(p, h5py.Dataset):
                continue
            props = lambda d: (d.shape, d.dtype, d.chunks, d.compression,  # noqa: E731
                               d.compression_opts, d.shuffle, d.fillvalue, d.maxshape)
            if props(p) != props(q):
                diffs.append(f"{name}: {props(p)} != {props(q)}")
            if name == "images":
                step = p.chunks[0] if p.chunks else 64
                for s in range(0, p.shape[0], step):
                    changed = (p[s:s + step] != q[s:s + step]).reshape(len(p[s:s + step]), -1)
                    changed_rows += int(changed.any(1).sum())
                    changed_values += int(changed.sum())
            elif not np.array_equal(p[()], q[()]):
                diffs.append(f"{name}: values differ")
        rows, size = x["images"].shape[0], x["images"].size
    view_a, view_b = loader(a), loader(b)
    same_loader = all(view_a[k] == view_b[k] for k in ("images", "labels"))
    return {"input": str(a), "output": str(b), "differences": diffs,
            "image_rows_changed": changed_rows, "rows": rows,
            "image_values_bit_identical": round(1 - changed_values / max(1, size), 4),
            "loader_sees_same_layout": same_loader, "loader_output": str(view_b["images"][:2]),
            "labels_in": view_a["label_values"][:3], "labels_out": view_b["label_values"][:3]}


def copy_job(src: Path, out: Path) -> dict:
    """The array data path alone, without models: every row read, through the pipeline's BMP
    round trip and the staging log, and written back (what grows with N, if anything does)."""
    from faceanon import datasets

    job = datasets.Job("copy", datasets.open_input(src), out)
    return job.run(datasets.copy_step)


def faceanon_cmd(src: Path, out: Path, method: str, key: Path | None) -> list[str]:
    if method == "copy":
        return [sys.executable, __file__, "copy", str(src), str(out)]
    cmd = [sys.executable, "-m", "faceanon", "anonymize", str(src), "--out", str(out),
           "--method", method, "--device", "cpu"]
    return cmd + (["--key", str(key)] if key else [])


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def memory(src: Path, out: Path, method: str, key: Path | None) -> dict:
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", *faceanon_cmd(src, out, method, key)],
                          capture_output=True, text=True, env=env())
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"input": str(src), "method": method, "exit": proc.returncode,
            "seconds": round(time.time() - t0, 1), "stdout": proc.stdout.strip()[-300:],
            "max_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None}


def manifest_paths(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(x)["path"] for x in path.read_text().splitlines() if x.endswith("}")]


def kill_resume(src: Path, out: Path, method: str, key: Path | None, after: int) -> dict:
    """SIGKILL the CLI once ``after`` rows are in the manifest, then resume in this process
    with the same method, counting which rows the resumed run processes."""
    from faceanon.anonymize import build_anonymizer, run_anonymize

    manifest = out.with_name(out.name + ".private") / "manifest.jsonl"
    proc = subprocess.Popen(faceanon_cmd(src, out, method, key), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(manifest_paths(manifest)) < after:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = manifest_paths(manifest)
    archive_after_kill = out.exists()
    anonymizer = build_anonymizer(method, key, device="cpu")
    calls: list[str] = []
    step = anonymizer.step

    def counting(entries):
        calls.extend(e.relpath for e in entries)
        return step(entries)

    anonymizer.step = counting  # type: ignore[method-assign]
    _, counts = run_anonymize(src, out, anonymizer)
    rows = len(manifest_paths(manifest))
    return {"input": str(src), "method": method, "killed_with_rows_done": len(set(done_before)),
            "archive_existed_after_kill": archive_after_kill,
            "rows_processed_by_rerun": len(calls), "distinct": len(set(calls)),
            "redone_after_resume": len(set(calls) & set(done_before)),
            "rows_in_manifest": rows, "every_row_exactly_once":
                not set(calls) & set(done_before) and len(calls) == len(set(calls))
                and len(set(calls) | set(done_before)) == rows,
            "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "data" / "lfw")
    b.add_argument("--out", type=Path, default=Path("/work/data/arrays"))
    c = sub.add_parser("compare")
    c.add_argument("input", type=Path)
    c.add_argument("output", type=Path)
    for name in ("memory", "kill-resume", "copy"):
        p = sub.add_parser(name)
        p.add_argument("input", type=Path)
        p.add_argument("output", type=Path)
        p.add_argument("--method", default="blur", help="an anonymize method, or copy (memory: "
                       "the data path without models)")
        p.add_argument("--key", type=Path)
        if name == "kill-resume":
            p.add_argument("--after", type=int, default=100)
    args = parser.parse_args()
    if args.what == "build":
        build(args.lfw, args.out)
        return
    if args.what == "compare":
        result = compare(args.input, args.output)
    elif args.what == "copy":
        result = copy_job(args.input, args.output)
    elif args.what == "memory":
        result = memory(args.input, args.output, args.method, args.key)
    else:
        result = kill_resume(args.input, args.output, args.method, args.key, args.after)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
