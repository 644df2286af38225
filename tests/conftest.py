"""Shared fixtures: a tiny synthetic dataset and small CE / RCE classifiers trained on it in seconds."""

from __future__ import annotations

import pytest
import torch

from rcedetect import data
from rcedetect.training import fit
from rcedetect.training.config import TrainConfig

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_train_config(objective: str = "ce", **kw) -> TrainConfig:
    """A ResNet-8 on the 12x12 synthetic set: ~60 steps, a few seconds on a CPU."""
    base = {"dataset": "synthetic", "arch": "resnet8", "objective": objective, "steps": 60, "batch_size": 32,
                "lr_boundaries": (40,), "lr_values": (0.05, 0.005), "eval_every": 30, "checkpoint_every": 30,
                "device": "cpu", "seed": 0}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def synthetic() -> data.Dataset:
    return data.make_synthetic()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, synthetic):
    """{'ce': run_dir, 'rce': run_dir}: tiny trained runs with checkpoints, shared by the whole session."""
    runs = {}
    for objective in ("ce", "rce"):
        run_dir = tmp_path_factory.mktemp(f"run-{objective}")
        fit(tiny_train_config(objective), run_dir, dataset=synthetic, progress=False)
        runs[objective] = run_dir
    return runs


@pytest.fixture(scope="session")
def ce_classifier(trained_runs):
    from rcedetect.models import checkpoint

    return checkpoint.load(trained_runs["ce"]).classifier


@pytest.fixture(scope="session")
def rce_classifier(trained_runs):
    from rcedetect.models import checkpoint

    return checkpoint.load(trained_runs["rce"]).classifier


@pytest.fixture(scope="session")
def test_batch(synthetic):
    """64 clean synthetic test images in [0, 1] and their labels."""
    return synthetic.test_images()[:64], synthetic.y_test[:64]


#: the settings every test run of the tiny preset uses
TINY_OVERRIDES = ["experiment.threads=2"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(out folder, results, stage lines) of one uninterrupted ``rce reproduce --preset tiny`` run, on 2 CPU threads
    whatever the machine (float reductions round by thread count; the stored expected results used 2)."""
    from rcedetect.reproduce import reproduce

    out = tmp_path_factory.mktemp("tiny-uninterrupted")
    lines: list[str] = []
    results = reproduce("tiny", out, TINY_OVERRIDES, progress=False, echo=lines.append)
    return out, results, lines
