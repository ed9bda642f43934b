"""Verification metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.metrics import (accuracy_at, best_threshold, equal_error_rate, fold_ids,
                              kfold_accuracy, roc_auc, roc_curve, verification_report)

# Same pairs at 0.9, 0.8, 0.6; different pairs at 0.7, 0.5, 0.4.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
LABELS = [1, 1, 0, 1, 0, 0]


def test_roc_curve_steps_through_every_score() -> None:
    fpr, tpr, thr = roc_curve(SCORES, LABELS)
    assert thr[0] == np.inf and list(thr[1:]) == SCORES
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_roc_curve_takes_tied_scores_together() -> None:
    fpr, tpr, thr = roc_curve([0.5, 0.5, 0.2], [1, 0, 0])
    np.testing.assert_allclose(thr[1:], [0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0.5, 1])


def test_auc_counts_won_pairs_and_half_the_ties() -> None:
    # 8 of the 9 (same, different) combinations are ordered correctly.
    assert roc_auc(SCORES, LABELS) == pytest.approx(8 / 9)
    assert roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert roc_auc([1.0, 0.0], [1, 0]) == pytest.approx(1.0)


def test_eer_on_an_roc_point() -> None:
    # At threshold 0.7: one of three different pairs accepted, one of three same rejected.
    eer, threshold = equal_error_rate(SCORES, LABELS)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.7)


def test_eer_interpolates_between_roc_points() -> None:
    # Same at 0.9, 0.7, 0.6; different at 0.8, 0.5. At 0.8: FAR 1/2, FRR 2/3; at 0.7: FAR 1/2,
    # FRR 1/3: the rates cross half-way, at 1/2, threshold 0.75.
    eer, threshold = equal_error_rate([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 1, 0])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.75)


def test_best_threshold_and_accuracy() -> None:
    # Cutting below 0.6 or below 0.8 both get 5 of 6 right; the lower cut is returned.
    threshold, acc = best_threshold(SCORES, LABELS)
    assert threshold == pytest.approx(0.55)
    assert acc == pytest.approx(5 / 6)
    assert accuracy_at(SCORES, LABELS, 0.75) == pytest.approx(5 / 6)
    assert accuracy_at(SCORES, LABELS, 1.0) == pytest.approx(0.5)


def test_best_threshold_never_splits_ties() -> None:
    threshold, acc = best_threshold([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1])
    assert acc == pytest.approx(3 / 4)
    assert threshold == pytest.approx(0.7)


def test_kfold_picks_each_threshold_on_the_other_folds() -> None:
    scores = [0.9, 0.1, 0.8, 0.2, 0.6, 0.65]
    labels = [1, 0, 1, 0, 1, 0]
    # Folds 0 and 1 get thresholds 0.4 / 0.35 (both right); fold 2 gets 0.5 and misses 0.65.
    mean, std, per_fold = kfold_accuracy(scores, labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(per_fold, [1.0, 1.0, 0.5])
    assert mean == pytest.approx(5 / 6)
    assert std == pytest.approx(np.std([1.0, 1.0, 0.5]))
    assert kfold_accuracy(scores, labels, 3)[0] == pytest.approx(mean)


def test_fold_ids_split_contiguously() -> None:
    assert fold_ids(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        fold_ids(3, 1)


def test_report_matches_separable_normals() -> None:
    # Unit normals 2 apart: accuracy and EER follow the normal CDF at 1, AUC at sqrt(2).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    scores = rng.normal(size=labels.size) + 2.0 * labels
    r = verification_report(scores, labels, 10)
    assert r.accuracy == pytest.approx(0.8413, abs=0.01)
    assert r.eer == pytest.approx(0.1587, abs=0.01)
    assert r.auc == pytest.approx(0.9214, abs=0.01)
    assert r.threshold == pytest.approx(1.0, abs=0.1)
    assert (r.pairs, r.folds) == (20000, 10)


@pytest.mark.parametrize("scores, labels", [([0.1, 0.2], [1, 1]), ([0.1], [1, 0]),
                                            ([0.1, np.nan], [1, 0]), ([0.1, 0.2], [1, 2])])
def test_bad_inputs_are_rejected(scores: list[float], labels: list[int]) -> None:
    with pytest.raises(ValueError):
        verification_report(scores, labels, 2)
