"""Time per pipeline stage on the same LFW images, in one run, so the figures read as ratios.

Stages: decode (JPEG → RGB), detect (MTCNN, batched), align (5-point similarity warp onto the
recognizer's template), recognize (dlib ResNet embeddings), FID features (TF-Inception on the
generator's 128 px crops), and detect+blur end to end (decode → detect → blur each face box →
JPEG encode: the classical baseline that every other method is compared with). Models are
loaded and warmed up before timing. Peak memory: the process's maximum resident set
(``getrusage``, all stages together) and, on CUDA, ``torch.cuda.max_memory_allocated`` per stage.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/throughput.py --images 100 --threads 1
    python benchmarks/throughput.py --images 500 --device cuda --json /tmp/throughput_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceanon.align import align
from faceanon.obscure import obscure
from faceanon.detect import Detector
from faceanon.fid import InceptionFeatures
from faceanon.identity import load_recognizer
from faceanon.images import encode, read_file
from faceanon.images import decode as decode_bytes


def lfw_sample(shared: Path, n: int) -> list[Path]:
    """``n`` LFW images spread evenly over the sorted list (many people, not one)."""
    paths = sorted((shared / "data" / "lfw" / "images").glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no LFW images under {shared}/data/lfw/images (set --shared)")
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any, int | None]:
    """(seconds, result, peak CUDA bytes or None) of one call, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return seconds, out, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def run(paths: list[Path], device: torch.device, batch: int) -> dict[str, Any]:
    detector = Detector(device=device, batch_size=batch)
    recognizer = load_recognizer("dlib", device)
    inception = InceptionFeatures(device)
    blobs = [read_file(p) for p in paths]

    def detect_all(images: list[np.ndarray]) -> list[list[Any]]:
        return [faces for s in range(0, len(images), batch)
                for faces in detector.detect(images[s:s + batch])]

    def end_to_end() -> int:
        written = 0
        for s in range(0, len(blobs), batch):
            images = [decode_bytes(b, p.name) for b, p in zip(blobs[s:s + batch], paths[s:s + batch])]
            for image, faces, p in zip(images, detector.detect(images), paths[s:s + batch]):
                boxes = np.array([f.box for f in faces]).reshape(-1, 4)
                written += len(encode(obscure(image, boxes, None), p.name))
        return written

    # Warm-up: first calls allocate buffers and pick kernels.
    warm = [decode_bytes(b, p.name) for b, p in zip(blobs[:2], paths[:2])]
    warm_faces = detector.detect(warm)
    marks = np.array([f.landmarks5 for f in warm_faces[0]]).reshape(-1, 5, 2)
    recognizer.embed_faces(warm[0], marks)
    inception(align(warm[0], marks, "faceanon", 128)[0])

    stages: dict[str, tuple[float, int | None]] = {}
    t, images, mem = timed(device, lambda: [decode_bytes(b, p.name) for b, p in zip(blobs, paths)])
    stages["decode"] = (t, mem)
    t, faces, mem = timed(device, lambda: detect_all(images))
    stages["detect (MTCNN)"] = (t, mem)
    owners = [(im, np.array([f.landmarks5 for f in fs]).reshape(-1, 5, 2)) for im, fs in zip(images, faces)]
    n_faces = sum(len(m) for _, m in owners)
    t, crops, mem = timed(device, lambda: np.concatenate(
        [align(im, m, recognizer.template, recognizer.width, recognizer.height)[0] for im, m in owners]))
    stages["align"] = (t, mem)
    t, _, mem = timed(device, lambda: recognizer.embed(crops))
    stages["recognize (dlib)"] = (t, mem)
    fid_crops = np.concatenate([align(im, m, "faceanon", 128)[0] for im, m in owners])
    t, _, mem = timed(device, lambda: inception(fid_crops))
    stages["FID features (TF-Inception)"] = (t, mem)
    t, _, mem = timed(device, end_to_end)
    stages["detect+blur end to end"] = (t, mem)

    ref = stages["detect+blur end to end"][0]
    return {"device": str(device), "images": len(paths), "faces": n_faces, "batch": batch,
            "threads": torch.get_num_threads(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "stages": [{"stage": name, "seconds": round(sec, 3),
                        "ms_per_image": round(1000 * sec / len(paths), 2),
                        "images_per_s": round(len(paths) / sec, 2),
                        "x_detect_blur": round(sec / ref, 3),
                        "cuda_peak_mib": None if mem is None else round(mem / 2 ** 20, 1)}
                       for name, (sec, mem) in stages.items()]}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['device']}: {result['images']} LFW images, {result['faces']} faces, "
             f"batch {result['batch']}, {result['threads']} threads, peak RSS "
             f"{result['peak_rss_mib']} MiB", "",
             "| stage | ms / image | images / s | × detect+blur | CUDA peak MiB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for s in result["stages"]:
        lines.append(f"| {s['stage']} | {s['ms_per_image']} | {s['images_per_s']} | "
                     f"{s['x_detect_blur']} | {s['cuda_peak_mib'] if s['cuda_peak_mib'] is not None else '–'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("FACEANON_SHARED", "../shared")))
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, then cuda if available)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    paths = lfw_sample(args.shared, args.images)
    results = []
    for d in devices:
        results.append(run(paths, torch.device(d), args.batch))
        print(markdown(results[-1]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
