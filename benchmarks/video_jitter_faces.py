"""Where a clip's landmark jitter comes from: the generator's faces, or the pipeline around them.

The clip is anonymized with kfaar under several keys (the shipped generator's virtual faces) and,
as a control, with the generator's output swapped for stand-in faces as sharp as its renders:
real DevTrain faces from ../shared/data/lfw, aligned on the generator's template and brought to
its resolution (or to ``--stand-in-resolution``), each then going through the same track step,
pose transfer, colour match and paste. Every output is measured for landmark jitter
(``faceanon.evaluation.video``, output over input) and deleted: a stand-in is a real person, so
this is a diagnostic, never a way to anonymize anything.

With ``--each-draw`` each key's clip is also anonymized with its tracks forced to each of the
draws in turn, beside what the track step measured of each draw (its worst shortfall and how
much the detector's landmarks shook on it): whether that measure picks the steady draws.

If well-formed faces stay steady through the same pipeline while some keys' virtual faces do
not, the jitter comes from those faces (the detector places its landmarks unsteadily on them),
not from tracking, the pose transfer or the paste.

    OMP_NUM_THREADS=1 python benchmarks/video_jitter_faces.py --clip cap13_edit2.mp4 --keys 6 \
        --stand-ins 6 --json jitter.json
    OMP_NUM_THREADS=1 python benchmarks/video_jitter_faces.py --clip cap12_480p.mp4 --keys 0 \
        --stand-ins 6 --stand-in-resolution 128   # the same faces, twice as sharp
    OMP_NUM_THREADS=1 python benchmarks/video_jitter_faces.py --clip cap13_edit2.mp4 --keys 4 \
        --stand-ins 0 --each-draw   # keys 0-3, each also with each draw forced
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceanon import anonymize_video, images, keys
from faceanon.anonymize import Anonymizer, build_anonymizer
from faceanon.anonymize_video import VideoAnonymizer
from faceanon.detect import Detector, detect_and_align
from faceanon.evaluation.video import ClipPair, evaluate_clips
from faceanon.generators import FaceGenerator
from faceanon.models import create_model
from video_bench import BENCH_KEY  # the same directory: run as a script

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def bench_keys(n: int) -> list[keys.Key]:
    """The video benchmark's fixed key (``video_bench.BENCH_KEY``) and ``n - 1`` more derived
    from it, so runs compare across sessions."""
    more = [keys.Key(hashlib.sha256(BENCH_KEY.secret + bytes([i])).digest(), 0)
            for i in range(1, n)]
    return [BENCH_KEY, *more][:n]


def stand_ins(lfw: Path, n: int, generator: FaceGenerator, resolution: int
               ) -> list[tuple[str, np.ndarray]]:
    """The first photo of each of the first ``n`` DevTrain people in which one face is found,
    aligned as the generator's faces are and brought to ``resolution`` px as its renders are
    (then scaled to its crop size as ``FaceGenerator.generate`` does)."""
    size = generator.crop_size
    detector, found = Detector(), []
    for line in (lfw / "peopleDevTrain.txt").read_text().splitlines()[1:]:
        name = line.split("\t")[0]
        photo = images.load_image(lfw / "images" / name / f"{name}_0001.jpg")
        faces, crops, _ = detect_and_align(photo, detector, generator.template, size)
        if len(faces) == 1:
            small = cv2.resize(crops[0], (resolution, resolution), interpolation=cv2.INTER_AREA)
            found.append((name, cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)))
        if len(found) == n:
            break
    return found


def swap_faces(anonymizer: Anonymizer, face: np.ndarray) -> None:
    """Every face the generator is asked for becomes ``face`` (retries too)."""
    anonymizer.replacer.generator.generate = (  # type: ignore[attr-defined]
        lambda identities, key, attempt=0, pose=None: np.repeat(face[None], len(identities), 0))


def forcing_draws(choice: list[int | None], seen: dict[str, Any]) -> None:
    """From now on every track starts from draw ``choice[0]`` (the rule's own where None), and
    ``seen`` gets what the rule was given: each track's worst shortfall and shaking per draw."""
    rule = anonymize_video.choose_draws

    def choose(worst: np.ndarray, shaking: np.ndarray) -> np.ndarray:
        seen["worst"], seen["shaking"] = worst.round(4).tolist(), shaking.round(4).tolist()
        return rule(worst, shaking) if choice[0] is None else np.full(len(worst), choice[0])

    anonymize_video.choose_draws = choose  # type: ignore[assignment]


def measure(anonymizer: Anonymizer, clip: Path, evaluator: dict[str, Any], work: Path
            ) -> dict[str, Any]:
    """One run's jitter figures (``faceanon.evaluation.video``) and fail-safe count; its
    output is deleted."""
    encoded, report = VideoAnonymizer(anonymizer).anonymize(clip, clip.name)
    out = work / f"out{clip.suffix}"
    out.write_bytes(encoded or b"")
    try:
        figures = evaluate_clips([ClipPair(clip.name, clip, out, {})], **evaluator)
    finally:
        out.unlink()
    row = figures["clips"][clip.name]
    return {"jitter_ratio": row["jitter_ratio"], "jitter_median_ratio": row["jitter_median_ratio"],
            "jitter_orig": row["jitter_orig"],
            "jitter_anon": row["jitter_anon"], "fail_safe_frames": report.fail_safe_frames,
            "redrawn_tracks": report.redrawn_tracks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--keys", type=int, default=6, help="generator runs, one key each")
    parser.add_argument("--stand-ins", type=int, default=6, help="control runs, one face each")
    parser.add_argument("--stand-in-resolution", type=int, default=None,
                        help="px the stand-ins are brought to (default: the generator's)")
    parser.add_argument("--each-draw", action="store_true",
                        help="also run each key with its tracks forced to each draw in turn")
    parser.add_argument("--lfw", type=Path, default=LFW)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.stand_ins and not (args.lfw / "peopleDevTrain.txt").is_file():
        sys.exit(f"error: {args.lfw}: no LFW here (--lfw, or --stand-ins 0)")
    evaluator = {"detector": Detector(), "recognizer": create_model("recognizer", "dlib")}
    evaluator["threshold"] = evaluator["recognizer"].match_threshold
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        choice: list[int | None] = [None]
        seen: dict[str, Any] = {}
        forcing_draws(choice, seen)
        for n, key in enumerate(bench_keys(args.keys)):
            choice[0] = None
            row = measure(build_anonymizer("kfaar", key), args.clip, evaluator, Path(tmp))
            runs.append({"faces": "generator", "key": n, **row, **seen})
            print(f"generator, key {n}: jitter ratio {row['jitter_ratio']:.2f} (median "
                  f"{row['jitter_median_ratio']:.2f}); per draw: worst {seen.get('worst')}, "
                  f"shaking {seen.get('shaking')}", flush=True)
            for draw in range(anonymize_video.TRACK_DRAWS) if args.each_draw else ():
                choice[0] = draw
                forced = measure(build_anonymizer("kfaar", key), args.clip, evaluator, Path(tmp))
                runs.append({"faces": "generator", "key": n, "draw": draw, **forced})
                print(f"  draw {draw}: jitter ratio {forced['jitter_ratio']:.2f}", flush=True)
        if args.stand_ins:
            generator = create_model("face-generator")
            for name, face in stand_ins(args.lfw, args.stand_ins, generator,
                                        args.stand_in_resolution or generator.resolution):
                anonymizer = build_anonymizer("kfaar", bench_keys(1)[0])
                swap_faces(anonymizer, face)
                row = measure(anonymizer, args.clip, evaluator, Path(tmp))
                runs.append({"faces": "stand-in", **row})  # the person's name is not kept
                print(f"stand-in {len(runs) - args.keys}: jitter ratio "
                      f"{row['jitter_ratio']:.2f} (median {row['jitter_median_ratio']:.2f})",
                      flush=True)
    results = {"clip": args.clip.name, "stand_in_resolution": args.stand_in_resolution,
               "runs": runs}
    for kind in ("generator", "stand-in"):
        ratios = [r["jitter_ratio"] for r in runs if r["faces"] == kind and "draw" not in r]
        if ratios:
            print(f"{kind}: median {np.median(ratios):.2f}, within 1.5x "
                  f"{sum(r <= 1.5 for r in ratios)}/{len(ratios)}")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
