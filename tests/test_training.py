import pytest
import torch
from conftest import tiny_train_config

from rcedetect.core.errors import ConfigError
from rcedetect.models import checkpoint
from rcedetect.training import fit, parameter_groups
from rcedetect.training.config import TrainConfig, apply_overrides, train_config_from_preset


def _weights(run_dir):
    return checkpoint.load(run_dir).classifier.net.state_dict()


def test_both_objectives_learn_the_synthetic_task(trained_runs):
    for objective, run_dir in trained_runs.items():
        meta = checkpoint.read_meta(run_dir)
        assert meta["objective"] == objective
        assert meta["metrics"]["test_accuracy"] > 0.9, objective


def test_same_seed_same_weights_and_other_seed_differs(tmp_path, synthetic):
    cfg = tiny_train_config("rce", steps=12, eval_every=12, checkpoint_every=12)
    fit(cfg, tmp_path / "a", dataset=synthetic, progress=False)
    fit(cfg, tmp_path / "b", dataset=synthetic, progress=False)
    fit(tiny_train_config("rce", steps=12, eval_every=12, checkpoint_every=12, seed=1), tmp_path / "c",
        dataset=synthetic, progress=False)
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class Crash(Exception):
    pass


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_a_crash_ends_with_the_same_weights(tmp_path, synthetic, augment):
    cfg = tiny_train_config("ce", steps=16, eval_every=8, checkpoint_every=5, augment=augment,
                            lr_boundaries=(7,), lr_values=(0.05, 0.01))
    fit(cfg, tmp_path / "whole", dataset=synthetic, progress=False)

    def crash(step):
        if step == 12:  # after the checkpoint at step 10, two steps are lost
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, tmp_path / "killed", dataset=synthetic, progress=False, step_callback=crash)
    assert checkpoint.read_meta(tmp_path / "killed")["step"] == 10
    fit(cfg, tmp_path / "killed", dataset=synthetic, progress=False, resume=True)
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # old step files are cleaned up: exactly one weights and one optimizer file remain
    assert len(list((tmp_path / "killed").glob("model.step*.safetensors"))) == 1
    assert len(list((tmp_path / "killed").glob("optimizer.step*.safetensors"))) == 1


def test_resume_with_another_config_is_refused(tmp_path, synthetic):
    cfg = tiny_train_config("ce", steps=4, eval_every=4, checkpoint_every=2)
    fit(cfg, tmp_path / "r", dataset=synthetic, progress=False)
    with pytest.raises(Exception, match="another config"):
        fit(tiny_train_config("ce", steps=8, eval_every=4, checkpoint_every=2), tmp_path / "r",
            dataset=synthetic, progress=False, resume=True)


def test_weight_decay_only_on_conv_and_linear_weights():
    from rcedetect import models

    net = models.create("resnet8")
    decay, no_decay = parameter_groups(net)
    n_conv_fc = sum(1 for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert len(decay["params"]) == n_conv_fc
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_piecewise_schedules_of_spec():
    mnist = train_config_from_preset("paper-mnist-resnet32-rce")
    assert [mnist.learning_rate(s) for s in (0, 9999, 10000, 14999, 15000, 19999, 20000)] == [
        0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001]
    cifar = train_config_from_preset("paper-cifar10-resnet56-ce")
    assert [cifar.learning_rate(s) for s in (39999, 40000, 60000, 80000)] == [0.1, 0.01, 0.001, 0.0001]
    assert cifar.steps == 90000 and cifar.augment and cifar.pad == 2 and cifar.batch_size == 128
    assert mnist.steps == 20000 and not mnist.augment and mnist.weight_decay == 2e-4 and mnist.momentum == 0.9


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown preset"):
        train_config_from_preset("no-such-preset")
    with pytest.raises(ConfigError, match="unknown setting"):
        train_config_from_preset("cpu-mnist5k-ce", ["stepz=3"])
    with pytest.raises(ConfigError, match="integer"):
        train_config_from_preset("cpu-mnist5k-ce", ["steps=many"])
    with pytest.raises(ConfigError, match="objective"):
        train_config_from_preset("cpu-mnist5k-ce", ["objective=mse"])
    with pytest.raises(ConfigError, match="one more"):
        TrainConfig(lr_boundaries=(1, 2), lr_values=(0.1,))
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({"train": {}}, ["steps"])
    assert train_config_from_preset("cpu-mnist5k-ce", ["steps=7", "train.seed=3"]).steps == 7


def test_fast_paths_train_the_same_network(tmp_path, synthetic):
    """channels_last changes only the memory order: the weights after a few steps match the plain run to float
    rounding, and the checkpoint is the usual one. bf16 autocast (amp) follows the same path with a looser
    match; the saved weights stay float32."""
    base = {"steps": 6, "eval_every": 6, "checkpoint_every": 6, "rce_lr_scale": 1.0}  # float rounding, not the rate
    fit(tiny_train_config("rce", **base), tmp_path / "plain", dataset=synthetic, progress=False)
    fit(tiny_train_config("rce", channels_last=True, **base), tmp_path / "nhwc", dataset=synthetic, progress=False)
    fit(tiny_train_config("rce", amp=True, **base), tmp_path / "amp", dataset=synthetic, progress=False)
    plain, nhwc, amp = _weights(tmp_path / "plain"), _weights(tmp_path / "nhwc"), _weights(tmp_path / "amp")
    for k in plain:
        torch.testing.assert_close(nhwc[k], plain[k], rtol=1e-4, atol=1e-5)
        assert amp[k].dtype == plain[k].dtype
    moved = [float((amp[k].float() - plain[k].float()).abs().max()) for k in plain if plain[k].is_floating_point()]
    assert 0 < max(moved) < 0.05  # bf16 rounding: not the float32 run, but close to it
    assert checkpoint.load(tmp_path / "nhwc").classifier.predict(synthetic.test_images()[:8]).shape == (8,)
    with pytest.raises(ConfigError, match="true or false"):
        tiny_train_config("rce", channels_last="yes")


def test_overrides_may_add_attack_settings_but_nothing_else():
    preset = {"attacks": {"cw": {"images": 4, "settings": {"max_iterations": 10}}}, "train": {"steps": 1}}
    out = apply_overrides(preset, ["attacks.cw.settings.restart=continue", "attacks.cw.settings.max_iterations=5"])
    assert out["attacks"]["cw"]["settings"] == {"max_iterations": 5, "restart": "continue"}
    assert preset["attacks"]["cw"]["settings"] == {"max_iterations": 10}  # the input is not changed
    for bad in ("attacks.cw.imagez=3", "train.stepz=2", "attacks.jsma.settings.x=1"):
        with pytest.raises(ConfigError, match="unknown setting"):
            apply_overrides(preset, [bad])
