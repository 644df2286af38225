"""Table-2 metrics (protocol §4.6): pair mask, strict and ½ AUC, TPR at FPR, ROC curve, records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from rcedetect.core.errors import InputError
from rcedetect.stats.metrics import auc, detection_record, pair_mask, roc_curve, threshold_for_fpr, tpr_at_fpr


def auc_m(normal: np.ndarray, adversarial: np.ndarray) -> float:
    """Independent re-statement of the original AUC.m: "higher = more normal" scores, targets 1 for normal,
    a STABLE ascending sort with the normal entries first, and the Mann-Whitney rank sum of the normals."""
    s = np.concatenate([normal, adversarial])
    t = np.concatenate([np.ones(len(normal)), np.zeros(len(adversarial))])
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    n1, n0 = len(normal), len(adversarial)
    return (ranks[t == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_hand_computed_cases_with_ties():
    clean, adv = [0.0, 1.0, 2.0], [1.0, 2.0, 3.0]
    # clean < adv strictly: 0<1,0<2,0<3,1<2,1<3,2<3 = 6 of 9; ties (1,1), (2,2) = 2
    assert auc(clean, adv, "strict") == pytest.approx(6 / 9)
    assert auc(clean, adv, "half") == pytest.approx(7 / 9)
    assert auc([1, 1], [1, 1, 1], "strict") == 0.0  # saturated scores: the original counts ties as 0
    assert auc([1, 1], [1, 1, 1], "half") == 0.5
    assert auc([0, 1], [2, 3]) == 1.0 and auc([2, 3], [0, 1]) == 0.0  # not symmetrised


def test_half_rule_equals_sklearn_and_strict_equals_auc_m():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.integers(0, 6, rng.integers(1, 40)).astype(float)
        a = rng.integers(2, 9, rng.integers(1, 40)).astype(float)
        y = np.r_[np.ones(len(c)), np.zeros(len(a))]
        assert auc(c, a, "half") == pytest.approx(roc_auc_score(y, -np.r_[c, a]), abs=1e-12)
        assert auc(c, a, "strict") == pytest.approx(auc_m(-c, -a), abs=1e-12)
        brute = np.mean(c[:, None] < a[None, :])
        assert auc(c, a, "strict") == pytest.approx(brute, abs=1e-12)
    assert auc(torch.tensor([0.0, 1.0]), torch.tensor([0.5])) == 0.5  # tensors are accepted


def test_pair_mask_by_hand():
    y = torch.tensor([0, 1, 2, 3, 4])
    pred_clean = torch.tensor([0, 1, 9, 3, 4])  # example 2 wrong on the clean input
    pred_adv = torch.tensor([5, 1, 7, 0, 4])  # examples 1 and 4: attack failed
    assert pair_mask(y, pred_clean, pred_adv).tolist() == [True, False, False, True, False]
    with pytest.raises(InputError):
        pair_mask(y, pred_clean[:2], pred_adv)


def test_threshold_and_tpr_by_hand():
    clean = np.arange(100.0)
    assert threshold_for_fpr(clean, 0.05) == 94.0  # 95..99 are above it: 5 of 100 rejected
    assert np.mean(clean > threshold_for_fpr(clean, 0.05)) == 0.05
    assert threshold_for_fpr(clean, 0.0) == 99.0
    assert tpr_at_fpr(clean, [50.0, 94.0, 95.0, 200.0], 0.05) == 0.5
    with pytest.raises(InputError):
        threshold_for_fpr(clean, 1.0)


def test_roc_curve_area_is_the_half_auc():
    rng = np.random.default_rng(1)
    c = rng.normal(0, 1, 300).round(1)
    a = rng.normal(1, 1, 200).round(1)
    f, t, thr = roc_curve(c, a)
    assert (f[0], t[0], f[-1], t[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0) and np.all(np.diff(thr) < 0)
    area = np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2)
    assert area == pytest.approx(auc(c, a, "half"), abs=1e-12)


def test_detection_record():
    c = np.array([0.0, 1.0, 2.0, 9.0])
    a = np.array([1.0, 2.0, 3.0, -9.0])
    rec = detection_record(c, a, np.array([True, True, True, False]))
    assert rec == {"auc_strict": pytest.approx(6 / 9), "auc_half": pytest.approx(7 / 9),
                   "tpr_at_5fpr": pytest.approx(1 / 3), "n_pairs": 3,
                   "score_summary": {"clean": {"mean": 1.0, "median": 1.0}, "adversarial": {"mean": 2.0, "median": 2.0}}}
    empty = detection_record(c, a, np.zeros(4, bool))
    assert empty["n_pairs"] == 0 and all(math.isnan(empty[k]) for k in ("auc_strict", "auc_half", "tpr_at_5fpr"))
    assert detection_record([], [])["n_pairs"] == 0
    assert empty["score_summary"]["clean"] == {"mean": None, "median": None}
    with pytest.raises(InputError):
        detection_record(c, a[:3])
    with pytest.raises(InputError):
        detection_record(c, a, np.ones(3, bool))
    with pytest.raises(InputError, match="NaN"):
        auc([float("nan")], [1.0])
    with pytest.raises(InputError):
        auc(c, a, ties="third")
