"""The figures of ``faceanon eval`` computed from per-face data: pairs for synchronism,
verification curves, FID and KVFA scores (through the verifier that ``faceanon verify`` uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceanon.datasets import Entry
from faceanon.evaluation.faces import EvalFace, FeatureSet
from faceanon.metrics import equal_error_rate, roc_auc

__all__ = ["label_pairs", "verification", "mean_or_none", "kvfa_scores", "fid_scores"]


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


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def verification(scores: np.ndarray, same: np.ndarray) -> dict[str, float | int]:
    eer, thr = equal_error_rate(scores, same)
    return {"auc": roc_auc(scores, same), "eer": eer, "eer_threshold": thr,
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}


def kvfa_scores(central: list[EvalFace], pairs: np.ndarray, same: np.ndarray,
                orig_entries: dict[str, Entry], anon_entries: dict[str, Entry],
                key_path: Path, options_device: str) -> dict[str, Any]:
    """KFAAR Table VI: the keyed KVFA feature of each virtual face against the KVFA feature of
    the originals (same person vs different people), at the model's calibrated threshold."""
    from faceanon import keys
    from faceanon.kvfa import Verifier

    verifier = Verifier.load(options_device)
    key = keys.load(key_path)
    rec = verifier.recognizer
    e_orig = np.concatenate([rec.embed_faces(orig_entries[f.relpath].load(), f.landmarks5[None])
                             for f in central])
    e_anon = np.concatenate([rec.embed_faces(anon_entries[f.relpath].load(), f.landmarks5[None])
                             for f in central])
    f_orig, f_virtual = verifier.features(e_orig), verifier.features(e_anon, key)
    scores = (f_virtual[pairs[:, 0]] * f_orig[pairs[:, 1]]).sum(1)
    t = verifier.threshold
    return {"model": verifier.model_id, "threshold": t, "auc": roc_auc(scores, same),
            "crr": float((scores[same] >= t).mean()), "far": float((scores[~same] >= t).mean()),
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}


def fid_scores(sets: dict[str, FeatureSet], not_measured: dict[str, str]) -> dict[str, Any]:
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
