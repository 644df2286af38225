"""The Python API checks what the command line checks: image size and channels against the model, devices,
dtypes, budgets and seeds; training never saves a diverged model; files get the user's normal permissions."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import tiny_train_config

from rcedetect import TrainingError, attacks
from rcedetect.core.errors import CheckpointError, ConfigError, InputError
from rcedetect.core.io import write_json
from rcedetect.detectors import Detector
from rcedetect.models import checkpoint
from rcedetect.training import fit


@pytest.fixture(scope="module")
def clf(trained_runs):
    return checkpoint.load(trained_runs["ce"]).classifier


def test_checkpoints_record_the_image_shape(clf, synthetic):
    assert clf.input_shape == tuple(synthetic.image_shape) == (1, 12, 12)


@pytest.mark.parametrize("x,word", [
    (torch.rand(2, 1, 32, 32), "32x32"),
    (torch.rand(2, 1, 1, 1), "1x1"),
    (torch.rand(2, 3, 12, 12), "channels"),
    (torch.empty(2, 1, 12, 12, device="meta"), "meta"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64) * 3, "[0, 1]"),
    (torch.randint(0, 255, (2, 1, 12, 12)), "floating point"),
])
def test_detector_and_attacks_refuse_images_the_model_cannot_take(clf, synthetic, x, word):
    det = Detector(clf, "confidence").fit(None).calibrate(synthetic.test_images()[:50])
    with pytest.raises(InputError, match=word if word != "[0, 1]" else r"\[0, 1\]"):
        det.predict(x)
    with pytest.raises(InputError):
        attacks.create("fgsm", eps=0.1)(clf, x)


def test_a_detector_fitted_on_one_size_refuses_another(clf, synthetic):
    det = Detector(clf, "kd", per_class=20).fit(synthetic.train_images()[:200], synthetic.y_train[:200])
    assert det.input_shape == [1, 12, 12]
    det.input_shape = [1, 10, 10]  # as loaded from a detector.json of another model
    with pytest.raises(InputError, match="fitted on"):
        det.score(synthetic.test_images()[:4])


def test_a_missing_classifier_is_named():
    with pytest.raises(InputError, match="Classifier"):
        Detector(None, "confidence")
    with pytest.raises(InputError, match="Classifier"):
        attacks.create("fgsm", eps=0.1)(None, torch.rand(1, 1, 12, 12))


@pytest.mark.parametrize("name,settings,word", [
    ("fgsm", {"eps": True}, "eps"),
    ("fgsm", {"eps": 2.0}, "<= 1"),
    ("fgsm", {"eps": float("inf")}, "finite"),
    ("bim", {"eps": float("nan")}, "finite"),
    ("noise", {"eps": 0.1, "seed": "x"}, "seed"),
    ("noise", {"eps": 0.1, "seed": True}, "seed"),
    ("cw", {"seed": -1}, "seed"),
    ("jsma", {"eps": -0.5}, ">= 0"),
])
def test_budgets_and_seeds_are_checked_at_construction(name, settings, word):
    with pytest.raises(ConfigError, match=word):
        attacks.create(name, **settings)


def test_an_l2_radius_may_exceed_one():
    assert attacks.create("pgd", eps=2.0, norm="l2").eps == 2.0
    with pytest.raises(ConfigError, match="<= 1"):
        attacks.create("pgd", eps=2.0, norm="linf")


def test_epsilon_zero_returns_the_input(clf, synthetic):
    x = synthetic.test_images()[:8]
    assert torch.equal(attacks.create("fgsm", eps=0.0)(clf, x).x_adv, x)


def test_diverging_training_stops_and_saves_nothing_broken(tmp_path, synthetic):
    cfg = tiny_train_config(lr_values=(1e30, 1e30), steps=20, eval_every=10, checkpoint_every=10)
    with pytest.raises(TrainingError, match="diverged"):
        fit(cfg, tmp_path / "run", dataset=synthetic, progress=False)
    if (tmp_path / "run" / "checkpoint.json").exists():  # whatever was saved before is finite and loads
        checkpoint.load(tmp_path / "run")
    assert not list((tmp_path / "run").glob("model.step0000020*"))


def test_nan_weights_never_load(trained_runs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from rcedetect.core.io import sha256_file, write_json

    run = tmp_path / "run"
    shutil.copytree(trained_runs["rce"], run)
    meta = checkpoint.read_meta(run)
    state = load_file(run / meta["weights"])
    state["fc.weight"][0, 0] = float("inf")
    save_file(state, run / meta["weights"])
    write_json(run / "checkpoint.json", {**meta, "weights_sha256": sha256_file(run / meta["weights"])})
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        checkpoint.load(run)


def test_written_files_get_the_users_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"a": 1})
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)


def test_all_finite_is_exact_where_the_sum_overflows():
    from rcedetect.core.validation import all_finite

    big = torch.full((4,), 3e38)  # every element finite, the float32 sum is inf
    assert all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = big.clone()
        t[2] = bad
        assert not all_finite(t)
    pair = torch.tensor([float("inf"), -float("inf")])  # sums to NaN
    assert not all_finite(pair)
    assert all_finite(torch.zeros(0)) and all_finite(torch.arange(3))
