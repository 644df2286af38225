import pytest
import torch
from torch import nn

from rcedetect import Classifier
from rcedetect.errors import ConfigError, InputError


class Linear(nn.Module):
    """features = flatten, head = a fixed linear map: the smallest Classifier-compatible net."""

    in_channels, num_classes = 1, 3

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
            self.fc.bias.zero_()

    def features(self, x):
        return x.flatten(1)

    def head(self, z):
        return self.fc(z)


def test_logits_sign_is_the_only_difference_between_ce_and_rce():
    net = Linear()
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
        Classifier(Linear(), "mse")


def test_predict_batched_validates_input(ce_classifier):
    with pytest.raises(InputError, match="channels"):
        ce_classifier.predict_batched(torch.rand(2, 3, 12, 12))
    with pytest.raises(InputError, match="NaN"):
        ce_classifier.predict_batched(torch.full((2, 1, 12, 12), float("nan")))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ce_classifier.predict_batched(torch.full((2, 1, 12, 12), 255.0))
    with pytest.raises(InputError, match="floating"):
        ce_classifier.predict_batched(torch.zeros(2, 1, 12, 12, dtype=torch.uint8))
    with pytest.raises(InputError, match="4-D"):
        ce_classifier.predict_batched(torch.rand(1, 12, 12))
