"""The examples say what happened: short reprs of AttackResult and Detector (counts, shapes, threshold; no tensor
dumps), a warning when an attack built with ``attacks.create`` succeeds on none of its images (and none from the
experiment runners' per-batch attacks), training logs on stderr rather than stdout, and the K-density per_class
warning said once, briefly."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from rcedetect import attacks
from rcedetect.attacks.base import NoSuccessWarning
from rcedetect.detectors import Detector


def test_attack_result_repr_has_counts_and_shapes_not_tensors():
    x = torch.zeros(5, 1, 4, 4)
    res = attacks.AttackResult(x_adv=x + 0.1, success=torch.tensor([True, False, True, False, False]), x=x)
    text = repr(res)
    assert text.startswith("AttackResult(5 images 1×4×4, 2 succeeded, mean L2 25.5")  # 0.1 × 255
    assert "tensor" not in text and len(text) < 150
    none = attacks.AttackResult(x_adv=x, success=torch.zeros(5, dtype=torch.bool), x=x)
    assert repr(none) == "AttackResult(5 images 1×4×4, 0 succeeded)"


def test_detector_repr_says_metric_threshold_and_calibration(rce_classifier, test_batch):
    x, _ = test_batch
    det = Detector(rce_classifier, "confidence").fit(None)
    assert "not calibrated" in repr(det) and "classifier=RCE" in repr(det)
    det.calibrate(x[:40], fpr=0.05)
    text = repr(det)
    assert f"threshold={det.threshold:.4g} (5 % FPR on 40 clean images)" in text and "tensor" not in text


def test_an_attack_that_fools_nothing_warns(ce_classifier, test_batch):
    x, y = test_batch
    with pytest.warns(NoSuccessWarning, match=r"'fgsm' succeeded on none of its 6 images.*raise its budget"):
        res = attacks.create("fgsm", eps=0.0)(ce_classifier, x[:6], y[:6])
    assert not res.success.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoSuccessWarning)
        strong = attacks.create("bim", eps=0.3)(ce_classifier, x[:6], y[:6])  # succeeds: no warning
        assert strong.success.any()
        factory = attacks.attack_factory("fgsm", {}, 0.0, seed=0)  # the runners' per-batch attacks stay quiet
        assert not factory(0)(ce_classifier, x[:6], y[:6]).success.any()


def test_the_white_box_attack_warns_only_when_it_fools_nothing(rce_classifier, test_batch):
    x, y = test_batch
    det = Detector(rce_classifier, "confidence").fit(None).calibrate(x[16:56], fpr=0.05)
    weak = attacks.create("cw_wb", detector=det.attack_term(), max_iterations=1, binary_search_steps=1,
                          initial_const=1e-6)
    with pytest.warns(NoSuccessWarning, match="'cw_wb'"):
        weak(rce_classifier, x[:4], y[:4])


def test_training_logs_go_to_stderr(tmp_path, synthetic, capsys):
    from conftest import tiny_train_config

    from rcedetect.training import fit

    fit(tiny_train_config("ce", steps=4, eval_every=2, checkpoint_every=4, lr_boundaries=(2,)), tmp_path / "run",
        dataset=synthetic, progress=True)
    out, err = capsys.readouterr()
    assert "test_accuracy" not in out
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [entry["step"] for entry in logged] == [2, 4]


def test_the_per_class_warning_is_said_once_and_briefly(rce_classifier, synthetic):
    x, y = synthetic.train_images()[:200], synthetic.y_train[:200]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):  # every fit of the same data: one warning in all
            Detector(rce_classifier, "kd", per_class=1000).fit(x, y)
    said = [str(w.message) for w in caught if "per_class" in str(w.message)]
    assert len(said) == 1, said
    assert said[0].startswith("K-density: fewer training features than per_class=1000") and len(said[0]) < 140
