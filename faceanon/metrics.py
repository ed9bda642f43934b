"""Verification metrics over similarity scores of labelled pairs (pure numpy).

Shared by the LFW benchmark, ``faceanon eval`` and training's validation. Convention: a pair is
predicted "same" when its score is >= the threshold; ``labels`` are 1 (same) / 0 (different).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["roc_curve", "roc_auc", "equal_error_rate", "accuracy_at", "best_threshold",
           "kfold_accuracy", "fold_ids", "VerificationReport", "verification_report",
           "non_match_rate"]


def _check(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("need both same and different pairs")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates, thresholds), thresholds falling from +inf
    (nothing accepted) through every distinct score (ties enter together)."""
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve: the chance a same pair outscores a different one (ties ½)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def equal_error_rate(scores: Any, labels: Any) -> tuple[float, float]:
    """(EER, threshold): where false accepts equal false rejects, linearly interpolated
    between the two ROC points that bracket the crossing."""
    fpr, tpr, thr = roc_curve(scores, labels)
    d = fpr - (1.0 - tpr)  # rises from -1 to +1 along the curve
    i = int(np.nonzero(d >= 0)[0][0])
    if d[i] == 0:  # i >= 1: the curve starts at d = -1
        return float(fpr[i]), float(thr[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    lo = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(lo + t * (thr[i] - lo))


def accuracy_at(scores: Any, labels: Any, threshold: float) -> float:
    """Fraction of pairs classified correctly at ``threshold``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; the threshold lies midway between the two
    scores it separates (the lowest such threshold when several tie)."""
    s, y = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # Cut k (0..n): the k lowest scores are called different, the rest same.
    neg_below = np.r_[0, np.cumsum(~y)]
    pos_above = y.sum() - np.r_[0, np.cumsum(y)]
    correct = neg_below + pos_above
    valid = np.r_[True, s[1:] > s[:-1], True]  # cannot cut between equal scores
    correct = np.where(valid, correct, -1)
    k = int(np.argmax(correct))
    edges = np.r_[s[0] - 1.0, s, s[-1] + 1.0]
    threshold = (edges[k] + edges[k + 1]) / 2.0
    return float(threshold), float(correct[k] / s.size)


def fold_ids(n: int, folds: int) -> np.ndarray:
    """Fold number of each of ``n`` items split into ``folds`` contiguous, near-equal parts."""
    if not 2 <= folds <= n:
        raise ValueError(f"need 2 to {n} folds, got {folds}")
    return np.minimum(np.arange(n) * folds // n, folds - 1)


def kfold_accuracy(scores: Any, labels: Any, folds: Any) -> tuple[float, float, np.ndarray]:
    """(mean, std, per-fold accuracies): each fold scored at the threshold that is best on the
    other folds, as the LFW protocol prescribes. ``folds`` is a fold id per pair or a count."""
    s, y = _check(scores, labels)
    ids = fold_ids(s.size, int(folds)) if np.ndim(folds) == 0 else np.asarray(folds).reshape(-1)
    if ids.shape != s.shape:
        raise ValueError(f"{ids.size} fold ids for {s.size} pairs")
    accs = []
    for f in np.unique(ids):
        test = ids == f
        threshold, _ = best_threshold(s[~test], y[~test])
        accs.append(accuracy_at(s[test], y[test], threshold))
    a = np.asarray(accs)
    return float(a.mean()), float(a.std()), a


@dataclass(frozen=True)
class VerificationReport:
    """Headline verification figures of one set of scored pairs."""

    accuracy: float  # k-fold mean (threshold from the other folds)
    accuracy_std: float
    auc: float
    eer: float
    eer_threshold: float
    threshold: float  # best threshold on all pairs, for applying the recognizer elsewhere
    pairs: int
    folds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def verification_report(scores: Any, labels: Any, folds: Any = 10) -> VerificationReport:
    """All metrics at once; ``folds`` as in :func:`kfold_accuracy`."""
    s, y = _check(scores, labels)
    mean, std, per_fold = kfold_accuracy(s, y, folds)
    eer, eer_thr = equal_error_rate(s, y)
    threshold, _ = best_threshold(s, y)
    return VerificationReport(accuracy=mean, accuracy_std=std, auc=roc_auc(s, y), eer=eer,
                              eer_threshold=eer_thr, threshold=threshold, pairs=int(s.size),
                              folds=int(per_fold.size))


# --- anonymization (faceanon eval; validation of the projector) ---

def non_match_rate(scores: Any, threshold: float) -> float:
    """Share of pairs scoring below ``threshold``: KFAAR's anonymity when the pairs are
    (original, virtual) faces, its diversity when they are one face's virtual faces under two keys."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not s.size:
        raise ValueError("no scores")
    return float(np.mean(s < threshold))
