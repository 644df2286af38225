"""``rce calibrate`` and ``rce adaptive``: an attack on a user's own run and its calibrated detector; bad input is
one line on stderr, exit 2, and nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from rcedetect.cli import main
from rcedetect.detectors import Detector
from rcedetect.evaluation import attack_store
from rcedetect.models import checkpoint


def test_adaptive_needs_a_calibrated_detector(trained_runs, capsys, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    assert main(["adaptive", str(run), "--attack", "pgd_detector", "--metric", "kd", "--eps", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "rce calibrate" in err and err.count("\n") == 1
    assert not (run / "adaptive").exists()


def test_calibrate_then_adaptive(trained_runs, synthetic, capsys):
    run = trained_runs["rce"]
    assert main(["calibrate", str(run), "--metric", "kd", "--per-class", "50", "--calibration-size", "80",
                 "--quiet"]) == 0
    assert "threshold" in capsys.readouterr().out
    det = Detector.load(run / "detector-kd", checkpoint.load(run).classifier)
    assert det.calibrated and det.n_calibration == 80 and det.fpr == 0.05
    argv = ["adaptive", str(run), "--attack", "pgd_detector", "--metric", "kd", "--eps", "0.3", "--n", "16",
            "--batch-size", "8", "--set", "steps=5", "--set", "lambdas=[0.0, 10.0]", "--bootstrap", "50", "--quiet"]
    assert main(argv) == 0
    assert "SR@5" in capsys.readouterr().out
    out = next((run / "adaptive").glob("kd-pgd_detector-*"))
    summary = json.loads((out / "summary.json").read_text())
    op = summary["operating_point"]
    assert summary["threshold"] == pytest.approx(det.threshold) and summary["n"] == 16
    assert op["threshold"] == pytest.approx(det.threshold, rel=1e-5)  # the same clean held-out images
    assert 0 <= op["attack_success_rate"] <= 1 and op["n_images"] == 16
    # the images are drawn before the calibration images at the end of the test split
    _, _, stored = attack_store.load_parts(out, 16, 8)
    assert int(stored["indices"].max()) < len(synthetic.x_test) - 80
    assert torch.equal(stored["indices"], attack_store.choose_images(len(synthetic.x_test) - 80, 16, 0))
    assert main(argv) == 0 and "already" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--attack", "pgd_detector", "--eps", "5"], "--eps"),
    (["--attack", "pgd_detector", "--eps", "0.1", "--set", "lambdas=[-1.0]"], "lambda"),
    (["--attack", "fgsm", "--eps", "0.1"], "not an attack on a detector"),
    (["--attack", "pgd_detector"], "needs --eps"),
    (["--attack", "nosuch", "--eps", "0.1"], "unknown attack"),
])
def test_bad_input_exits_2_and_writes_nothing(trained_runs, capsys, extra, match):
    run = trained_runs["rce"]
    before = sorted(p.name for p in (run / "adaptive").glob("*")) if (run / "adaptive").exists() else []
    assert main(["adaptive", str(run), "--metric", "kd", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    after = sorted(p.name for p in (run / "adaptive").glob("*")) if (run / "adaptive").exists() else []
    assert after == before


def test_an_unknown_detector_name_is_named(tmp_path, capsys):
    from rcedetect.cli import main

    assert main(["adaptive", str(tmp_path), "--metric", "lda", "--attack", "pgd_detector", "--eps", "0.1"]) == 2
    assert "unknown detection metric 'lda'" in capsys.readouterr().err
