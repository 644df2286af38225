"""Operating points at a fixed FPR (threshold on clean held-out scores), SR@N (Bryniarski et al., ICLR 2022),
accuracies with rejection (Tramèr, ICML 2022) and their percentile-bootstrap intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rcedetect.core.errors import InputError
from rcedetect.stats.metrics import auc, pair_mask, threshold_for_fpr
from rcedetect.stats.operating_point import (
    MIN_PAIRS,
    _inputs,
    _resample_statistics,
    bootstrap_intervals,
    fpr_key,
    operating_point,
    operating_points,
    too_few_pairs,
)

# Hand-built case. Held-out clean scores, fpr = 0.2: k = ⌊0.2·6⌋ = 1 clean score may exceed T, so T is the
# (6 − 1)-th smallest = 0.5; only 0.6 is rejected (1/6 ≤ 0.2).
HELDOUT = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
FPR = 0.2
# Five attacked images:      img0   img1  img2  img3  img4
Y = [0, 1, 2, 3, 4]
PRED_CLEAN = [0, 1, 2, 3, 0]  # img4 is already misclassified when clean
PRED_ADV = [9, 9, 2, 9, 9]  # the attack fails on img2 only (still correct)
CLEAN = [0.1, 0.55, 0.3, 0.2, 0.4]  # rejected (> 0.5): img1 only
ADV = [0.9, 0.6, 0.3, 0.5, 0.8]  # rejected (> 0.5): img0, img1, img4; img3 = T is ACCEPTED


def hand_case(**kw):
    args = {"heldout_clean": HELDOUT, "clean": CLEAN, "adv": ADV, "y": Y, "pred_clean": PRED_CLEAN,
            "pred_adv": PRED_ADV}
    args.update(kw)
    return args


def test_hand_computed_operating_point():
    r = operating_point(**hand_case(), fpr=FPR)
    assert r["threshold"] == 0.5
    assert r["fpr"] == FPR and r["n_heldout"] == 6 and r["n_images"] == 5
    # clean scores > 0.5: img1 (0.55) → 1/5
    assert r["clean_rejection_rate"] == pytest.approx(1 / 5)
    # adv scores > 0.5: img0 0.9, img1 0.6, img4 0.8 → 3/5 (img3's 0.5 equals T: accepted)
    assert r["tpr_all"] == pytest.approx(3 / 5)
    # pairs (clean correct AND adv misclassified): img0, img1, img3; rejected among them: img0, img1 → 2/3
    assert r["n_pairs"] == 3
    assert r["tpr_success"] == pytest.approx(2 / 3)
    # strict AUC over the pairs, clean [0.1, 0.55, 0.2] vs adv [0.9, 0.6, 0.5]: clean < adv in
    # 3 (0.1) + 2 (0.55 < 0.9, 0.6) + 3 (0.2) = 8 of 9
    assert r["auc"] == pytest.approx(8 / 9)
    # clean correct: img0..img3 (4); misclassified AND accepted (adv ≤ 0.5): img3 only → SR@N = 1/4
    assert r["n_clean_correct"] == 4
    assert r["attack_success_rate"] == pytest.approx(1 / 4)
    # attacked correct if classified right OR rejected: img0 (rej), img1 (rej), img2 (right), img4 (rej);
    # img3 misclassified and accepted → 4/5
    assert r["robust_accuracy_with_rejection"] == pytest.approx(4 / 5)
    # clean correct if classified right AND accepted: img0, img2, img3; img1 rejected, img4 wrong → 3/5
    assert r["clean_accuracy_with_rejection"] == pytest.approx(3 / 5)


def test_success_flag_replaces_misclassification_in_sr_only():
    # a targeted attack that reached its target on img0, img1, img4 but not on img3 (misclassified there):
    # among clean-correct images, success AND accepted: img0, img1 rejected, img3 not a success → 0/4
    r = operating_point(**hand_case(success=[True, True, False, False, True]), fpr=FPR)
    assert r["attack_success_rate"] == 0.0
    # the pairs stay Pang et al.'s (misclassified), not "target reached"
    assert r["n_pairs"] == 3 and r["tpr_success"] == pytest.approx(2 / 3)
    assert r["robust_accuracy_with_rejection"] == pytest.approx(4 / 5)
    same = operating_point(**hand_case(success=np.array(PRED_ADV) != np.array(Y)), fpr=FPR)
    assert same == operating_point(**hand_case(), fpr=FPR)
    as_int = operating_point(**hand_case(success=[1, 1, 0, 0, 1]), fpr=FPR)
    assert as_int["attack_success_rate"] == 0.0


def test_torch_inputs_give_the_same_result():
    t = {k: torch.tensor(v) for k, v in hand_case().items()}
    assert operating_point(**t, fpr=FPR) == operating_point(**hand_case(), fpr=FPR)


def test_threshold_never_depends_on_the_attacked_scores():
    rng = np.random.default_rng(1)
    heldout, clean = rng.normal(size=200), rng.normal(size=50)
    y = rng.integers(0, 10, 50)
    base = {"heldout_clean": heldout, "clean": clean, "y": y, "pred_clean": y, "pred_adv": (y + 1) % 10}
    for fpr in (0.0, 0.01, 0.05, 0.3):
        ts = {operating_point(**base, adv=adv, fpr=fpr)["threshold"]
              for adv in (rng.normal(size=50), rng.normal(5.0, 1.0, 50), np.full(50, -1e9), np.full(50, 1e9))}
        assert ts == {threshold_for_fpr(heldout, fpr)}
    # nor on the evaluated clean scores
    t1 = operating_point(**{**base, "clean": np.zeros(50)}, adv=clean, fpr=0.05)["threshold"]
    assert t1 == threshold_for_fpr(heldout, 0.05)


def random_case(n: int, m: int, seed: int, shift: float = 1.0, p_fail: float = 0.2, p_clean_wrong: float = 0.1):
    """Scores of a half-decent detector: adv scores shifted by ``shift``; labels with some failures."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    pred_clean = np.where(rng.random(n) < p_clean_wrong, (y + 3) % 10, y)
    pred_adv = np.where(rng.random(n) < p_fail, y, (y + 1) % 10)
    return {"heldout_clean": rng.normal(size=m), "clean": rng.normal(size=n), "adv": rng.normal(shift, 1.0, n),
            "y": y, "pred_clean": pred_clean, "pred_adv": pred_adv}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sr_misclassified_rejected_and_still_correct_partition_clean_correct_images(seed):
    case = random_case(300, 400, seed)
    for fpr in (0.01, 0.05, 0.2):
        r = operating_point(**case, fpr=fpr)
        cc = case["pred_clean"] == case["y"]
        wrong, rejected = case["pred_adv"] != case["y"], case["adv"] > r["threshold"]
        rejected_share = np.mean((wrong & rejected)[cc])
        correct_share = np.mean((~wrong)[cc])
        assert r["n_clean_correct"] == cc.sum()
        assert r["attack_success_rate"] + rejected_share + correct_share == pytest.approx(1.0)
        # and the pairs are exactly the clean-correct images that end misclassified
        assert r["n_pairs"] == (wrong & cc).sum() == pair_mask(case["y"], case["pred_clean"],
                                                                 case["pred_adv"]).sum()


def test_rates_over_nothing_are_nan():
    # every attack fails: no pairs → tpr_success and AUC NaN; all clean inputs wrong → SR@N NaN
    r = operating_point(HELDOUT, CLEAN, ADV, Y, pred_clean=[1, 2, 3, 4, 0], pred_adv=Y, fpr=FPR)
    assert r["n_pairs"] == 0 and math.isnan(r["tpr_success"]) and math.isnan(r["auc"])
    assert r["n_clean_correct"] == 0 and math.isnan(r["attack_success_rate"])
    empty = operating_point(HELDOUT, [], [], [], [], [], fpr=FPR)
    assert empty["n_images"] == 0 and math.isnan(empty["tpr_all"])
    b = bootstrap_intervals(HELDOUT, [], [], [], [], [], fpr=FPR, n_boot=10)
    assert all(math.isnan(x) for k in ("auc", "tpr_success", "attack_success_rate") for x in b[k])


def test_too_few_pairs():
    assert MIN_PAIRS == 30
    assert too_few_pairs(0) and too_few_pairs(29)
    assert not too_few_pairs(30) and not too_few_pairs(1000)


def test_vectorised_resamples_match_the_direct_computation():
    case = random_case(40, 25, seed=3)
    case["adv"][:5] = case["clean"][:5]  # ties between clean and adv scores (strict rule counts 0)
    case["adv"][5:8] = case["heldout_clean"][:3]  # adv scores exactly at possible thresholds
    success = np.random.default_rng(4).random(40) < 0.7
    rng = np.random.default_rng(5)
    hidx, idx = rng.integers(0, 25, (20, 25)), rng.integers(0, 40, (20, 40))
    for fpr in (0.0, 0.05, 0.2):
        d = _inputs(**case, success=success)
        got = _resample_statistics(d, fpr, hidx, idx)
        for b in range(20):
            i = idx[b]
            sub = {k: np.asarray(v)[i] for k, v in case.items() if k != "heldout_clean"}
            r = operating_point(case["heldout_clean"][hidx[b]], **sub, success=success[i], fpr=fpr)
            pairs = pair_mask(sub["y"], sub["pred_clean"], sub["pred_adv"])
            assert got["auc"][b] == auc(sub["clean"][pairs], sub["adv"][pairs], "strict") == r["auc"]
            assert got["tpr_success"][b] == pytest.approx(r["tpr_success"], abs=1e-12)
            assert got["attack_success_rate"][b] == pytest.approx(r["attack_success_rate"], abs=1e-12)


def test_bootstrap_contains_point_estimate_and_is_reproducible():
    case = random_case(400, 500, seed=7)
    r = operating_point(**case, fpr=0.05)
    b = bootstrap_intervals(**case, fpr=0.05, n_boot=500, seed=11)
    assert b["n_boot"] == 500 and b["level"] == 0.95
    for k in ("auc", "tpr_success", "attack_success_rate"):
        lo, hi = b[k]
        assert lo < r[k] < hi, (k, lo, r[k], hi)
    assert bootstrap_intervals(**case, fpr=0.05, n_boot=500, seed=11) == b
    assert bootstrap_intervals(**case, fpr=0.05, n_boot=500, seed=12) != b
    # a wider level gives a wider interval
    wide = bootstrap_intervals(**case, fpr=0.05, n_boot=500, seed=11, level=0.99)
    assert wide["auc"][0] <= b["auc"][0] and wide["auc"][1] >= b["auc"][1]


def test_bootstrap_shrinks_when_the_sample_grows_16_times():
    small = bootstrap_intervals(**random_case(100, 100, seed=8), fpr=0.05, n_boot=400, seed=0)
    large = bootstrap_intervals(**random_case(1600, 1600, seed=8), fpr=0.05, n_boot=400, seed=0)
    for k in ("auc", "tpr_success", "attack_success_rate"):
        w_small, w_large = small[k][1] - small[k][0], large[k][1] - large[k][0]
        # the width scales as 1/sqrt(n): about 4 times narrower
        assert w_large < w_small / 2, (k, w_small, w_large)


def test_bootstrap_resamples_the_heldout_set_too():
    # 100 copies of one pair whose adv score sits at the held-out median: resampling the images alone
    # would give a degenerate interval; re-choosing T on resampled held-out scores moves it across 0.5
    rng = np.random.default_rng(12)
    heldout = rng.normal(size=101)
    median = float(np.median(heldout))
    n = 100
    case = {"heldout_clean": heldout, "clean": np.full(n, -5.0), "adv": np.full(n, median),
            "y": np.zeros(n, int), "pred_clean": np.zeros(n, int), "pred_adv": np.ones(n, int)}
    b = bootstrap_intervals(**case, fpr=0.5, n_boot=200, seed=0)
    assert b["tpr_success"] == (0.0, 1.0) and b["attack_success_rate"] == (0.0, 1.0)
    assert b["auc"] == (1.0, 1.0)


def test_perfect_detector_gives_auc_interval_one_one():
    case = random_case(200, 200, seed=9)
    case["adv"] = case["clean"].max() + 1.0 + np.abs(case["adv"])  # every adv above every clean score
    b = bootstrap_intervals(**case, fpr=0.05, n_boot=300, seed=0)
    assert b["auc"] == (1.0, 1.0)
    assert operating_point(**case, fpr=0.05)["auc"] == 1.0


def test_bootstrap_is_nan_when_too_many_resamples_have_no_pair():
    case = random_case(100, 100, seed=10)
    case["pred_adv"] = case["y"].copy()
    case["pred_adv"][0] = (case["y"][0] + 1) % 10
    case["pred_clean"][0] = case["y"][0]  # a single pair: absent from ~37 % of the resamples
    b = bootstrap_intervals(**case, fpr=0.05, n_boot=200, seed=0)
    assert all(math.isnan(x) for x in b["auc"] + b["tpr_success"])
    assert not any(math.isnan(x) for x in b["attack_success_rate"])


def test_operating_points_for_results_json():
    out = operating_points(**hand_case(), fprs=(0.2, 0.05, 0.01), n_boot=50, seed=0)
    assert list(out) == ["fpr_20", "fpr_5", "fpr_1"]
    assert fpr_key(0.05) == "fpr_5" and fpr_key(0.01) == "fpr_1" and fpr_key(0.001) == "fpr_0.1"
    p = out["fpr_20"]
    assert p["threshold"] == 0.5 and p["tpr_success"] == round(2 / 3, 6) == 0.666667
    assert p["too_few_pairs"] is True and p["n_pairs"] == 3
    assert set(p["bootstrap"]) == {"auc", "tpr_success", "attack_success_rate", "n_boot", "level"}
    assert isinstance(p["bootstrap"]["auc"], list) and len(p["bootstrap"]["auc"]) == 2
    # 3 pairs of 5 images: absent from (2/5)^5 ≈ 1 % of the resamples, under the 5 % allowed → defined
    assert all(x is not None for k in ("auc", "tpr_success", "attack_success_rate")
               for x in p["bootstrap"][k])
    # fpr = 0.01 on 6 held-out scores: nothing may be rejected, T = max = 0.6
    assert out["fpr_1"]["threshold"] == 0.6
    json.dumps(out, allow_nan=False)  # NaN became None
    no_pair = operating_points(HELDOUT, CLEAN, ADV, Y, PRED_CLEAN, Y, n_boot=20)
    assert no_pair["fpr_5"]["tpr_success"] is None and no_pair["fpr_5"]["auc"] is None
    assert no_pair["fpr_5"]["bootstrap"]["auc"] == [None, None]
    json.dumps(no_pair, allow_nan=False)
    skipped = operating_points(**hand_case(), n_boot=0)
    assert "bootstrap" not in skipped["fpr_5"]
    single = operating_point(**hand_case(), fpr=0.05)
    assert skipped["fpr_5"] == {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in single.items()},
                                "too_few_pairs": True}


@pytest.mark.parametrize("change, message", [
    ({"adv": ADV[:4]}, "one entry per attacked image"),
    ({"y": Y + [1]}, "one entry per attacked image"),
    ({"success": [True, False]}, "one entry per attacked image"),
    ({"clean": np.ones((5, 1))}, "1-D"),
    ({"heldout_clean": np.ones((3, 2))}, "1-D"),
    ({"adv": [0.1, math.nan, 0.2, 0.3, 0.4]}, "NaN"),
    ({"clean": [0.1, 0.2, math.nan, 0.3, 0.4]}, "NaN"),
    ({"heldout_clean": [0.1, math.nan]}, "NaN"),
    ({"heldout_clean": []}, "empty"),
    ({"success": [0, 1, 2, 0, 1]}, "boolean"),
])
def test_bad_inputs_raise(change, message):
    with pytest.raises(InputError, match=message):
        operating_point(**hand_case(**change))
    with pytest.raises(InputError, match=message):
        bootstrap_intervals(**hand_case(**change), n_boot=5)


@pytest.mark.parametrize("fpr", [1.0, -0.1, 1.5, math.nan, "0.05", True])
def test_bad_fpr_raises(fpr):
    with pytest.raises(InputError, match="fpr"):
        operating_point(**hand_case(), fpr=fpr)
    with pytest.raises(InputError, match="fpr"):
        operating_points(**hand_case(), fprs=(0.05, fpr), n_boot=0)


def test_bad_bootstrap_settings_raise():
    for n_boot in (0, -1, 2.5):
        with pytest.raises(InputError, match="n_boot"):
            bootstrap_intervals(**hand_case(), n_boot=n_boot)
    for level in (0.0, 1.0, 95):
        with pytest.raises(InputError, match="level"):
            bootstrap_intervals(**hand_case(), level=level)
    with pytest.raises(InputError, match="n_boot"):
        operating_points(**hand_case(), n_boot=-1)
    with pytest.raises(InputError, match="duplicate"):
        operating_points(**hand_case(), fprs=(0.05, 0.05))


def test_a_fixed_threshold_interval_for_adaptive_attacks():
    """Adversarial scores sitting exactly at T (where an adaptive attack puts them): re-choosing T on resampled
    held-out scores rejects them in many resamples, so only the fixed-T interval reflects the attack's success."""
    rng = np.random.default_rng(3)
    heldout = rng.normal(size=400)
    t = threshold_for_fpr(heldout, 0.05)
    n = 200
    case = {"heldout_clean": heldout, "clean": rng.normal(size=n) - 2, "adv": np.full(n, t),
            "y": np.zeros(n, int), "pred_clean": np.zeros(n, int), "pred_adv": np.ones(n, int)}
    moving = bootstrap_intervals(**case, n_boot=300, seed=0)["attack_success_rate"]
    fixed = bootstrap_intervals(**case, n_boot=300, seed=0, resample_heldout=False)["attack_success_rate"]
    assert fixed == (1.0, 1.0)  # every image is misclassified and accepted at the deployed T
    assert moving[0] < 0.5  # a lower resampled T rejects them all in a good share of the resamples
