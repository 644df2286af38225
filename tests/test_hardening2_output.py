"""Hardening II, nothing half-written: ``rce report`` refuses absurd values before drawing and writes its files only
when the whole report is drawn; a refused ``rce reproduce`` leaves no lock file and a refused ``rce train`` no
output folder."""

from __future__ import annotations

import json

import pytest

from rcedetect.cli import main
from rcedetect.core.errors import CheckpointError, ConfigError
from rcedetect.core.schemas import check_result_values
from rcedetect.reproduce.lock import LOCK_NAME, output_lock


def _results(**attack) -> dict:
    return {"format": "rcedetect-results", "models": {"ce": {"role": "main", "arch": "resnet8", "objective": "ce"}},
            "attacks": [{"model": "ce", "attack": "fgsm", "eps": 0.1, **attack}], "timings": {"total_seconds": 3.0}}


ABSURD = {
    "a negative count": ({"n_images": -4}, "n_images"),
    "a string count": ({"n_pairs": "many"}, "n_pairs"),
    "a float count": ({"detection": {"kd": {"n_adversarial": 2.5}}}, "n_adversarial"),
    "-1e308 seconds": ({"attack_seconds": -1e308}, "attack_seconds"),
    "infinite seconds": ({"seconds_per_example": float("inf")}, "seconds_per_example"),
    "a rate above 1": ({"detection": {"kd": {"clean_rejection_rate": 7}}}, "clean_rejection_rate"),
    "a string rate": ({"transfer_rate": "high"}, "transfer_rate"),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_values_in_results_are_refused_before_any_figure(tmp_path, case, capsys):
    attack, word = ABSURD[case]
    with pytest.raises(CheckpointError, match=word):
        check_result_values(_results(**attack), "results.json")
    (tmp_path / "results.json").write_text(json.dumps(_results(**attack)))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no figure, no report, no staging


def test_stage_timings_and_nulls_pass_the_value_check():
    results = _results(n_images=4, attack_seconds=1.5, success_rate=None)
    results["timings"] = {"stage_seconds": {"train ce": 3.0}, "total_seconds": 4.0}
    assert check_result_values(results, "r") is results
    results["timings"]["stage_seconds"]["train ce"] = -1.0
    with pytest.raises(CheckpointError, match="stage_seconds"):
        check_result_values(results, "r")


def test_a_report_that_fails_midway_writes_nothing(tmp_path, monkeypatch, capsys):
    from rcedetect import report
    from rcedetect.core.io import atomic_write_bytes

    def half(out_dir, results):  # draws one figure, then meets a value it cannot draw
        atomic_write_bytes(out_dir / "figures" / "fig1.png", b"png")
        raise ValueError("a value deep inside")

    monkeypatch.setattr(report, "render", half)
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert main(["report", str(tmp_path)]) == 2
    assert "deep inside" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_finished_report_replaces_the_old_files(tmp_path, monkeypatch):
    from rcedetect import report
    from rcedetect.core.io import atomic_write_bytes

    def whole(out_dir, results):
        atomic_write_bytes(out_dir / "figures" / "fig1.png", b"new")
        return atomic_write_bytes(out_dir / "report.md", b"md"), atomic_write_bytes(out_dir / "report.html", b"html")

    monkeypatch.setattr(report, "render", whole)
    monkeypatch.setattr(report, "summary", lambda results: "summary")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "fig1.png").write_bytes(b"old")
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / "fig1.png").read_bytes() == b"new" and (tmp_path / "report.md").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report-")]


# -- lock files and run folders ----------------------------------------------------------------------------
def test_a_refused_run_leaves_no_lock_file_or_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError), output_lock(out):
        assert (out / LOCK_NAME).exists()
        raise ConfigError("refused")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "results.json").write_text("{}")
    with pytest.raises(ConfigError), output_lock(kept):
        raise ConfigError("refused")
    assert (kept / "results.json").exists() and (kept / LOCK_NAME).exists()  # a folder with work in it is kept
    with output_lock(kept):  # and its lock still works
        pass


def test_rce_reproduce_refused_after_the_lock_leaves_nothing(tmp_path, capsys):
    import numpy as np

    f = tmp_path / "colour.npz"  # colour images for a preset of one-channel models: refused when the data is loaded
    np.savez(f, x_train=np.zeros((8, 12, 12, 3), np.uint8), y_train=np.arange(8) % 4,
             x_test=np.zeros((8, 12, 12, 3), np.uint8), y_test=np.arange(8) % 4)
    out = tmp_path / "out"
    code = main(["reproduce", "--preset", "tiny", "--quiet", "--out", str(out), "--data-file", str(f), "--set",
                 "experiment.channels=1", "--set", "experiment.threads=1"])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()  # the folder it made for the run, its lock file with it


def test_rce_train_refused_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "cpu-mnist5k-ce", "--set", 'dataset="synthetic"', "--set", "arch=\"resnet8\"",
                 "--set", "steps=4", "--set", "eval_every=2", "--set", "checkpoint_every=2", "--set",
                 "lr_boundaries=[2]", "--set", "lr_values=[1e30,1e30]", "--set", "batch_size=8", "--quiet",
                 "--device", "cpu", "--out", str(out)])
    assert code == 2 and "diverged" in capsys.readouterr().err
    assert not out.exists()
