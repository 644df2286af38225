"""The FPR of ``rce serve`` / ``rce detect`` reaches ``Detector.threshold`` through one typed, frozen
:class:`FitOptions`: built from the parsed options in ``commands/`` only, checked once (a bad ``--fpr`` is one line,
exit 2, before any model loads), whatever the number of detectors built from it."""

from __future__ import annotations

import json
import shutil

import pytest
from test_serve_bodies import ONLY_CHECKPOINT

from rcedetect.cli import build_parser, main
from rcedetect.commands import fit_options
from rcedetect.evaluation import calibrated
from rcedetect.evaluation.calibrated import FitOptions
from rcedetect.models import checkpoint
from rcedetect.serve import engine, runs


@pytest.fixture
def run(trained_runs, tmp_path):
    shutil.copytree(trained_runs["rce"], tmp_path / "run", ignore=ONLY_CHECKPOINT)
    return tmp_path / "run"


@pytest.fixture
def checks(monkeypatch):
    """How many times the options are checked (FitOptions built)."""
    count = []
    check = FitOptions.__post_init__
    monkeypatch.setattr(FitOptions, "__post_init__", lambda self: (count.append(1), check(self))[1])
    return count


def test_the_fpr_of_rce_serve_reaches_every_threshold_checked_once(run, checks):
    args = build_parser().parse_args(["serve", str(run), "--metric", "confidence", "--fpr", "0.2", "--per-class",
                                      "50", "--quiet", "--device", "cpu"])
    opts = fit_options(args, *engine.served_metrics(args.metric))
    eng = engine.load(runs.resolve(run), args.metric, opts, args.device)
    assert len(checks) == 1 and opts.fpr == 0.2
    assert set(eng.detectors) == {"kd", "non_me", "confidence"} and eng.detector.metric == "confidence"
    for det in eng.detectors.values():  # each threshold rejects (at most) 20 % of the clean held-out images
        assert det.fpr == 0.2 and det.extra["key"]["fpr"] == 0.2
        assert 0 <= det.clean_rejection_rate <= 0.2  # ties can only lower it


def test_the_fpr_of_rce_detect_reaches_the_threshold_checked_once(run, checks, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((2, 1, 12, 12), np.float32))
    assert main(["detect", str(run), "--metric", "non_me", "--fpr", "0.1", "--quiet", "--device", "cpu", "--json",
                 "--input", str(tmp_path / "x.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(checks) == 1 and out["fpr"] == 0.1
    det = calibrated.calibrated_detector(checkpoint.load(run), run, "non_me", FitOptions(fpr=0.1))  # the cache
    assert det.threshold == out["threshold"] and det.fpr == 0.1


@pytest.mark.parametrize("command", ["serve", "detect", "calibrate", "fit-detector", "evaluate-detector"])
@pytest.mark.parametrize("fpr", ["1.5", "-0.1", "nan"])
def test_a_bad_fpr_is_one_line_before_any_model_loads(command, fpr, run, monkeypatch, capsys):
    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(checkpoint, "load", no_load)
    extra = {"detect": ["--metric", "kd", "--input", "x.png"], "calibrate": ["--metric", "kd"],
             "evaluate-detector": ["--detector", "kd", "--eps", "0.1"]}.get(command, [])
    assert main([command, str(run), "--fpr", fpr, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"rce {command}: error:") and "fpr" in err, err
    assert not list(run.glob("detector-*"))


def test_the_options_are_declared_once():
    """Each command that fits a run's detector shows FitOptions' defaults; the paper's three come from the
    registry."""
    from rcedetect.detectors import REGISTRY, paper_metrics

    assert set(paper_metrics()) == {m for m, c in REGISTRY.items() if c.in_paper} and paper_metrics()[0] == "kd"
    given = {"detect": ["--metric", "kd", "--input", "x"], "calibrate": ["--metric", "kd"], "serve": [],
             "fit-detector": [], "evaluate-detector": ["--detector", "kd", "--eps", "0.1"]}
    for command, extra in given.items():
        assert fit_options(build_parser().parse_args([command, "RUN", *extra])) == FitOptions(), command
