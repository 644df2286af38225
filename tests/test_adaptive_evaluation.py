"""The adaptive evaluation's bookkeeping: every sanity check fires on a case built to fail it, the worst case over
attacks is the per-image union, ε-at-level reads the curve, and the tiny run reports all of it."""

from __future__ import annotations

import math

import torch

from rcedetect.detectors import ScoreTerm, create
from rcedetect.report.adaptive import eps_reaching
from rcedetect.reproduce import sanity
from rcedetect.reproduce.adaptive import worst_case


def test_each_sanity_check_fires_on_a_case_built_to_fail_it():
    assert sanity.large_eps([True] * 32, [True] * 32)["passed"] and not sanity.large_eps([True] * 16 + [False] * 16,
                                                                                         [True] * 32)["passed"]
    # an image wrong when clean cannot be fooled: 28 of 28 clean-correct pass although 28 of 32 is 88 %
    judged = sanity.large_eps([True] * 28 + [False] * 4, [True] * 28 + [False] * 4)
    assert judged["passed"] and judged["sr"] == 1.0 and "28 of 28" in judged["detail"]
    assert sanity.large_eps([False] * 4, [False] * 4)["passed"] is None  # nothing to fool
    # the run's checks use the card's verdicts (rcedetect.evaluation.detector_sanity)
    assert sanity.detector_sanity.more_iterations(5, 5, 20, 80, 32)["passed"]
    assert not sanity.detector_sanity.more_iterations(5, 4, 20, 80, 32)["passed"]  # more steps lost a success
    assert sanity.detector_sanity.gradient_free(6, 5, 32, "random search", "pgd_detector")["passed"]  # one image slack
    assert not sanity.detector_sanity.gradient_free(8, 5, 32, "random search", "pgd_detector")["passed"]
    x = torch.rand(2, 1, 4, 4)
    assert sanity.lambda_zero(x, x.clone())["passed"] and not sanity.lambda_zero(x, x + 1e-7)["passed"]
    g = torch.ones(3, 1, 4, 4)
    assert sanity.gradient(g, "kd")["passed"]
    assert not sanity.gradient(torch.cat([g[:2], torch.zeros(1, 1, 4, 4)]), "kd")["passed"]  # a zero gradient
    assert not sanity.gradient(torch.cat([g[:2], torch.full((1, 1, 4, 4), math.nan)]), "kd")["passed"]
    assert sanity.transfer(0.2, 0.5, 10, 0.1, "ce")["passed"] and not sanity.transfer(0.9, 0.5, 10, 0.1, "ce")["passed"]


class ConstantScore:
    """A metric whose score ignores its input: no gradient reaches the image."""

    layers = ()

    def score(self, view):
        return torch.zeros(len(view.z))

    def to(self, device):
        return self


def test_the_gradient_check_measures_a_real_term(ce_classifier, test_batch):
    x = test_batch[0][:6]
    live = sanity.term_gradients(ce_classifier, ScoreTerm(create("confidence"), -0.5), x)
    assert sanity.gradient(live, "confidence")["passed"]
    dead = sanity.term_gradients(ce_classifier, ScoreTerm(ConstantScore(), 0.0), x)
    assert not sanity.gradient(dead, "constant")["passed"]


def test_worst_case_is_the_union_over_attacks_at_each_eps():
    def rec(attack, eps, fooled):
        return {"model": "rce", "objective": "rce", "metric": "kd", "attack": attack, "eps": eps, "fooled": fooled,
                "operating_point": {"n_clean_correct": 4}}

    recs = [rec("a", 0.1, [True, False, False, False]), rec("b", 0.1, [False, True, False, False]),
            rec("a", 0.3, [True, True, True, False]), rec("c", None, [True, True, True, True])]
    out = worst_case(recs)
    assert [(w["eps"], w["n_fooled"], w["attack_success_rate"]) for w in out] == [(0.1, 2, 0.5), (0.3, 3, 0.75)]
    assert out[0]["attacks"] == ["a", "b"]  # an attack without an ε (C&W-wb) is not on the ε axis
    lo, hi = out[0]["interval"]
    assert lo < 0.5 < hi
    # a larger ε where the attacks fooled fewer images still counts every image fooled at a smaller ε
    weaker = worst_case([rec("a", 0.1, [True, True, True, False]), rec("a", 0.2, [False, False, False, True])])
    assert [(w["attack_success_rate"], w["sr_at_eps_only"]) for w in weaker] == [(0.75, 0.75), (1.0, 0.25)]
    dropped = sanity.monotone_eps(weaker, "kd")
    assert dropped["passed"] is False and "3 of 4 at ε 0.1 but 1 at ε 0.2" in dropped["detail"], dropped
    assert sanity.monotone_eps(out, "kd")["passed"] is True


def test_wilson_interval_known_values():
    from rcedetect.stats.metrics import wilson_interval

    lo, hi = wilson_interval(5, 10)  # the classic 95 % Wilson interval of 5/10: 0.2366 .. 0.7634
    assert abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4
    assert abs(wilson_interval(0, 20)[0]) < 1e-12 and abs(wilson_interval(20, 20)[1] - 1.0) < 1e-12
    assert wilson_interval(0, 0) == (None, None)


def test_eps_reaching_reads_the_curve():
    pts = [(0.1, 0.2), (0.2, 0.6), (0.3, 0.95)]
    assert eps_reaching(pts, 0.5) == "0.175"  # linear between 0.1 (20 %) and 0.2 (60 %)
    assert eps_reaching(pts, 0.9) == "0.286"
    assert eps_reaching(pts, 0.1) == "≤ 0.1" and eps_reaching([(0.1, 0.2), (0.3, 0.4)], 0.5) == "> 0.3"


def test_the_tiny_run_reports_the_adaptive_evaluation(tiny_run):
    _, results, _ = tiny_run
    ad = results["adaptive"]
    assert ad["fpr"] == 0.05 and ad["metrics"] == ["kd", "non_me", "confidence", "kd_bu", "lid", "mahalanobis"]
    combos = {(r["model"], r["metric"], r["attack"]) for r in ad["records"]}
    assert ("rce", "kd", "feature_pgd") in combos and ("rce", "non_me", "feature_pgd") not in combos
    for r in ad["records"]:
        op = r["operating_point"]
        assert r["threshold"] == op["threshold"] and 0 <= op["attack_success_rate"] <= 1
        assert len(r["fooled"]) == r["n_images"] and sum(r["fooled"]) <= op["n_clean_correct"]
        lo, hi = op["bootstrap"]["attack_success_rate"]
        assert lo is None or lo <= op["attack_success_rate"] + 1e-9 <= hi + 2e-9
    names = {c["check"] for cs in ad["sanity"].values() for c in cs}
    assert names == {"large_eps", "more_iterations", "lambda_zero", "gradient", "gradient_free", "transfer",
                     "monotone_eps"}
    checked = {(c["metric"], c["check"]) for cs in ad["sanity"].values() for c in cs}
    assert {("lid", "large_eps"), ("mahalanobis", "gradient"), ("kd_bu", "monotone_eps")} <= checked
    assert all(c["passed"] for cs in ad["sanity"].values() for c in cs if c["check"] == "lambda_zero")
    # every Table-2 record carries the operating points of every detector, thresholds from held-out images only
    for r in results["attacks"]:
        ops = {m: d["operating_points"]["fpr_5"]["threshold"] for m, d in r["detection"].items()}
        assert set(ops) == {"confidence", "non_me", "kd", "kd_bu", "lid", "mahalanobis"}
    same_model = [r for r in results["attacks"] if r["model"] == "rce"]
    assert len({r["detection"]["kd"]["operating_points"]["fpr_5"]["threshold"] for r in same_model}) == 1
