"""``rce attack``: outputs, agreement with the library call, resume after a kill, errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from rcedetect import CheckpointError, checkpoint
from rcedetect.attacks.gradient import FGSM
from rcedetect.cli import main
from rcedetect.commands.attack import select
from rcedetect.io import load_tensors

FIELDS = {"x_adv", "success", "target", "iterations", "indices", "y", "pred_clean", "pred_adv"}


def only_dir(run_dir, prefix):
    dirs = sorted((run_dir / "attacks").glob(f"{prefix}-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_fgsm_outputs_and_resume(trained_runs, synthetic, capsys):
    run_dir = trained_runs["ce"]
    argv = ["attack", str(run_dir), "--attack", "fgsm", "--eps", "0.1", "--n", "32", "--batch-size", "8",
            "--quiet"]
    assert main(argv) == 0
    out = only_dir(run_dir, "fgsm")
    adv = load_tensors(out / "adv.safetensors")
    assert set(adv) == FIELDS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 32 and summary["settings"] == {"eps": 0.1}
    assert summary["linf_max"] == pytest.approx(0.1, abs=1e-6)
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["seconds_per_example"] > 0

    # the same as calling the library on the selected images
    idx = select(len(synthetic.x_test), 32, 0, first=False)
    assert torch.equal(adv["indices"], idx)
    x, y = synthetic.test_images()[idx], synthetic.y_test[idx]
    assert torch.equal(adv["y"], y)
    clf = checkpoint.load(run_dir).classifier
    ref = FGSM(0.1)(clf, x, y)
    torch.testing.assert_close(adv["x_adv"], ref.x_adv, atol=1e-6, rtol=0)
    assert torch.equal(adv["success"], ref.success)
    assert torch.equal(adv["pred_clean"], clf.predict(x))
    assert torch.equal(adv["pred_adv"], clf.predict(adv["x_adv"]))
    assert summary["success_rate"] == pytest.approx(float(ref.success.float().mean()))

    # a second run is a no-op
    assert main(argv) == 0
    assert "already" in capsys.readouterr().out

    # kill-and-resume: the merged output and one part are lost; the others are reused untouched
    parts = sorted((out / "parts").glob("part-*.safetensors"))
    assert len(parts) == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}
    (out / "adv.safetensors").unlink()
    (out / "summary.json").unlink()
    parts[2].unlink()
    assert main(argv) == 0
    again = load_tensors(out / "adv.safetensors")
    for k in FIELDS:
        assert torch.equal(again[k], adv[k]), k
    for p in parts:
        if p != parts[2]:
            assert p.stat().st_mtime_ns == stamps[p.name], f"{p.name} was recomputed"
    assert parts[2].is_file()


def test_seeded_attack_resumes_identically(trained_runs):
    run_dir = trained_runs["rce"]
    argv = ["attack", str(run_dir), "--attack", "noise", "--eps", "0.2", "--n", "12", "--batch-size", "4",
            "--seed", "5", "--first", "--quiet"]
    assert main(argv) == 0
    out = only_dir(run_dir, "noise")
    adv = load_tensors(out / "adv.safetensors")
    assert torch.equal(adv["indices"], torch.arange(12))
    assert not torch.equal(adv["x_adv"][:4], adv["x_adv"][4:8])  # batches get different seeds
    (out / "adv.safetensors").unlink()
    sorted((out / "parts").glob("part-*"))[1].unlink()
    assert main(argv) == 0
    assert torch.equal(load_tensors(out / "adv.safetensors")["x_adv"], adv["x_adv"])


@pytest.mark.parametrize("argv, match", [
    (["--attack", "nosuch", "--eps", "0.1"], "unknown attack"),
    (["--attack", "fgsm", "--eps", "-0.1"], "eps"),
    (["--attack", "bim", "--eps", "0.1", "--set", "steps=0"], "steps"),
    (["--attack", "fgsm", "--eps", "0.1", "--set", "bogus=1"], "bogus"),
])
def test_errors_exit_2(trained_runs, capsys, argv, match):
    assert main(["attack", str(trained_runs["ce"]), *argv, "--n", "4"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_missing_run_exits_2(tmp_path, capsys):
    assert main(["attack", str(tmp_path / "nothing"), "--attack", "fgsm", "--eps", "0.1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cw_wb_builds_the_detector_from_the_run(trained_runs):
    pytest.importorskip("rcedetect.detectors.kd")
    run_dir = trained_runs["ce"]
    argv = ["attack", str(run_dir), "--attack", "cw_wb", "--n", "4", "--batch-size", "4", "--quiet",
            "--set", "max_iterations=6", "--set", "binary_search_steps=1"]
    with pytest.warns(UserWarning):  # the synthetic classes hold fewer than 1000 training images each
        assert main(argv) == 0
    out = only_dir(run_dir, "cw_wb")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kd"]["attack_per_class"] == 100 and summary["n"] == 4
    adv = load_tensors(out / "adv.safetensors")
    assert bool((adv["target"] != adv["y"]).all())  # targeted at a random wrong label
    assert bool((adv["x_adv"] >= 0).all() and (adv["x_adv"] <= 1).all())


def test_transfer_to_another_run(trained_runs, synthetic):
    from rcedetect import metrics, transfer

    src, dst = trained_runs["ce"], trained_runs["rce"]
    assert main(["attack", str(src), "--attack", "bim", "--eps", "0.3", "--n", "24", "--batch-size", "24",
                 "--quiet"]) == 0
    out = only_dir(src, "bim")
    adv = transfer.load_adversarial(out)
    assert len(adv) == 24 and adv.summary["attack"] == "bim"
    # on its own model the evaluation reproduces the stored predictions
    same = transfer.transfer(out, src)
    assert torch.equal(same.pred_clean, adv.pred_clean) and torch.equal(same.pred_adv, adv.pred_adv)
    # on the other model: its own predictions, and the pair mask of the metrics module
    res = transfer.transfer(out, dst)
    clf = checkpoint.load(dst).classifier
    x = adv.clean_images(synthetic)
    assert torch.equal(res.pred_clean, clf.predict(x)) and torch.equal(res.pred_adv, clf.predict(adv.x_adv))
    assert torch.equal(res.pair_mask, torch.from_numpy(metrics.pair_mask(res.y, res.pred_clean, res.pred_adv)))
    rec = res.record()
    assert rec["n"] == 24 and 0.0 <= rec["transfer_rate"] <= 1.0
    (out / "adv.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        transfer.load_adversarial(out)
