import math

import pytest
import torch

from rcedetect import models
from rcedetect.core.errors import ConfigError
from rcedetect.models.resnet import BN_EPS, LEAKINESS


@pytest.mark.parametrize(
    "name,channels,expected",
    [("resnet32", 3, 464_154), ("resnet32", 1, 463_866), ("resnet56", 3, 853_018), ("resnet56", 1, 852_730)],
)
def test_trainable_parameter_counts_match_spec(name, channels, expected):
    assert models.count_trainable(models.create(name, in_channels=channels)) == expected


def test_resnet32_cifar_breakdown_conv_bn_fc():
    net = models.create("resnet32", in_channels=3)
    conv = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    bn = sum(m.weight.numel() + m.bias.numel() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    fc = net.fc.weight.numel() + net.fc.bias.numel()
    assert (conv, bn, fc) == (461_232, 2_272, 650)


@pytest.mark.parametrize("name", sorted(models.PRESETS))
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 12, 12)])
def test_every_preset_gives_64d_features_and_logits(name, shape):
    net = models.create(name, in_channels=shape[1]).eval()
    x = torch.rand(shape)
    z = net.features(x)
    assert z.shape == (2, 64)
    assert torch.equal(net.head(z), net(x))


def test_initialisation_follows_spec():
    torch.manual_seed(0)
    net = models.create("resnet56", in_channels=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # He init over fan-out: std sqrt(2 / (9 * out_channels)); check on the big 64-channel convs
    w = torch.cat([m.weight.flatten() for m in convs if m.out_channels == 64])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.02)
    assert abs(w.mean().item()) < 0.002
    bound = math.sqrt(3 / 64)
    assert net.fc.weight.abs().max().item() <= bound
    assert net.fc.weight.abs().max().item() > 0.9 * bound
    assert torch.all(net.fc.bias == 0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert m.eps == BN_EPS and m.momentum == pytest.approx(0.1)
    assert all(m.bias is None for m in convs)


def test_input_is_centred_inside_the_model():
    """A [0,1] image of 0.5 everywhere is the zero input of the original's [-0.5, 0.5] convention."""
    net = models.create("resnet8").eval()
    seen = []
    net.stem.register_forward_hook(lambda m, i, o: seen.append(i[0]) and None)
    net(torch.full((1, 1, 8, 8), 0.5))
    assert torch.all(seen[0] == 0)


def test_downsampling_shortcut_is_avgpool_and_zero_channel_pad():
    net = models.create("resnet8").eval()
    unit = net.units[1]  # first unit of stage 2: 16 -> 32, stride 2
    x = torch.randn(1, 16, 8, 8)
    s = unit._shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.all(s[:, :8] == 0) and torch.all(s[:, 24:] == 0)
    assert torch.allclose(s[:, 8:24], torch.nn.functional.avg_pool2d(x, 2))


def test_leaky_relu_slope():
    assert LEAKINESS == 0.1


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="resnet32"):
        models.create("resnet33")
