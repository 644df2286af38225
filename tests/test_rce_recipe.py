"""The RCE training recipe (protocol §22): RCE's learning rates scaled with the class count by default, a linear
warm-up, a cross-entropy start on the reversed logits; what each setting does to the schedule, the loss and the
config hash, and refusals of bad values."""

from __future__ import annotations

import math

import pytest
import torch

from rcedetect import data
from rcedetect.core.errors import ConfigError
from rcedetect.reproduce.layout import train_dict_for_hash
from rcedetect.training import fit
from rcedetect.training.config import (
    MAX_AUTO_RCE_LR_SCALE,
    TrainConfig,
    auto_rce_lr_scale,
    objective_settings,
    same_training,
    train_config_from_preset,
)


def cfg(**kw) -> TrainConfig:
    base = {"steps": 100, "lr_boundaries": (50, 80), "lr_values": (0.1, 0.01, 0.001)}
    return TrainConfig(**{**base, **kw})


def test_rce_rates_are_scaled_by_classes_minus_one_by_default_and_ce_rates_never():
    assert auto_rce_lr_scale(10) == 9 and auto_rce_lr_scale(2) == 1
    assert auto_rce_lr_scale(100) == MAX_AUTO_RCE_LR_SCALE < 99
    rce, ce = cfg(objective="rce"), cfg(objective="ce")
    assert [rce.learning_rate(s, 10) for s in (0, 49, 50, 80, 99)] == pytest.approx([0.9, 0.9, 0.09, 0.009, 0.009])
    assert rce.learning_rate(24, 100) == pytest.approx(0.1 * MAX_AUTO_RCE_LR_SCALE)  # after its warm-up (below)
    assert [ce.learning_rate(s, 10) for s in (0, 50, 80)] == pytest.approx([0.1, 0.01, 0.001])
    assert ce.learning_rate(0, 100) == pytest.approx(0.1)
    paper = cfg(objective="rce", rce_lr_scale=1.0)
    assert paper.learning_rate(0, 10) == pytest.approx(0.1) and paper.learning_rate(60, 100) == pytest.approx(0.01)
    assert cfg(objective="rce", rce_lr_scale=3.0).learning_rate(0, 10) == pytest.approx(0.3)


def test_warm_up_rises_linearly_to_the_first_rate_then_follows_the_schedule():
    c = cfg(objective="ce", lr_warmup=4)
    assert [c.learning_rate(s) for s in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    r = cfg(objective="rce", lr_warmup=2, rce_lr_scale=2.0)
    assert [r.learning_rate(s) for s in (0, 1, 2, 50)] == pytest.approx([0.1, 0.2, 0.2, 0.02])


def test_many_classes_get_the_capped_scale_after_a_warm_up_of_a_quarter_of_the_steps():
    rce = cfg(objective="rce")  # 100 steps: a warm-up of 25 on 100 classes, none on 10
    assert rce.warmup_steps(100) == 25 and rce.warmup_steps(10) == 0 and rce.warmup_steps(11) == 25
    assert [rce.learning_rate(s, 100) for s in (0, 12, 24, 25, 49, 50)] == pytest.approx(
        [0.2, 2.6, 5.0, 5.0, 5.0, 0.5])
    assert cfg(objective="rce", lr_warmup=40).warmup_steps(100) == 40  # a longer one given is kept
    assert cfg(objective="rce", rce_lr_scale=33.0).warmup_steps(100) == 0  # a scale given: the warm-up as given
    assert cfg(objective="ce").warmup_steps(100) == 0


def test_a_cross_entropy_start_trains_at_ce_rates_then_switches_to_rce():
    c = cfg(objective="rce", rce_ce_steps=30)
    assert [c.step_objective(s) for s in (0, 29, 30, 99)] == ["ce_reversed", "ce_reversed", "rce", "rce"]
    assert c.learning_rate(29, 10) == pytest.approx(0.1) and c.learning_rate(30, 10) == pytest.approx(0.9)
    assert cfg(objective="ce", rce_ce_steps=0).step_objective(0) == "ce"


@pytest.mark.parametrize("key,value", [
    ("rce_lr_scale", -1.0), ("rce_lr_scale", math.nan), ("rce_lr_scale", math.inf), ("rce_lr_scale", 1e6),
    ("lr_warmup", -1), ("lr_warmup", 101), ("lr_warmup", 2.5), ("lr_warmup", True),
    ("rce_ce_steps", -1), ("rce_ce_steps", 100), ("rce_ce_steps", 1.5),
])
def test_bad_recipe_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        cfg(objective="rce", **{key: value})


def test_cli_refuses_a_bad_rate_before_training(tmp_path, capsys):
    from rcedetect.cli import main

    out = tmp_path / "never"
    for bad in ("rce_lr_scale=-2", "lr_values=[nan,0.01,0.001]", "lr_values=[-0.1,0.01,0.001]"):
        assert main(["train", "--preset", "cpu-mnist5k-rce", "--set", bad, "--out", str(out)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not out.exists()


def test_the_hash_of_a_ce_model_ignores_rce_settings_and_the_recipe_is_another_model():
    ce = cfg(objective="ce").to_dict()
    assert "rce_lr_scale" not in train_dict_for_hash(ce) and "rce_ce_steps" not in train_dict_for_hash(ce)
    assert same_training({**ce, "rce_lr_scale": 9.0}, cfg(objective="ce"))  # CE does not read it
    paper = objective_settings(cfg(objective="rce", rce_lr_scale=1.0).to_dict())
    auto = objective_settings(cfg(objective="rce").to_dict())
    assert paper["rce_lr_scale"] == 1.0 and auto["rce_lr_scale"] == 0.0
    assert train_dict_for_hash(paper) != train_dict_for_hash(auto)  # the recipe is another model than the paper's
    assert not same_training(paper, cfg(objective="rce")) and not same_training({"steps": "x"}, cfg())


def test_presets_give_the_recipe_and_the_paper_presets_the_paper_rates():
    assert train_config_from_preset("cpu-mnist5k-rce").rce_lr_scale == 0.0
    assert train_config_from_preset("cpu-cifar10-rce").rce_lr_scale == 0.0
    for name in ("paper-mnist-resnet32-rce", "paper-cifar10-resnet32-rce", "paper-cifar10-resnet56-rce"):
        assert train_config_from_preset(name).rce_lr_scale == 1.0


def test_training_uses_the_scaled_rate_and_the_reversed_ce_start(tmp_path, monkeypatch):
    """The first rce_ce_steps steps take cross-entropy, of the reversed logits -Z, the rest RCE of Z."""
    from rcedetect import training

    ds = data.load("synthetic")
    seen: list[tuple[str, torch.Tensor]] = []
    real = training.objective_loss

    def spy(objective, logits, y, reduction="mean"):
        seen.append((objective, logits.detach().clone()))
        return real(objective, logits, y, reduction)

    monkeypatch.setattr(training, "objective_loss", spy)
    c = TrainConfig(dataset="synthetic", arch="resnet8", objective="rce", steps=4, batch_size=8,
                    lr_boundaries=(2,), lr_values=(0.05, 0.005), rce_ce_steps=2, eval_every=4, checkpoint_every=4)
    torch.manual_seed(0)
    fit(c, tmp_path / "run", dataset=ds, progress=False)
    assert [o for o, _ in seen] == ["ce", "ce", "rce", "rce"]
    clf = training.checkpoint.load(tmp_path / "run").classifier  # the logits CE saw were -Z of the network
    assert clf.objective == "rce"
    assert '"rce_ce_steps": 2' in (tmp_path / "run" / "checkpoint.json").read_text()


@pytest.mark.parametrize("key, value, match", [("steps", 2.5, "integer"), ("batch_size", True, "integer"),
                                               ("eval_every", 2**41, r"must be an integer in \[1, "),
                                               ("checkpoint_every", 0, "integer >= 1")])
def test_the_step_counts_are_whole_numbers_in_range(key, value, match):
    """Every count is checked as an integer within range (a check the recipe's settings once made unreachable)."""
    with pytest.raises(ConfigError, match=match):
        cfg(objective="rce", **{key: value})
