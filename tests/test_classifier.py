"""Classifier: the RCE sign in one place (paper §3.1) and final / intermediate features (paper §3.2)."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import LinearNet
from torch import nn

from rcedetect import Classifier, models
from rcedetect.core.errors import ConfigError, InputError


def identity3() -> LinearNet:
    """features = flatten of a 2x2 image, head = its first three pixels: the smallest Classifier net."""
    return LinearNet(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))


def resnet8(objective: str = "ce") -> Classifier:
    """An untrained ResNet-8 (fixed seed, eval mode) for the intermediate-layer tests."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Classifier(models.create("resnet8", in_channels=1, num_classes=4), objective).eval()


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def test_logits_sign_is_the_only_difference_between_ce_and_rce():
    net = identity3()
    x = torch.tensor([[[[0.9, 0.1], [0.2, 0.0]]]])
    ce, rce = Classifier(net, "ce"), Classifier(net, "rce")
    assert torch.equal(rce.logits(x), -ce.logits(x))
    assert ce.predict(x).item() == 0  # argmax Z
    assert rce.predict(x).item() == 1  # argmin Z: the reversed logits of paper §3.1
    assert torch.allclose(rce.probabilities(x), torch.softmax(-net.head(net.features(x)), 1))
    assert torch.equal(rce.logits_from_features(rce.features(x)), rce.logits(x))


def test_rce_trained_model_predicts_with_argmax_of_reversed_logits(rce_classifier, synthetic):
    x, y = synthetic.test_images(), synthetic.y_test
    with torch.no_grad():
        raw = rce_classifier.net(x)
    assert (raw.argmin(1) == y).float().mean() > 0.9  # the raw network is a "reverse classifier"
    assert torch.equal(rce_classifier.predict(x), raw.argmin(1))
    assert (rce_classifier.predict(x) == y).float().mean() > 0.9


def test_unknown_objective():
    with pytest.raises(ConfigError):
        Classifier(identity3(), "mse")


def test_predict_batched_validates_input(ce_classifier):
    with pytest.raises(InputError, match="channels"):
        ce_classifier.predict_batched(torch.rand(2, 3, 12, 12))
    with pytest.raises(InputError, match="NaN"):
        ce_classifier.predict_batched(torch.full((2, 1, 12, 12), float("nan")))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ce_classifier.predict_batched(torch.full((2, 1, 12, 12), 255.0))
    with pytest.raises(InputError, match="floating"):
        ce_classifier.predict_batched(torch.zeros(2, 1, 12, 12, dtype=torch.int16))
    with pytest.raises(InputError, match="4-D"):
        ce_classifier.predict_batched(torch.rand(12, 12))
    # the common forms are taken where unambiguous (data/forms.py): uint8 is / 255, grey NHW gains its channel axis
    x = torch.randint(0, 256, (3, 1, 12, 12), dtype=torch.uint8)
    assert torch.equal(ce_classifier.predict_batched(x), ce_classifier.predict_batched(x.float() / 255))
    assert torch.equal(ce_classifier.predict_batched(x[:, 0]), ce_classifier.predict_batched(x))


def test_effective_logits_negate_raw_logits_only_for_rce(rce_classifier, synthetic):
    raw = torch.tensor([[1.0, -2.0, 0.5]])
    ce, rce = Classifier(identity3(), "ce"), Classifier(identity3(), "rce")
    assert ce.effective_logits(raw) is raw and torch.equal(rce.effective_logits(raw), -raw)
    assert ce.sign == 1.0 and rce.sign == -1.0
    x = synthetic.test_images()[:16]
    with torch.no_grad():
        raw = rce_classifier.net(x)
        assert torch.equal(rce_classifier.effective_logits(raw), rce_classifier.logits(x))
        z = rce_classifier.features(x)
        assert torch.equal(rce_classifier.logits_from_features(z), -rce_classifier.net.head(z))


def test_final_layer_is_exactly_the_features():
    clf, x = resnet8(), images()
    with torch.no_grad():
        out = clf.features(x, layers=["final"])
        assert list(out) == ["final"] and torch.equal(out["final"], clf.features(x))


def test_hooked_layers_equal_a_manual_forward():
    clf, x = resnet8(), images()
    net = clf.net
    with torch.no_grad():
        out = clf.features(x, layers=["stem", "units.0", "units.0.conv1", "bn_final", "final"])
        stem = net.stem(x - 0.5)
        assert torch.equal(out["stem"], stem)
        assert torch.equal(out["units.0"], net.units[0](stem))
        assert torch.equal(out["bn_final"], net.bn_final(net.units(stem)))
        assert torch.equal(out["final"], clf.features(x))
    assert out["stem"].shape == (3, 16, 12, 12) and out["units.0.conv1"].shape == (3, 16, 12, 12)


def test_hooks_are_removed_even_when_the_forward_fails():
    clf = resnet8()
    clf.features(images(), layers=["stem", "units.0"])
    assert all(not m._forward_hooks for m in clf.modules())
    with pytest.raises(RuntimeError):
        clf.features(torch.rand(2, 3, 12, 12), layers=["stem", "units.0"])  # wrong channel count
    assert all(not m._forward_hooks for m in clf.modules())


def test_gradients_flow_from_an_intermediate_layer_to_the_input():
    clf, x = resnet8(), images().requires_grad_()
    act = clf.features(x, layers=["units.0"])["units.0"]
    act.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_layer_names_and_unknown_layers():
    clf = resnet8()
    names = clf.layer_names()
    assert names[0] == "stem" and names[-1] == "final"
    assert {"units.0", "units.0.bn1", "bn_final"} <= set(names)
    assert "" not in names and "fc" not in names
    assert Classifier(identity3(), "ce").layer_names() == ["final"]
    with pytest.raises(ConfigError, match="choose from stem, units"):
        clf.features(images(), layers=["stem", "nope"])
    with pytest.raises(ConfigError, match="'fc'"):
        clf.features(images(), layers=["fc"])  # the head is not part of features(x)


def test_a_module_run_twice_has_no_single_activation():
    class Twice(nn.Module):
        in_channels, num_classes, feature_dim = 1, 2, 4

        def __init__(self):
            super().__init__()
            self.act, self.fc = nn.LeakyReLU(0.1), nn.Linear(4, 2)

        def features(self, x):
            return self.act(self.act(x.flatten(1)))

        def head(self, z):
            return self.fc(z)

    with pytest.raises(ConfigError, match="2 times"):
        Classifier(Twice(), "ce").features(torch.rand(1, 1, 2, 2), layers=["act"])
