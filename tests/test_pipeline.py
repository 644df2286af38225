"""`rce reproduce` on the tiny preset: the same results.json as the pipeline that came before the reproduce/
package, a killed run resumes to the same results as an uninterrupted one, a finished run is all cached, a deleted
artifact is recomputed alone, and the report's figures are valid PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.core.io import read_json
from rcedetect.reproduce import reproduce, resolve_config


class Killed(Exception):
    """Raised from a stage hook to simulate the process dying at that point."""


EXPECTED = Path(__file__).parent / "data" / "tiny-results-expected.json"


def strip_timings(obj):
    """results.json without wall-clock and version fields (the only ones allowed to differ between runs)."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items()
                if "seconds" not in k and k not in ("timings", "versions")}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


@pytest.fixture
def finished(tiny_run):
    return tiny_run


def test_uninterrupted_run_fills_every_table(finished):
    out, results, lines = finished
    assert (out / "results.json").is_file() and read_json(out / "results.json") == results
    assert all("left" in line for line in lines)  # every stage line carries a time-left estimate
    assert {m["role"] for m in results["models"].values()} == {"main", "target"}
    names = {(r["model"], r["attack"]) for r in results["attacks"]}
    for model in ("ce", "rce"):
        for attack in ("fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb", "noise"):
            assert (model, attack) in names
    for r in results["attacks"]:
        assert 0 <= r["n_pairs"] <= r["n_images"]
        assert all(d["n_pairs"] == r["n_pairs"] for d in r["detection"].values())
        assert r["seconds_per_example"] > 0
    # the tiny budgets still produce adversarial pairs for the gradient attacks at the Table-2 ε
    bim = [r for r in results["attacks"] if r["attack"] == "bim" and r["eps"] == results["table2_eps"]]
    assert all(r["n_pairs"] > 0 and 0 <= r["detection"]["kd"]["auc_strict"] <= 1 for r in bim)
    assert len(results["transfer"]) == 4
    assert set(results["tsne"]) == {"ce", "rce"} and len(results["tsne"]["ce"]["xy"]) == 60
    assert set(results["figure3"]) == {"ce", "rce"} and set(results["noise"]) == {"ce", "rce"}
    assert all(0 <= r["wb"]["n_efficient"] <= r["n_images"] for r in results["attacks"] if r["attack"] == "cw_wb")


def first_difference(a, b, path="results", allow_new_keys=False):
    """The path of the first value where ``a`` and ``b`` differ, or None; with ``allow_new_keys``, keys that only
    ``a`` has (settings and results added since ``b`` was written) are not differences."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b and allow_new_keys:
                continue
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'the new' if k in a else 'the expected'} results"
            d = first_difference(a[k], b[k], f"{path}.{k}", allow_new_keys)
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        return next((d for i, (u, v) in enumerate(zip(a, b))
                     if (d := first_difference(u, v, f"{path}[{i}]", allow_new_keys))), None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def cpu_fingerprint() -> dict:
    """The vector-instruction flags and cache size /proc/cpuinfo reports (empty where there is none): oneDNN picks
    its kernels and blockings by them, so two CPUs of one torch "capability" can still round differently."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = sorted(f for f in fields.get("flags", "").split() if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    return {"flags": " ".join(flags), "cache_size": fields.get("cache size", "")}


def same_platform() -> bool:
    """Whether this machine computes floats as the one that wrote the expected results (torch version, CPU
    vector instructions and cache, architecture): only then can a training run reproduce them bit for bit."""
    import platform

    import torch

    ref = json.loads(EXPECTED.with_suffix(".platform.json").read_text())
    return (torch.__version__.split("+")[0] == ref["torch"] and platform.machine() == ref["machine"]
            and torch.backends.cpu.get_cpu_capability() == ref["cpu_capability"]
            and cpu_fingerprint() == ref.get("cpu", {}))


def artifact_hashes(results: dict) -> list:
    """The config hashes that name every model and attack artifact: machine-independent."""
    return ([(n, m["config_hash"]) for n, m in sorted(results["models"].items())]
            + sorted((r["model"], r["attack"], str(r["eps"]), r["config_hash"]) for r in results["attacks"]))


def test_same_numbers_as_the_stored_results_of_the_earlier_pipeline(finished):
    """tests/data/tiny-results-expected.json was written by the single-module pipeline that the reproduce/ package
    replaced (same preset, same seed, 2 CPU threads): every number, count, artifact hash and record it holds must be
    identical. Results added since (new keys: operating points, the adaptive evaluation, new settings) are allowed;
    so is the top-level hash of the whole config, which changes with every setting added. On a machine whose float
    arithmetic differs (another torch or CPU instruction set) training cannot match bit for bit, and the test checks
    what does not depend on it: the same records, under the same artifact hashes."""
    _, results, _ = finished
    expected = strip_timings(json.loads(EXPECTED.read_text()))
    new = strip_timings(json.loads(json.dumps(results)))
    assert artifact_hashes(new) == artifact_hashes(expected)
    if not same_platform():
        pytest.skip("another torch / CPU instruction set than the stored run's: artifact hashes checked, numbers not")
    expected.pop("config_hash")
    assert expected["cpu_threads"] == 2  # the stored run used torch's 2 threads; the test pins them in the config
    expected["config"]["experiment"]["threads"] = 2
    assert first_difference(new, expected, allow_new_keys=True) is None


def test_first_difference_finds_the_first_difference():
    assert first_difference({"a": 1, "b": {"c": 2}}, {"a": 1}, allow_new_keys=True) is None
    assert first_difference({"a": 1}, {"a": 1, "b": 2}, allow_new_keys=True) == "results.b: only in the expected results"
    assert first_difference({"a": [1, 2.5]}, {"a": [1, 2.0]}) == "results.a[1]: 2.5 vs 2.0"


def test_killed_run_resumes_to_the_same_results(finished, tmp_path):
    """Kill mid-training (after a checkpoint) and mid-attack (after one batch part); the final results match."""
    _, reference, _ = finished
    out = tmp_path / "killed"
    for event in ("step:rce:30", "part:ce:cw:None:0"):
        seen = []

        def hook(e, event=event, seen=seen):
            seen.append(e)
            if e == event:
                raise Killed(e)

        with pytest.raises(Killed):
            reproduce("tiny", out, TINY_OVERRIDES, progress=False, hook=hook, echo=lambda s: None)
        assert seen[-1] == event
    resumed = reproduce("tiny", out, TINY_OVERRIDES, progress=False, echo=lambda s: None)
    assert strip_timings(resumed) == strip_timings(reference)


def test_finished_run_is_all_cached_and_a_deleted_artifact_is_recomputed_alone(finished):
    out, reference, _ = finished
    lines: list[str] = []
    again = reproduce("tiny", out, TINY_OVERRIDES, progress=False, echo=lines.append)
    assert lines and all(line.endswith("cached") for line in lines)
    assert strip_timings(again) == strip_timings(reference)

    part = min((out / "attacks" / "rce").glob("cw_hc-*/part-0001.safetensors"))
    part.unlink()
    for rec in (out / "records").glob("rce-cw_hc-*.json"):
        rec.unlink()
    lines.clear()
    redone = reproduce("tiny", out, TINY_OVERRIDES, progress=False, echo=lines.append)
    recomputed = [line for line in lines if not line.endswith("cached")]
    assert len(recomputed) == 1 and "cw_hc on rce" in recomputed[0]
    assert part.is_file()
    assert strip_timings(redone) == strip_timings(reference)


def test_cli_reproduce_on_a_finished_run_renders_the_report(finished, capsys):
    from test_report import check_html_figures

    out, _, _ = finished
    assert main(["reproduce", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "report.html" in text and "K-density AUC" in text
    sources = check_html_figures(out)
    assert len(sources) == 10 and {"figures/roc.png", "figures/adaptive_sr_vs_eps.png",
                                   "figures/bottom_line_sr_vs_eps.png"} <= set(sources)
    md = (out / "report.md").read_text()
    assert "Table 4" in md and "tiny test preset" in md
    assert "Adaptive evaluation" in md and "Sanity checks" in md and "too few pairs (" in md


def test_config_resolution_and_errors():
    cfg = resolve_config("tiny", ["models.ce.train.steps=7", "attacks.cw.images=3"], device="cpu", data_dir="d")
    assert cfg["models"]["ce"]["train"]["steps"] == 7 and cfg["attacks"]["cw"]["images"] == 3
    assert all(m["train"]["device"] == "cpu" and m["train"]["data_dir"] == "d" for m in cfg["models"].values())
    assert cfg["models"]["ce"]["train"]["arch"] == "resnet8"  # expanded from the training preset
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_config("tiny", ["attacks.cw.imagez=3"])
    with pytest.raises(ConfigError, match="not a reproduce preset"):
        resolve_config("cpu-mnist5k-ce")
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("no-such-preset")
    for preset in ("demo", "paper-mnist", "paper-cifar10"):
        cfg = resolve_config(preset)
        assert {"fgsm", "bim", "ilcm", "jsma", "cw", "cw_hc", "cw_wb", "noise"} <= set(cfg["attacks"])
