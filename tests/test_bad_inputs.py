"""A table of bad command-line inputs, each answered with one line on stderr and exit status 2, and nothing
half-written: bad settings, forged or hand-edited run files, bad image files, bad output folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rcedetect.cli import main
from rcedetect.core.io import sha256_file

TRAIN = ["train", "--preset", "cpu-mnist5k-ce", "--set", 'dataset="synthetic"', "--set", "steps=4", "--set",
         "eval_every=2", "--set", "checkpoint_every=2", "--set", "lr_boundaries=[2]", "--set", "lr_values=[0.05,0.01]",
         "--quiet", "--device", "cpu"]
TINY = ["reproduce", "--preset", "tiny", "--quiet", "--set", "experiment.threads=1"]


def _edit_index(run: Path, **fields) -> None:
    meta = json.loads((run / "checkpoint.json").read_text())
    meta.update(fields)
    (run / "checkpoint.json").write_text(json.dumps(meta))


def _rewrite_weights(run: Path, change) -> None:
    """Rewrite the weights with ``change(state)`` and re-sign them, as a forger would."""
    meta = json.loads((run / "checkpoint.json").read_text())
    path = run / meta["weights"]
    save_file(change(load_file(path)), path)
    _edit_index(run, weights_sha256=sha256_file(path))


def _nan_weights(state):
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    return state


def _images(run: Path, array) -> str:
    path = run.parent / "images.npy"
    np.save(path, array)
    return str(path)


def _safetensors(run: Path, x) -> str:
    path = run.parent / "images.safetensors"
    save_file({"x": x}, path)
    return str(path)


def _detect(run: Path, path: str) -> list[str]:
    return ["detect", str(run), "--metric", "confidence", "--calibration-size", "50", "--quiet", "--input", path]


def _attack(run: Path, *extra: str) -> list[str]:
    return ["attack", str(run), "--attack", "fgsm", "--n", "4", "--quiet", "--device", "cpu", *extra]


#: name -> (argv builder taking (run copy, tmp_path), a word the error line must contain)
CASES = {
    "negative learning rate": (lambda r, t: [*TRAIN, "--set", "lr_values=[-1.0,0.1]", "--out", str(t / "o")], "lr_values"),
    "NaN momentum": (lambda r, t: [*TRAIN, "--set", "momentum=nan", "--out", str(t / "o")], "momentum"),
    "momentum 1": (lambda r, t: [*TRAIN, "--set", "momentum=1.0", "--out", str(t / "o")], "momentum"),
    "infinite weight decay": (lambda r, t: [*TRAIN, "--set", "weight_decay=inf", "--out", str(t / "o")], "weight_decay"),
    "decreasing boundaries": (lambda r, t: [*TRAIN, "--set", "lr_boundaries=[3,2]", "--set", "lr_values=[1,1,1]",
                                            "--out", str(t / "o")], "lr_boundaries"),
    "a string seed": (lambda r, t: [*TRAIN, "--set", 'seed="abc"', "--out", str(t / "o")], "seed"),
    "a number for a list": (lambda r, t: [*TRAIN, "--set", "lr_values=5", "--out", str(t / "o")], "lr_values"),
    "diverging training": (lambda r, t: [*TRAIN, "--set", "lr_values=[1e30,1e30]", "--out", str(t / "o")], "diverged"),
    "resume: config.json a list": (lambda r, t: ((r / "config.json").write_text("[1, 2]"),
                                                 ["train", "--resume", str(r)])[1], "JSON object"),
    "resume: config.json without train": (lambda r, t: ((r / "config.json").write_text('{"a": 1}'),
                                                        ["train", "--resume", str(r)])[1], "'train'"),
    "checkpoint: weights 123": (lambda r, t: (_edit_index(r, weights=123), ["evaluate", str(r)])[1], "weights"),
    "checkpoint: weights a path": (lambda r, t: (_edit_index(r, weights="../x"), ["evaluate", str(r)])[1], "weights"),
    "checkpoint: config a list": (lambda r, t: (_edit_index(r, config=[1, 2]), ["evaluate", str(r)])[1], "config"),
    "checkpoint: step a string": (lambda r, t: (_edit_index(r, step="x"), ["evaluate", str(r)])[1], "step"),
    "checkpoint: no classes": (lambda r, t: (_edit_index(r, num_classes=0), ["evaluate", str(r)])[1], "num_classes"),
    "checkpoint: metrics a list": (lambda r, t: (_edit_index(r, metrics=[1]), ["evaluate", str(r)])[1], "metrics"),
    "NaN weights": (lambda r, t: (_rewrite_weights(r, _nan_weights), ["evaluate", str(r)])[1], "NaN"),
    "int64 weights": (lambda r, t: (_rewrite_weights(r, lambda s: {k: v.long() for k, v in s.items()}),
                                    ["evaluate", str(r)])[1], "int64"),
    "detect: empty array": (lambda r, t: _detect(r, _images(r, np.zeros((0, 1, 12, 12), np.float32))), "no images"),
    "detect: int64 array": (lambda r, t: _detect(r, _images(r, np.zeros((2, 1, 12, 12), np.int64))), "int64"),
    "detect: another image size": (lambda r, t: _detect(r, _images(r, np.zeros((2, 1, 32, 32), np.float32))), "32x32"),
    "detect: 1x1 images": (lambda r, t: _detect(r, _images(r, np.zeros((2, 1, 1, 1), np.float32))), "1x1"),
    "detect: NaN pixels": (lambda r, t: _detect(r, _safetensors(r, torch.full((2, 1, 12, 12), float("nan")))), "NaN"),
    "detect: out of range": (lambda r, t: _detect(r, _images(r, np.full((2, 1, 12, 12), 2.0, np.float32))), "[0, 1]"),
    "detect: object array": (lambda r, t: (np.save(t / "o.npy", np.array([{}], dtype=object), allow_pickle=True),
                                           _detect(r, str(t / "o.npy")))[1], "npy"),
    "detect: 3-d float array": (lambda r, t: _detect(r, _images(r, np.zeros((2, 12, 12), np.float32))), "NCHW"),
    "attack: infinite eps": (lambda r, t: _attack(r, "--eps", "inf"), "eps"),
    "attack: eps 5": (lambda r, t: _attack(r, "--eps", "5"), "eps"),
    "attack: NaN eps": (lambda r, t: _attack(r, "--eps", "nan"), "eps"),
    "attack: a string seed setting": (lambda r, t: ["attack", str(r), "--attack", "noise", "--eps", "0.1", "--set",
                                                     'seed="x"', "--n", "4"], "seed"),
    "attack: eps true": (lambda r, t: _attack(r, "--set", "eps=true"), "eps"),
    "attack: --export a folder": (lambda r, t: _attack(r, "--eps", "0.1", "--export", str(t)), "folder"),
    "attack: --export under a file": (lambda r, t: ((t / "f").write_text("x"),
                                                    _attack(r, "--eps", "0.1", "--export", str(t / "f" / "a.npz")))[1],
                                      "file"),
    "attack: --export not .npz": (lambda r, t: _attack(r, "--eps", "0.1", "--export", str(t / "a.txt")), ".npz"),
    "detect: a folder that is no attack": (lambda r, t: _detect(r, str(t)), "not an rce attack folder"),
    "detect: an export with NaN": (lambda r, t: (np.savez(t / "e.npz", x_adv=np.full((2, 1, 12, 12), np.nan, np.float32),
                                                          y=np.zeros(2, np.int64)),
                                                 _detect(r, str(t / "e.npz")))[1], "NaN"),
    "reproduce: a string seed": (lambda r, t: [*TINY, "--out", str(t / "o"), "--set", 'experiment.seed="abc"'], "seed"),
    "reproduce: NaN eps": (lambda r, t: [*TINY, "--out", str(t / "o"), "--set", "attacks.fgsm.eps=[nan]"], "eps"),
    "reproduce: eps 5": (lambda r, t: [*TINY, "--out", str(t / "o"), "--set", "attacks.fgsm.eps=[5]"], "eps"),
    "reproduce: -1 threads": (lambda r, t: [*TINY, "--out", str(t / "o"), "--set", "experiment.threads=-1"], "threads"),
    "reproduce: NaN momentum": (lambda r, t: [*TINY, "--out", str(t / "o"), "--set", "models.ce.train.momentum=nan"],
                                "momentum"),
    "reproduce: --out a file": (lambda r, t: ((t / "f").write_text("x"), [*TINY, "--out", str(t / "f")])[1], "file"),
    "reproduce: --out under a file": (lambda r, t: ((t / "f").write_text("x"), [*TINY, "--out", str(t / "f" / "o")])[1],
                                      "file"),
    "report: no results": (lambda r, t: ["report", str(t)], "does not exist"),
    "report: results a list": (lambda r, t: ((t / "results.json").write_text("[]"), ["report", str(t)])[1], "results"),
    "report: attacks not a list": (lambda r, t: ((t / "results.json").write_text(json.dumps(
        {"format": "rcedetect-results", "models": {}, "attacks": 3})), ["report", str(t)])[1], "attacks"),
    "report: a record of an unknown model": (lambda r, t: ((t / "results.json").write_text(json.dumps(
        {"format": "rcedetect-results", "models": {}, "attacks": [{"model": "m", "attack": "fgsm"}]})),
        ["report", str(t)])[1], "'m'"),
    "adaptive: unknown torchattacks attack": (lambda r, t: ["adaptive", str(r), "--metric", "kd", "--attack",
                                                           "torchattacks:NoSuch", "--eps", "0.1"], "torchattacks:NoSuch"),
    "adaptive: torchattacks attack missing a setting": (lambda r, t: ["adaptive", str(r), "--metric", "kd", "--attack",
                                                                     "torchattacks:LGV"], "trainloader"),
    "adaptive: no targeted mode": (lambda r, t: ["adaptive", str(r), "--metric", "kd", "--attack", "torchattacks:APGD",
                                                 "--eps", "0.1", "--set", 'targeted="random"'], "targeted"),
    "adaptive: defended model without a calibrated detector": (
        lambda r, t: ["adaptive", str(r), "--metric", "kd", "--attack", "torchattacks:APGD", "--eps", "0.1"],
        "rce calibrate"),
    "evaluate: no CUDA": (lambda r, t: ["evaluate", str(r), "--device", "cuda"] if not torch.cuda.is_available()
                          else ["evaluate", str(r), "--device", "tpu"], "device"),
}


@pytest.fixture
def run_copy(trained_runs, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], dst)
    return dst


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, run_copy, tmp_path, capsys):
    build, word = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    argv = build(run_copy, work)
    before = {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rce "), err
    assert word in err, err
    # nothing written: no new model, and the run's own files untouched (but for the edit the case made)
    assert not (work / "o" / "checkpoint.json").exists() and not (work / "o" / "results.json").exists()
    assert {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")} == before
