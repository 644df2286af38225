"""The report's check of the paper's claims: each verdict follows from the numbers and their intervals (hand-built
results), "does not hold" only where the intervals resolve it."""

from __future__ import annotations

from rcedetect.report.claims import claims_blocks


def _det(auc: float, lo: float, hi: float) -> dict:
    return {"auc_strict": auc, "operating_points": {"fpr_5": {"bootstrap": {"auc": [lo, hi]}}}}


def _results(kd_ce, kd_rce, rate=0.05, n_sub=100, dist=((3.0, (2.8, 3.2)), (5.0, (4.0, 6.0)))):
    models = {"ce": {"role": "main", "objective": "ce", "arch": "resnet8"},
              "rce": {"role": "main", "objective": "rce", "arch": "resnet8"}}
    attacks = []
    for m, kd, (d, iv) in (("ce", kd_ce, dist[0]), ("rce", kd_rce, dist[1])):
        attacks.append({"model": m, "attack": "fgsm", "eps": 0.16, "n_pairs": 100,
                        "detection": {"kd": _det(*kd), "non_me": _det(*kd)}})
        attacks.append({"model": m, "attack": "cw_wb", "eps": None, "n_pairs": 50,
                        "wb": {"mean_distortion": d, "distortion_interval": list(iv), "n_efficient": 40}})
    transfer = [{"substitute": "ce", "target": "target_ce", "substitute_arch": "resnet8", "target_arch": "resnet20",
                 "substitute_objective": "ce", "target_objective": "ce", "transfer_rate": rate,
                 "n_substitute_success": n_sub, "n_pairs": 40, "detection": {"kd": _det(0.97, 0.95, 0.99)}}]
    return {"models": models, "attacks": attacks, "transfer": transfer, "table2_eps": 0.16}


def _items(results, col="cifar10") -> list[str]:
    blocks = claims_blocks(results, col)
    return next(b[1] for b in blocks if b[0] == "ul")


def test_rce_above_ce_holds():
    kd = _items(_results((0.90, 0.88, 0.92), (0.99, 0.98, 1.0)))[0]
    assert "holds at this scale" in kd and "100 pairs" in kd


def test_a_reversal_inside_the_intervals_is_not_resolved():
    kd = _items(_results((0.90, 0.85, 0.95), (0.89, 0.84, 0.94)))[0]
    assert "not resolved" in kd and "does not hold" not in kd


def test_a_reversal_the_intervals_resolve_does_not_hold():
    kd = _items(_results((0.95, 0.93, 0.97), (0.80, 0.77, 0.83)))[0]
    assert "does not hold at this scale" in kd and "FGSM" in kd


def test_distortion_and_transfer_verdicts():
    items = _items(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0)))
    assert any("larger distortions on RCE: holds" in i for i in items)
    assert any("Fewer than 15 %" in i and "holds at this scale" in i for i in items)
    over = _items(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0), rate=0.40, n_sub=200))
    assert any("Fewer than 15 %" in i and "does not hold" in i for i in over)
    near = _items(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0), rate=0.16, n_sub=30))
    assert any("Fewer than 15 %" in i and "not resolved" in i for i in near)
    swapped = _items(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0), dist=((5.0, (4.5, 5.5)), (3.0, (2.5, 3.5)))))
    assert any("larger distortions on RCE: does not hold" in i for i in swapped)


def test_mnist_adds_the_transfer_auc_claim_and_other_datasets_have_none():
    items = _items(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0)), col="mnist")
    assert any("Fewer than 50 %" in i for i in items)
    assert any("exceeds 95" in i and "holds" in i for i in items)
    assert claims_blocks(_results((0.9, 0.88, 0.92), (0.99, 0.98, 1.0)), None) == []
