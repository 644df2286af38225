"""Random uniform noise (protocol §5.7): x* = clip(x + U(−ε, ε), 0, 1), seeded."""

from __future__ import annotations

import pytest
import torch

from rcedetect import ConfigError, InputError, attacks
from rcedetect.attacks.noise import Noise


def test_noise_is_uniform_bounded_and_seeded(ce_classifier, test_batch):
    x = test_batch[0][:32]
    x_before = x.clone()
    res = attacks.create("noise", eps=0.1, seed=3)(ce_classifier, x)
    assert torch.equal(x, x_before)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert float(res.linf.max()) <= 0.1 + 1e-6
    d = (res.x_adv - x)[(x > 0.1) & (x < 0.9)]  # unclipped pixels: U(-0.1, 0.1)
    assert abs(float(d.mean())) < 0.005
    assert float(d.std()) == pytest.approx(0.2 / 12**0.5, rel=0.05)
    assert float(d.abs().max()) > 0.099
    again = Noise(0.1, seed=3)(ce_classifier, x)
    other = Noise(0.1, seed=4)(ce_classifier, x)
    assert torch.equal(again.x_adv, res.x_adv)
    assert not torch.equal(other.x_adv, res.x_adv)
    assert torch.equal(res.success, ce_classifier.predict(res.x_adv) != ce_classifier.predict(x))


def test_eps_zero_and_errors(ce_classifier, test_batch):
    x = test_batch[0][:4]
    assert torch.equal(Noise(0.0)(ce_classifier, x).x_adv, x)
    with pytest.raises(ConfigError):
        Noise(-0.1)
    ce_classifier.train()
    try:
        with pytest.raises(InputError):
            Noise(0.1)(ce_classifier, x)
    finally:
        ce_classifier.eval()
