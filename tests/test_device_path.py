"""The device path: the same computation on the device under test (``RCE_TEST_DEVICE``, default: CUDA where one is
visible) and on the CPU agree — logits, K-density, the detector's verdicts, FGSM and PGD, a few training steps and a
checkpoint that loads back on the CPU. Without a device other than the CPU these tests skip; the GPU check
(``benchmarks/gpu_check.py``) runs them with the GPU as the device."""

from __future__ import annotations

import os

import pytest
import torch

from rcedetect.attacks import create
from rcedetect.detectors import Detector
from rcedetect.models import create as create_net
from rcedetect.models.classifier import Classifier


def _device() -> torch.device | None:
    """The device under test: RCE_TEST_DEVICE (``cpu`` runs the comparisons CPU against CPU, as the tiny GPU check
    does), else CUDA where one is visible, else none."""
    name = os.environ.get("RCE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    return torch.device(name) if name else None


DEVICE = _device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (set RCE_TEST_DEVICE to test another)")


def _pair(objective: str = "rce"):
    torch.manual_seed(0)
    cpu = Classifier(create_net("resnet8", 1, 10), objective, input_shape=(1, 28, 28)).eval()
    dev = Classifier(create_net("resnet8", 1, 10), objective, input_shape=(1, 28, 28)).eval()
    dev.load_state_dict(cpu.state_dict())
    return cpu, dev.to(DEVICE)


def _data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n).remainder(10)


def test_logits_and_features_agree_with_the_cpu():
    cpu, dev = _pair()
    x, _ = _data()
    with torch.no_grad():
        torch.testing.assert_close(dev.logits(x.to(DEVICE)).cpu(), cpu.logits(x), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(dev.features(x.to(DEVICE)).cpu(), cpu.features(x), rtol=1e-3, atol=1e-3)


def test_kdensity_scores_and_verdicts_agree_with_the_cpu():
    cpu, dev = _pair()
    x_train, y_train = _data(400, seed=1)
    x, _ = _data(64, seed=2)
    d_cpu = Detector(cpu, "kd").fit(x_train, y_train).calibrate(x[:32], fpr=0.1)
    d_dev = Detector(dev, "kd").fit(x_train.to(DEVICE), y_train.to(DEVICE)).calibrate(x[:32].to(DEVICE), fpr=0.1)
    s_cpu, s_dev = d_cpu.score(x[32:]), d_dev.score(x[32:].to(DEVICE)).cpu()
    torch.testing.assert_close(s_dev, s_cpu, rtol=1e-3, atol=1e-3)
    agree = (d_dev.predict(x[32:].to(DEVICE)).cpu() == d_cpu.predict(x[32:])).float().mean()
    assert agree >= 0.95, f"verdicts agree on {agree:.0%} of images"


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_gradient_attacks_agree_with_the_cpu(name):
    cpu, dev = _pair()
    x, y = _data(32)
    settings = {"eps": 0.1} if name == "fgsm" else {"eps": 0.1, "steps": 5, "random_start": False}
    r_cpu = create(name, **settings)(cpu, x, y)
    r_dev = create(name, **settings)(dev, x.to(DEVICE), y.to(DEVICE))
    same = (r_dev.x_adv.cpu() - r_cpu.x_adv).abs().le(1e-5).float().mean()
    assert same >= 0.99, f"{same:.2%} of pixels agree (a sign can flip only where the gradient is ~0)"
    assert (r_dev.success.cpu() == r_cpu.success).float().mean() >= 0.9


def test_training_on_the_device_saves_a_checkpoint_that_loads_on_the_cpu(tmp_path):
    from rcedetect.models import checkpoint
    from rcedetect.training import fit
    from rcedetect.training.config import train_config_from_preset

    cfg = train_config_from_preset("cpu-mnist5k-rce", ['dataset="synthetic"', "steps=6", "eval_every=6",
                                                       "checkpoint_every=6", "lr_boundaries=[3]",
                                                       "lr_values=[0.05,0.01]", f'device="{DEVICE}"'])
    clf = fit(cfg, tmp_path / "run", progress=False)
    assert clf.device.type == DEVICE.type
    back = checkpoint.load(tmp_path / "run", device="cpu").classifier
    assert all(torch.isfinite(p).all() for p in back.parameters())
    x = torch.rand(4, *back.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(back.logits(x), clf.logits(x.to(DEVICE)).cpu(), rtol=1e-3, atol=1e-3)
