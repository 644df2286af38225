"""Inputs, defaults and messages of :mod:`rcedetect.stats.metrics` and :mod:`rcedetect.stats.operating_point`
(what the mutation run of docs/protocol.md, "Mutation testing of the interval code", found unpinned).

Every error names the argument that is wrong; scores are float64 whatever comes in (a float32 tensor, one that
requires a gradient); the defaults are the documented ones; a statistic over nothing is NaN without a warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from rcedetect.core.errors import InputError
from rcedetect.stats import operating_point as op
from rcedetect.stats.metrics import auc, detection_record, pair_mask, roc_curve, threshold_for_fpr, tpr_at_fpr

M = np.zeros((2, 2))
V = [0.0, 1.0]

# one attacked-image case of 5 images for operating_point's messages
CASE = {"heldout_clean": [0.1, 0.2], "clean": [0.1] * 5, "adv": [0.3] * 5, "y": [0] * 5, "pred_clean": [0] * 5,
        "pred_adv": [1] * 5}


def case(**kw) -> dict:
    return {**CASE, **kw}


@pytest.mark.parametrize("call, message", [
    (lambda: auc(M, V), r"^scores_clean must be 1-D, got shape \(2, 2\)$"),
    (lambda: auc(V, M), r"^scores_adv must be 1-D"),
    (lambda: auc([math.nan], V), r"^scores_clean contains NaN scores$"),
    (lambda: auc(V, V, ties="third"), r"^ties must be one of strict, half, got 'third'$"),
    (lambda: threshold_for_fpr(M), r"^scores_clean must be 1-D"),
    (lambda: threshold_for_fpr(V, 1.0), r"^fpr must be in \[0, 1\), got 1.0$"),
    (lambda: threshold_for_fpr([]), r"^cannot choose a threshold from zero clean scores$"),
    (lambda: tpr_at_fpr(M, V), r"^scores_clean must be 1-D"),
    (lambda: tpr_at_fpr(V, M), r"^scores_adv must be 1-D"),
    (lambda: roc_curve(M, V), r"^scores_clean must be 1-D"),
    (lambda: roc_curve(V, M), r"^scores_adv must be 1-D"),
    (lambda: roc_curve([], V), r"^a ROC curve needs at least one clean and one adversarial score$"),
    (lambda: roc_curve(V, []), r"^a ROC curve needs at least one clean and one adversarial score$"),
    (lambda: detection_record(M, V), r"^scores_clean must be 1-D"),
    (lambda: detection_record(V, M), r"^scores_adv must be 1-D"),
    (lambda: detection_record(V, [1.0]), r"^clean and adversarial scores must be paired, got 2 and 1$"),
    (lambda: detection_record(V, V, M), r"^mask must be 1-D"),
    (lambda: detection_record(V, V, [True]), r"^mask has 1 entries for 2 pairs$"),
    (lambda: pair_mask(M, V, V), r"^y_true must be 1-D"),
    (lambda: pair_mask(V, M, V), r"^pred_clean must be 1-D"),
    (lambda: pair_mask(V, V, M), r"^pred_adv must be 1-D"),
    (lambda: pair_mask(V, [0.0], V), (r"^y_true, pred_clean and pred_adv must have one entry per pair, got lengths "
                                      r"2, 1, 2$")),
])
def test_metrics_messages(call, message):
    with pytest.raises(InputError, match=message):
        call()


@pytest.mark.parametrize("change, message", [
    ({"heldout_clean": M}, r"^heldout_clean must be 1-D"),
    ({"heldout_clean": []}, r"^heldout_clean is empty: the threshold needs at least one clean held-out score$"),
    ({"clean": M}, r"^clean must be 1-D"),
    ({"adv": M}, r"^adv must be 1-D"),
    ({"y": M}, r"^y must be 1-D"),
    ({"pred_clean": M}, r"^pred_clean must be 1-D"),
    ({"pred_adv": M}, r"^pred_adv must be 1-D"),
    ({"success": M}, r"^success must be 1-D"),
    ({"adv": [0.3] * 4}, (r"^clean, adv, y, pred_clean, pred_adv \(and success\) must have one entry per attacked "
                          r"image, got lengths clean=5, adv=4, y=5, pred_clean=5, pred_adv=5$")),
    ({"success": [True]}, r"got lengths clean=5, adv=5, y=5, pred_clean=5, pred_adv=5, success=1$"),
    ({"success": ["yes"] * 5}, r"^success must be a boolean array \(or 0/1\), one flag per attacked image$"),
])
def test_operating_point_messages(change, message):
    for f in (op.operating_point, op.bootstrap_intervals):
        with pytest.raises(InputError, match=message):
            f(**case(**change))


@pytest.mark.parametrize("call, message", [
    (lambda: op.bootstrap_intervals(**case(), n_boot=0), r"^n_boot must be a positive integer, got 0$"),
    (lambda: op.bootstrap_intervals(**case(), level=1.0), r"^level must be in \(0, 1\), got 1.0$"),
    (lambda: op.operating_points(**case(), n_boot="5"), r"^n_boot must be a non-negative integer, got '5'$"),
    (lambda: op.operating_points(**case(), n_boot=True), r"^n_boot must be a non-negative integer, got True$"),
    (lambda: op.operating_point(**case(), fpr=1.0), r"^fpr must be in \[0, 1\), got 1.0$"),
    (lambda: op.operating_point(**case(), fpr="0.1"), r"^fpr must be a number in \[0, 1\), got '0.1'$"),
    (lambda: op.bootstrap_intervals(**case(clean=[], adv=[], y=[], pred_clean=[], pred_adv=[]), fpr=1.5),
     r"^fpr must be in \[0, 1\), got 1.5$"),
])
def test_settings_messages(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_scores_are_float64_whatever_comes_in():
    # float32: 1e8 + 1 − 1e8 is 0 in float32 arithmetic; the mean of the scores must be 1/3
    s32 = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    rec = detection_record(s32, s32)
    assert rec["score_summary"]["clean"]["mean"] == pytest.approx(1 / 3, rel=1e-12)
    graded = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)  # a tensor still attached to a graph
    assert auc(graded, graded + 0.5) == auc([0.0, 1.0, 2.0], [0.5, 1.5, 2.5]) == 6 / 9
    assert threshold_for_fpr(graded, 0.0) == 2.0
    assert detection_record(graded, graded)["n_pairs"] == 3


def test_defaults_and_single_scores():
    c = np.arange(40.0)
    assert threshold_for_fpr(c) == threshold_for_fpr(c, 0.05) == 37.0  # ⌊0.05·40⌋ = 2 above T
    assert tpr_at_fpr(c, [36.5, 37.0, 37.5, 50.0]) == 0.5
    assert threshold_for_fpr([3.0]) == 3.0
    assert tpr_at_fpr([0.0], [1.0]) == 1.0 and tpr_at_fpr([0.0], [-1.0]) == 0.0
    f, t, thr = roc_curve([0.5], [1.0])
    assert f.tolist() == [0.0, 0.0, 1.0] and t.tolist() == [0.0, 1.0, 1.0] and thr.tolist() == [math.inf, 1.0, 0.5]


def test_detection_record_at_another_fpr():
    clean, adv = np.arange(10.0), np.array([8.5, 9.5, 3.0, 7.5, 0.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    # fpr 0.2: T = the 8th smallest clean score = 7; adv above 7: 8.5, 9.5, 7.5 → 3/10
    rec = detection_record(clean, adv, fpr=0.2)
    assert rec["tpr_at_0.2fpr"] == 0.3 and "tpr_at_5fpr" not in rec
    assert detection_record(clean, adv)["tpr_at_5fpr"] == 0.1  # T = 9: only 9.5


def test_nothing_to_count_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(auc([], [1.0])) and math.isnan(auc([1.0], []))
        assert math.isnan(tpr_at_fpr([], [1.0])) and math.isnan(tpr_at_fpr([1.0], []))


def test_rounding_for_results_json():
    """Floats to ``digits`` decimals at every depth, NaN → None, tuples → lists, numpy scalars → Python ones."""
    got = op._rounded({"a": [0.123456789, (0.1239, math.nan)], "b": np.float32(2.25), "c": np.bool_(True),
                       "d": np.int64(3), "e": "text"}, 3)
    assert got == {"a": [0.123, [0.124, None]], "b": 2.25, "c": True, "d": 3, "e": "text"}
    assert type(got["c"]) is bool and type(got["d"]) is int and type(got["b"]) is float
    assert op._rounded([1 / 3]) == [0.333333]
