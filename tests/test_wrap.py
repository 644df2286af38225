"""rcedetect.wrap: any torchvision / timm / own model as a Classifier split at its final linear layer."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import rcedetect
from rcedetect import models
from rcedetect.attacks import create as attack
from rcedetect.core.errors import CheckpointError, ConfigError
from rcedetect.models import checkpoint, external
from rcedetect.models.wrapping import wrap

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _resnet18(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


def _penultimate(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision ResNet's own forward, stopped before ``fc``."""
    h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
    return torch.flatten(m.avgpool(h), 1)


def test_features_are_the_models_own_penultimate_activations():
    m = _resnet18()
    clf = rcedetect.wrap(m, head="fc", mean=MEAN, std=STD, input_shape=(3, 16, 16)).eval()
    x = torch.rand(5, 3, 16, 16)
    normalised = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        z = clf.features(x)
        assert torch.equal(z, _penultimate(m, normalised))
        assert torch.equal(clf.net.head(z), m(normalised))
    assert clf.net.model is m  # shared, never copied
    assert clf.num_classes == 4 and clf.in_channels == 3 and clf.net.feature_dim == 512
    assert clf.stage_names() == ["model.layer1", "model.layer2", "model.layer3", "model.layer4"]
    assert "model.fc" not in clf.layer_names() and "model.layer2.0.conv1" in clf.layer_names()
    assert clf.features(x, layers=["model.layer3", "final"])["model.layer3"].shape == (5, 256, 1, 1)


def test_rce_sign_and_auto_head():
    m = _resnet18()
    ce, rce = wrap(m, objective="ce").eval(), wrap(m, objective="rce").eval()
    assert ce.net.head_name == "fc"
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rce.logits(x), -ce.logits(x))
    vgg_like = nn.Sequential()
    vgg_like.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    vgg_like.add_module("classifier", nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    clf = wrap(vgg_like, input_shape=(3, 8, 8))
    assert clf.net.head_name == "classifier.2" and clf.net.feature_dim == 8
    assert wrap(vgg_like, head="classifier").net.head_name == "classifier.2"


def test_normalisation_inside_keeps_attacks_in_unit_range():
    clf = wrap(_resnet18(3), "fc", mean=MEAN, std=STD, input_shape=(3, 16, 16)).eval()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    for name, kw in (("fgsm", {"eps": 0.3}), ("cw", {"binary_search_steps": 1, "max_iterations": 5})):
        adv = attack(name, **kw)(clf, x, y).x_adv
        assert adv.min() >= 0 and adv.max() <= 1 and adv.shape == x.shape


def test_grey_images_feed_a_three_channel_model():
    m = _resnet18()
    clf = wrap(m, "fc", input_shape=(1, 16, 16)).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(clf.features(x), _penultimate(m, x.expand(-1, 3, -1, -1)))
    assert clf.in_channels == 1


@pytest.mark.parametrize("model,head,needle", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), None, "no linear layer"),
    (_resnet18(), "classifier", "has no module 'classifier'"),
    (_resnet18(), "layer4", "not a linear layer"),
])
def test_bad_heads_are_named(model, head, needle):
    with pytest.raises(ConfigError, match=needle):
        wrap(model, head)


def test_a_head_that_is_not_the_last_layer_is_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="not the model's last layer"):
        wrap(net, head="1", input_shape=(3, 4, 4))


def test_models_by_name_and_checkpoint_round_trip(tmp_path):
    net = models.create("torchvision:resnet18", in_channels=1, num_classes=5, input_shape=(1, 16, 16))
    assert net.arch == "torchvision:resnet18" and net.spec()["head"] == "fc"
    assert net.spec()["mean"] == [round(v, 6) for v in MEAN]
    clf = rcedetect.Classifier(net, "rce", input_shape=(1, 16, 16)).eval()
    checkpoint.save(tmp_path, clf, step=1, config={}, dataset="d")
    back = checkpoint.load(tmp_path).classifier
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(back.logits(x), clf.logits(x))
    assert back.objective == "rce" and back.input_shape == (1, 16, 16)
    with pytest.raises(ConfigError, match="torchvision has no classification model"):
        models.check_arch("torchvision:resnet19")
    with pytest.raises(ConfigError, match="unknown model"):
        models.create("keras:resnet18")


def test_own_model_checkpoint_needs_the_model(tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
            self.out = nn.Linear(6, 3)

        def forward(self, x):
            return self.out(self.body(x))

    clf = wrap(Tiny(), "out", input_shape=(1, 4, 4))
    checkpoint.save(tmp_path, clf, step=1, config={}, dataset="d")
    with pytest.raises(CheckpointError, match="your own model"):
        checkpoint.load(tmp_path)
    back = checkpoint.load(tmp_path, model=Tiny()).classifier
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(back.logits(x), clf.eval().logits(x))


def test_local_weights_keep_a_fresh_head_for_another_class_count(tmp_path):
    from safetensors.torch import save_file

    source = _resnet18(num_classes=7)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    net = models.create("torchvision:resnet18", 3, 4)
    report = external.load_weights(net, tmp_path / "w.safetensors")
    assert sorted(report["skipped"]) == ["fc.bias", "fc.weight"]
    assert torch.equal(net.model.conv1.weight, source.conv1.weight)
    save_file({"conv1.weight": source.conv1.weight}, tmp_path / "part.safetensors")
    with pytest.raises(ConfigError, match="lacks"):
        external.load_weights(net, tmp_path / "part.safetensors")


def test_timm_model_uses_forward_head():
    timm = pytest.importorskip("timm")
    m = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    clf = wrap(m, input_shape=(3, 16, 16)).eval()
    assert clf.net.head_name is None and clf.net.spec()["mean"] == [0.485, 0.456, 0.406]
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        z = clf.features(x)
        assert torch.equal(z, m.forward_head(m.forward_features(clf.net.prepare(x)), pre_logits=True))
        assert torch.allclose(clf.logits(x), m(clf.net.prepare(x)))
    assert clf.stage_names()[-1] == "model.layer4"
    net = models.create("timm:resnet18", 3, 3, input_shape=(3, 16, 16))
    assert net.arch == "timm:resnet18"


def test_timm_is_optional(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rcedetect\[timm\]'"):
        models.check_arch("timm:resnet18")
    from rcedetect.training.config import TrainConfig

    with pytest.raises(ConfigError, match="timm"):
        TrainConfig(arch="timm:resnet18")
    with pytest.raises(ConfigError, match="apply to torchvision"):
        TrainConfig(arch="resnet8", head="fc")
