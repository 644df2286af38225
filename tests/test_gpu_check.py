"""`make gpu-check`'s script, end to end on the CPU with tiny sizes: every part runs and lands in one JSON file
(the device tests, K-density, each attack beside the paper's Table 5, the paper-mnist cut). Times are recorded,
never asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _load():
    import sys

    sys.path.insert(0, str(SCRIPT.parent))  # it imports the benchmarks' _timing
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    gc = _load()
    out = tmp_path / "gpu-check.json"
    assert gc.main(["--device", "cpu", "--tiny", "--repeat", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["gpu"] and r["sizes"] == "tiny"
    assert r["tests"]["returncode"] == 0 and "passed" in r["tests"]["summary"], r["tests"]
    assert r["kd"]["finite"] and r["kd"]["seconds"] > 0
    attacks = {(a["attack"], a["objective"]) for a in r["attacks"]}
    assert attacks == {(a, o) for a in ("FGSM", "BIM", "ILCM", "JSMA", "C&W", "C&W-hc", "C&W-wb") for o in ("CE", "RCE")}
    assert all(a["paper_p100"] is not None and a["seconds_per_example"] > 0 for a in r["attacks"])
    cw = [a for a in r["attacks"] if a["attack"].startswith("C&W")]
    assert all(a["extrapolated_to"] == 90_000 and a["seconds_per_example_at_paper_budget"] > 0 for a in cw)
    cut = r["paper_mnist_cut"]
    assert set(cut["models"]) == {"ce", "rce", "target_ce", "target_rce", "pgd_at"} and len(cut["transfer"]) == 4
    assert cut["overrides"] and cut["wall_seconds"] > 0 and r["wall_seconds"] >= cut["wall_seconds"]


def test_without_cuda_the_cuda_check_is_one_line_and_exit_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    assert _load().main(["--device", "cuda", "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cpu --tiny" in err
