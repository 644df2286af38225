import json
import subprocess
import sys

import pytest

from rcedetect.cli import main

TINY = ["--set", "dataset=synthetic", "--set", "arch=resnet8", "--set", "steps=6", "--set", "batch_size=16",
        "--set", "eval_every=3", "--set", "checkpoint_every=3", "--set", "lr_boundaries=[4]",
        "--set", "lr_values=[0.05, 0.005]", "--device", "cpu", "--quiet"]


def test_train_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "cpu-mnist5k-rce", "--out", str(run), *TINY]) == 0
    assert "test accuracy" in capsys.readouterr().out
    resolved = json.loads((run / "config.json").read_text())["train"]
    assert resolved["steps"] == 6 and resolved["objective"] == "rce" and resolved["dataset"] == "synthetic"
    assert main(["evaluate", str(run)]) == 0
    record = json.loads((run / "evaluation-synthetic.json").read_text())
    assert record["n"] == 200 and 0 <= record["test_error_percent"] <= 100
    assert f"{record['test_error_percent']:.2f}%" in capsys.readouterr().out
    # the same --out again is refused; --resume of a finished run is a no-op that succeeds
    assert main(["train", "--preset", "cpu-mnist5k-rce", "--out", str(run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--preset", "nope", "--out", "X"], "unknown preset"),
        (["train", "--preset", "cpu-mnist5k-ce", "--out", "X", "--set", "bogus=1"], "unknown setting"),
        (["train", "--preset", "cpu-mnist5k-ce", "--out", "X", "--set", "steps=-3"], "integer >= 1"),
        (["train", "--preset", "cpu-mnist5k-ce", "--out", "X", "--set", "dataset=imagenet"], "unknown dataset"),
        (["train", "--preset", "cpu-mnist5k-ce", "--out", "X", "--data-file", "missing.npz"], "does not exist"),
        (["evaluate", "no-such-run"], "does not exist"),
        (["train", "--preset", "cpu-mnist5k-ce"], "--out"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "X" / "checkpoint.json").exists()


def test_console_script_usage_error_exits_2():
    proc = subprocess.run([sys.executable, "-m", "rcedetect.cli", "no-such-command"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
