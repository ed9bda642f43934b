"""Video throughput and quality: frames per second at 480p for each method, against the same
frames anonymized as separate images, and the evaluator's figures on the output.

For each method the clip is anonymized whole (``VideoAnonymizer``: detect and track, identity
codes, replace, encode with the audio copied), then its decoded frames are anonymized one by one
as images (``Anonymizer.anonymize``, no tracking, no encoding); the ratio is video frames/s over
image frames/s. Models are loaded (and warmed up on one frame) before timing. The output is then
measured by ``faceanon.evaluation.video`` with an independent recognizer when one is at hand
(MobileFaceNet from ../shared/models), else dlib (the pipeline's own post-check network).

Without ``--clip`` a synthetic 640 x 480 clip is used (tests/clips.py: the public-domain
astronaut photo moving and growing across a textured background, 25 frames/s, with a tone).

    OMP_NUM_THREADS=1 python benchmarks/video_bench.py --frames 50 --methods blur,kfaar
    python benchmarks/video_bench.py --clip talking_head.mp4 --json /tmp/video_bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic clip maker

from clips import face_frames, write_clip  # noqa: E402

from faceanon import keys, video  # noqa: E402
from faceanon.anonymize import Anonymizer, build_anonymizer  # noqa: E402
from faceanon.anonymize_video import VideoAnonymizer  # noqa: E402
from faceanon.evaluation.video import ClipPair, evaluate_clips  # noqa: E402
from faceanon.models import create_model  # noqa: E402

MOBILEFACENET = REPO.parent / "shared" / "models" / "mobilefacenet" / "068.ckpt"
BENCH_KEY = keys.Key(bytes(range(32)), 0)  # fixed, so runs compare


def as_images(anonymizer: Anonymizer, data: bytes, name: str) -> tuple[float, int]:
    """Seconds to anonymize the clip's frames as separate images, and the frame count."""
    frames = [rgb for _, rgb in video.read_frames(data, name)]
    started = time.perf_counter()
    for rgb in frames:
        anonymizer.anonymize([rgb])
    return time.perf_counter() - started, len(frames)


def bench(method: str, clip: Path, evaluator: dict[str, Any], work: Path) -> dict[str, Any]:
    anonymizer = build_anonymizer(method, BENCH_KEY)
    data = clip.read_bytes()
    anonymizer.anonymize([next(video.read_frames(data, clip.name))[1]])  # warm-up
    started = time.perf_counter()
    encoded, report = VideoAnonymizer(anonymizer).anonymize(data, clip.name)
    seconds = time.perf_counter() - started
    image_seconds, frames = as_images(anonymizer, data, clip.name)
    out = work / f"{method}{clip.suffix}"
    out.write_bytes(encoded or b"")
    figures = evaluate_clips([ClipPair(clip.name, clip, out, {})], **evaluator)["clips"]
    return {"method": method, "frames": frames, "video_fps": frames / seconds,
            "image_fps": frames / image_seconds, "ratio_video_to_images": image_seconds / seconds,
            "run": {k: v for k, v in vars(report).items() if k != "flags"},
            "eval": {k: v for k, v in figures[clip.name].items() if k != "frames_per_second"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, help="clip to measure (default: synthetic 480p)")
    parser.add_argument("--frames", type=int, default=50, help="frames of the synthetic clip")
    parser.add_argument("--methods", default="blur,kfaar")
    parser.add_argument("--eval-recognizer", default=None,
                        help="dlib | mobilefacenet:CKPT (default: MobileFaceNet from "
                             "../shared/models when present, else dlib)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    spec = args.eval_recognizer or (f"mobilefacenet:{MOBILEFACENET}" if MOBILEFACENET.is_file()
                                    else "dlib")
    from faceanon.detect import Detector

    recognizer = create_model("recognizer", spec)
    evaluator = {"detector": Detector(), "recognizer": recognizer,
                 "threshold": recognizer.match_threshold}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = args.clip or write_clip(work / "synthetic.mp4",
                                       face_frames(args.frames, size=(640, 480), face=220))
        results = {"clip": str(args.clip or "synthetic 640x480"), "evaluator": recognizer.name,
                   "methods": [bench(m, clip, evaluator, work) for m in args.methods.split(",")]}
    for r in results["methods"]:
        e = r["eval"]
        print(f"{r['method']}: {r['video_fps']:.2f} frames/s as video, {r['image_fps']:.2f} as "
              f"images (ratio {r['ratio_video_to_images']:.2f}); left visible "
              f"{e['frames_left_visible']}/{e['frames']} {e['visible_frames']}; consistency "
              f"{e['identity_consistency']}; jitter ratio {e['jitter_ratio']} (median "
              f"{e['jitter_median_ratio']})")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
