"""``rce attack``: outputs, agreement with the library call and with the pipeline's scoring, resume after a kill,
black-box transfer, errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from rcedetect import CheckpointError
from rcedetect.attacks.gradient import FGSM
from rcedetect.cli import main
from rcedetect.core.io import load_tensors
from rcedetect.detectors import Detector, create
from rcedetect.evaluation import attack_store
from rcedetect.evaluation.scoring import score_attack
from rcedetect.models import checkpoint, features

FIELDS = {"x_adv", "success", "iterations", "indices", "y", "extra.label", "extra.pred_adv"}


def only_dir(run_dir, prefix):
    dirs = sorted((run_dir / "attacks").glob(f"{prefix}-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def load(out, n, batch, x=None):
    return attack_store.load_parts(out, n, batch, x)


def test_fgsm_outputs_and_resume(trained_runs, synthetic, capsys):
    run_dir = trained_runs["ce"]
    argv = ["attack", str(run_dir), "--attack", "fgsm", "--eps", "0.1", "--n", "32", "--batch-size", "8",
            "--quiet"]
    assert main(argv) == 0
    out = only_dir(run_dir, "fgsm")
    parts = sorted(out.glob("part-*.safetensors"))
    assert len(parts) == 4 and set(load_tensors(parts[0])) == FIELDS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 32 and summary["settings"] == {"eps": 0.1}
    assert summary["linf_max"] == pytest.approx(0.1, abs=1e-6)
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["seconds_per_example"] > 0

    # the same as calling the library on the selected images (the pipeline's choice of images)
    idx = attack_store.choose_images(len(synthetic.x_test), 32, 0)
    x, y = synthetic.test_images()[idx], synthetic.y_test[idx]
    res, _, stored = load(out, 32, 8, x)
    assert torch.equal(stored["indices"], idx) and torch.equal(stored["y"], y)
    clf = checkpoint.load(run_dir).classifier
    ref = FGSM(0.1)(clf, x, y)
    torch.testing.assert_close(res.x_adv, ref.x_adv, atol=1e-6, rtol=0)
    assert torch.equal(res.success, ref.success)
    assert summary["success_rate"] == pytest.approx(float(ref.success.float().mean()))
    pairs = (clf.predict(x) == y) & (clf.predict(res.x_adv) != y)
    assert summary["n_pairs"] == int(pairs.sum())

    # the run is scored by the pipeline's own code: the summary's detection numbers are score_attack's, and the
    # K-density detector the pipeline fits scores it too
    clean = features.extract(clf, x, y)
    free = {m: create(m) for m in ("confidence", "non_me")}
    rec = score_attack(clf, res, y, clean, free)
    assert rec["detection"] == summary["detection"] and set(summary["detection"]) == {"confidence", "non_me"}
    kd = Detector(clf, "kd", per_class=50).fit(synthetic.train_images(), synthetic.y_train).scorer
    full = score_attack(clf, res, y, clean, {**free, "kd": kd}, keep_kd_values=True)
    assert full["n_pairs"] == summary["n_pairs"] and full["detection"]["kd"]["n_pairs"] == summary["n_pairs"]
    assert len(full["log_kd_adv"]) == summary["n_pairs"]

    # a second run is a no-op
    assert main(argv) == 0
    assert "already" in capsys.readouterr().out

    # kill-and-resume: the summary and one part are lost; the others are reused untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    (out / "summary.json").unlink()
    parts[2].unlink()
    assert main(argv) == 0
    again, _, _ = load(out, 32, 8, x)
    assert torch.equal(again.x_adv, res.x_adv) and torch.equal(again.success, res.success)
    for p in parts:
        if p != parts[2]:
            assert p.stat().st_mtime_ns == stamps[p.name], f"{p.name} was recomputed"
    assert parts[2].is_file()
    assert json.loads((out / "summary.json").read_text())["detection"] == summary["detection"]


def test_seeded_attack_resumes_identically(trained_runs):
    run_dir = trained_runs["rce"]
    argv = ["attack", str(run_dir), "--attack", "noise", "--eps", "0.2", "--n", "12", "--batch-size", "4",
            "--seed", "5", "--first", "--quiet"]
    assert main(argv) == 0
    out = only_dir(run_dir, "noise")
    res, _, stored = load(out, 12, 4)
    assert torch.equal(stored["indices"], torch.arange(12))
    assert not torch.equal(res.x_adv[:4], res.x_adv[4:8])  # batches get different seeds
    sorted(out.glob("part-*"))[1].unlink()
    (out / "summary.json").unlink()
    assert main(argv) == 0
    assert torch.equal(load(out, 12, 4)[0].x_adv, res.x_adv)


@pytest.mark.parametrize("argv, match", [
    (["--attack", "nosuch", "--eps", "0.1"], "unknown attack"),
    (["--attack", "fgsm", "--eps", "-0.1"], "eps"),
    (["--attack", "bim", "--eps", "0.1", "--set", "steps=0"], "steps"),
    (["--attack", "fgsm", "--eps", "0.1", "--set", "bogus=1"], "bogus"),
])
def test_errors_exit_2(trained_runs, capsys, argv, match):
    try:
        code = main(["attack", str(trained_runs["ce"]), *argv, "--n", "4"])
    except SystemExit as e:  # a usage error of argparse (--attack takes the registered names)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_missing_run_exits_2(tmp_path, capsys):
    assert main(["attack", str(tmp_path / "nothing"), "--attack", "fgsm", "--eps", "0.1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cw_wb_builds_the_detector_from_the_run(trained_runs):
    run_dir = trained_runs["ce"]
    argv = ["attack", str(run_dir), "--attack", "cw_wb", "--n", "4", "--batch-size", "4", "--quiet",
            "--set", "max_iterations=6", "--set", "binary_search_steps=1"]
    with pytest.warns(UserWarning):  # the synthetic classes hold fewer than 1000 training images each
        assert main(argv) == 0
    out = only_dir(run_dir, "cw_wb")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detector"]["attack_per_class"] == 100 and summary["n"] == 4
    res, _, stored = load(out, 4, 4)
    assert bool((res.target != stored["y"]).all())  # targeted at a random wrong label
    assert "f2" in res.extra and bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())


def test_transfer_to_another_run(trained_runs, synthetic):
    from rcedetect.evaluation import transfer
    from rcedetect.stats import metrics

    src, dst = trained_runs["ce"], trained_runs["rce"]
    assert main(["attack", str(src), "--attack", "bim", "--eps", "0.3", "--n", "24", "--batch-size", "24",
                 "--quiet"]) == 0
    out = only_dir(src, "bim")
    adv = transfer.load_adversarial(out, synthetic)
    assert len(adv) == 24 and adv.summary["attack"] == "bim"
    assert torch.equal(adv.result.x, synthetic.test_images()[adv.indices])
    # on its own model the transfer record is the attack's own pair count
    same = transfer.transfer(out, src)
    assert same["n_pairs"] == adv.summary["n_pairs"] and same["detection"] == adv.summary["detection"]
    # on the other model: its own predictions and the pair mask of the metrics module
    rec = transfer.transfer(out, dst)
    clf = checkpoint.load(dst).classifier
    pc, pa = clf.predict(adv.result.x), clf.predict(adv.x_adv)
    assert rec["n_pairs"] == int(metrics.pair_mask(adv.y, pc, pa).sum()) and rec["n_images"] == 24
    ok = adv.result.success & (pc == adv.y)
    assert rec["n_substitute_success"] == int(ok.sum())
    if ok.any():
        assert rec["transfer_rate"] == pytest.approx(float((pa[ok] != adv.y[ok]).float().mean()), abs=1e-6)
    assert set(rec["detection"]) == {"confidence", "non_me"}
    min(out.glob("part-*.safetensors")).write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        transfer.load_adversarial(out, synthetic)
