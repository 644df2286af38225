"""Seeds as the unit of replication: ``[experiment] seeds = S`` trains each model S times (protocol §21).

Checks the settings (refused before any work), the replicate configs (seed + r, a model with one seed shared), a
two-seed run whose second replicate equals a one-seed run at that seed (its models, records and adaptive worst
case), a run killed in its second seed resuming to the same results, and the report's section."""

from __future__ import annotations

import json

import pytest
from test_pipeline import Killed, strip_timings

from rcedetect.cli import main
from rcedetect.core.errors import ConfigError
from rcedetect.reproduce import reproduce, resolve_config
from rcedetect.reproduce.config import plan
from rcedetect.reproduce.layout import Layout
from rcedetect.reproduce.replicates import MAX_SEEDS, model_seeds, replicate, seed_counts

PRESET = """
[experiment]
name = "seeds"
seed = 0
train_feature_images = 300
tsne_images = 0
figure3_images = 2
table2_eps = 0.3
batch_size = 200
calibration_images = 100
threads = 2
paper_dataset = "mnist"
seeds = 2

[models.ce]
preset = "cpu-mnist5k-ce"
[models.ce.train]
dataset = "synthetic"
steps = 30
batch_size = 32
lr_boundaries = [20]
lr_values = [0.05, 0.005]
eval_every = 30
checkpoint_every = 10

[models.rce]
preset = "cpu-mnist5k-rce"
[models.rce.train]
dataset = "synthetic"
steps = 30
batch_size = 32
lr_boundaries = [20]
lr_values = [0.05, 0.005]
eval_every = 30
checkpoint_every = 10

[models.target_ce]
preset = "cpu-mnist5k-ce"
role = "target"
seeds = 1
[models.target_ce.train]
dataset = "synthetic"
seed = 1
steps = 20
batch_size = 32
lr_boundaries = [10]
lr_values = [0.05, 0.005]
eval_every = 20
checkpoint_every = 20

[detector]
per_class = 50
attack_per_class = 10
baselines = []

[attacks.fgsm]
images = 16
batch = 16
eps = [0.3]

[attacks.cw_wb]
images = 4
batch = 4
settings = { binary_search_steps = 1, max_iterations = 10, learning_rate = 0.1, initial_const = 10.0 }

[adaptive]
metrics = ["kd", "non_me"]
images = 8
batch = 8
bootstrap = 50
sanity = false

[adaptive.attacks.pgd_detector]
eps = [0.3]
settings = { steps = 3, lambdas = [0.0, 10.0] }
"""


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeds-preset") / "seeds.toml"
    path.write_text(PRESET)
    return str(path)


@pytest.fixture(scope="module")
def two_seeds(preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds-run")
    lines: list[str] = []
    return out, reproduce(preset, out, progress=False, echo=lines.append), lines


@pytest.mark.parametrize("value", ["0", "-1", "1.5", '"3"', "true", str(MAX_SEEDS + 1), "10000000000"])
def test_bad_seed_counts_are_refused_before_any_work(preset, value, tmp_path, capsys):
    with pytest.raises(ConfigError, match="seeds must be an integer from 1"):
        resolve_config(preset, [f"experiment.seeds={value}"])
    out = tmp_path / "never"
    assert main(["reproduce", "--preset", preset, "--out", str(out), "--set", f"experiment.seeds={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "experiment.seeds" in err[0]
    assert not out.exists()


def test_a_model_cannot_have_more_seeds_than_the_experiment(preset):
    with pytest.raises(ConfigError, match="models.ce.seeds = 3 exceeds experiment.seeds = 2"):
        resolve_config(preset, ["models.ce.seeds=3"])
    with pytest.raises(ConfigError, match="models.rce.seeds must be"):
        resolve_config(preset, ["models.rce.seeds=-2"])


def test_replicates_move_the_training_seed_and_share_single_seed_models(preset):
    cfg = resolve_config(preset)
    assert seed_counts(cfg) == (2, {"ce": 2, "rce": 2, "target_ce": 1})
    assert model_seeds(cfg) == {"ce": [0, 1], "rce": [0, 1], "target_ce": [1]}
    assert replicate(cfg, 0) is cfg
    second = replicate(cfg, 1)
    assert [second["models"][m]["train"]["seed"] for m in ("ce", "rce", "target_ce")] == [1, 1, 1]
    assert cfg["models"]["ce"]["train"]["seed"] == 0  # the first replicate's config is untouched
    first, other = (Layout(plan(c), "/nowhere", lambda: 100) for c in (cfg, second))
    assert first.model_hash("target_ce") == other.model_hash("target_ce")
    assert first.model_hash("ce") != other.model_hash("ce")


def test_second_seed_equals_a_one_seed_run_at_that_seed(preset, two_seeds):
    out, results, lines = two_seeds
    rep = results["replication"]
    assert rep["seeds"] == 2 and len(rep["per_seed"]) == 2
    # the shared target is trained once: its stage in the second replicate is cached
    assert sum("train target_ce" in line and not line.endswith("cached") for line in lines) == 1
    # a one-seed run at seed 1, in the same folder, finds every artifact made by the second replicate
    again: list[str] = []
    single = reproduce(preset, out, ["experiment.seeds=1", "models.ce.train.seed=1", "models.rce.train.seed=1"],
                       progress=False, echo=again.append)
    assert all(line.endswith("cached") for line in again)
    second = rep["per_seed"][1]
    assert second["train_seeds"] == {"ce": 1, "rce": 1, "target_ce": 1}
    assert second["models"] == single["models"]
    assert second["adaptive_worst_case"] == single["adaptive"]["worst_case"]
    t2 = [r for r in single["attacks"] if r["attack"] == "fgsm"]
    assert [r["detection"]["kd"]["auc_strict"] for r in t2] == \
        [r["detection"]["kd"]["auc_strict"] for r in second["attacks"] if r["attack"] == "fgsm"]
    # the first replicate is the run's own results
    assert rep["per_seed"][0]["models"] == results["models"]


def test_across_seed_rows_hold_each_seed_and_an_interval_around_the_mean(two_seeds):
    _, results, _ = two_seeds
    across = results["replication"]["across"]
    per_seed = results["replication"]["per_seed"]
    errors = {r["model"]: r for r in across["table1"]}
    assert len(errors["ce"]["per_seed"]) == 2 and len(errors["target_ce"]["per_seed"]) == 1
    for name in ("ce", "rce"):
        want = [round(s["models"][name]["test_error_percent"] / 100, 6) for s in per_seed]
        assert errors[name]["per_seed"] == pytest.approx(want, abs=1e-6)
    rows = across["table2"] + across["operating"] + across["adaptive"] + across["table1"]
    assert rows
    for r in rows:
        if r["mean"] is not None:
            assert r["low"] - 1e-9 <= r["mean"] <= r["high"] + 1e-9
    kd = [r for r in across["table2"] if r["metric"] == "kd" and r["attack"] == "fgsm"]
    assert {r["objective"] for r in kd} == {"ce", "rce"}
    for r in kd:  # the AUC of each seed, recomputed from its pairs, is the per-seed Table 2 AUC
        recs = [a for s in per_seed for a in s["attacks"] if a["model"] == r["model"] and a["attack"] == "fgsm"]
        assert r["per_seed"] == pytest.approx([a["detection"]["kd"]["auc_strict"] for a in recs], abs=1e-6)


def test_killed_in_the_second_seed_resumes_to_the_same_results(preset, two_seeds, tmp_path):
    _, reference, _ = two_seeds
    out = tmp_path / "killed"
    seen: list[str] = []

    def hook(event):
        seen.append(event)
        if event.startswith("stage:seed 2: attack fgsm on rce"):
            raise Killed(event)

    with pytest.raises(Killed):
        reproduce(preset, out, progress=False, hook=hook, echo=lambda s: None)
    assert any(e.startswith("stage:seed 2: train ce") for e in seen)
    resumed = reproduce(preset, out, progress=False, echo=lambda s: None)
    assert json.dumps(strip_timings(resumed), sort_keys=True) == json.dumps(strip_timings(reference), sort_keys=True)


def test_report_says_across_seeds_and_how_many_seeds_each_claim_holds_on(two_seeds):
    from rcedetect.report import render

    out, results, _ = two_seeds
    md, _ = render(out, results)
    text = md.read_text()
    assert "## Across seeds (2 trained models per objective)" in text
    assert "two-level bootstrap" in text and "| CE mean [95 %] |" in text
    seed_lines = [line for line in text.splitlines() if "Seed by seed:" in line]
    assert seed_lines and all("across 2 seeds" in line for line in seed_lines)
