"""FeatureBank extraction, save/load and caching: final hidden features (paper §3.2), intermediate layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rcedetect import Classifier
from rcedetect.core.errors import CheckpointError, InputError
from rcedetect.models import features
from rcedetect.models.features import FeatureBank, cached, extract


def test_extract_matches_the_classifier(ce_classifier, test_batch):
    x, y = test_batch
    bank = extract(ce_classifier, x, y, batch_size=7)
    assert bank.features.shape == (len(x), 64) and bank.features.dtype == torch.float32
    assert torch.equal(bank.labels, y)
    with torch.no_grad():
        z = ce_classifier.features(x)
        assert torch.allclose(bank.features, z, atol=1e-5)
        assert torch.equal(bank.predictions, ce_classifier.logits(x).argmax(1))
    assert len(bank) == len(x) and bank.dim == 64


def test_batch_size_does_not_change_results(rce_classifier, test_batch):
    x, _ = test_batch
    a, b = extract(rce_classifier, x, batch_size=5), extract(rce_classifier, x, batch_size=500)
    assert torch.allclose(a.features, b.features, atol=1e-5)
    assert torch.equal(a.predictions, b.predictions) and a.labels is None


def test_extract_uses_eval_mode_and_restores_the_mode(ce_classifier, test_batch):
    x, _ = test_batch
    ref = extract(ce_classifier, x).features
    ce_classifier.train()
    try:
        again = extract(ce_classifier, x).features  # BatchNorm must use its moving statistics
        assert ce_classifier.training
    finally:
        ce_classifier.eval()
    assert torch.allclose(ref, again, atol=1e-6)


def test_rce_predictions_use_the_reversed_logits(rce_classifier, test_batch):
    x, _ = test_batch
    bank = extract(rce_classifier, x)
    with torch.no_grad():
        raw = rce_classifier.net.head(bank.features)
    assert torch.equal(bank.predictions, raw.argmin(1))


def test_save_load_and_cache(ce_classifier, test_batch, tmp_path, monkeypatch):
    x, y = test_batch
    path = tmp_path / "bank.safetensors"
    bank = cached(ce_classifier, x, y, path)
    assert path.is_file()
    loaded = FeatureBank.load(path)
    assert torch.equal(loaded.features, bank.features) and torch.equal(loaded.labels, y)
    assert torch.equal(loaded.predictions, bank.predictions)

    def boom(*a, **k):
        raise AssertionError("cached() recomputed features that were on disk")

    monkeypatch.setattr(features, "extract", boom)
    again = cached(ce_classifier, x, y, path)
    assert torch.equal(again.features, bank.features)
    with pytest.raises(CheckpointError, match="delete it"):
        cached(ce_classifier, x[:10], y[:10], path)
    with pytest.raises(CheckpointError, match="labels"):
        cached(ce_classifier, x, (y + 1) % 4, path)


def test_errors(ce_classifier, test_batch, tmp_path):
    x, y = test_batch
    with pytest.raises(InputError, match="floating point"):
        extract(ce_classifier, (x * 255).to(torch.uint8))
    with pytest.raises(InputError):
        extract(ce_classifier, x, y[:3])
    with pytest.raises(InputError):
        extract(ce_classifier, x[:, :, :, :, None])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        FeatureBank.load(bad)
    empty = extract(ce_classifier, x[:0])
    assert empty.features.shape == (0, 64)


LAYERS = ["stem", "units.0", "bn_final"]


def test_extract_with_layers_stores_spatial_means(ce_classifier, test_batch):
    x, y = test_batch
    plain = extract(ce_classifier, x, y, batch_size=7)
    bank = extract(ce_classifier, x, y, batch_size=7, layers=[*LAYERS, "final", "stem"])
    assert list(bank.layers) == LAYERS and not plain.layers
    assert torch.equal(bank.features, plain.features) and torch.equal(bank.predictions, plain.predictions)
    assert [tuple(bank.layer(n).shape) for n in LAYERS] == [(len(x), 16), (len(x), 16), (len(x), 64)]
    assert all(a.dtype == torch.float32 for a in bank.layers.values())
    with torch.no_grad():
        maps = ce_classifier.features(x, layers=LAYERS)
    for name in LAYERS:
        assert torch.allclose(bank.layer(name), maps[name].mean(dim=(2, 3)), atol=1e-5)
    assert bank.layer("final") is bank.features
    with pytest.raises(InputError, match="no layer 'units.1'.*final, stem"):
        bank.layer("units.1")
    assert extract(ce_classifier, x[:0], layers=["stem"]).layer("stem").shape == (0, 16)


def test_two_dimensional_layers_are_kept_as_they_are():
    class Hidden(nn.Module):
        in_channels, num_classes, feature_dim = 1, 2, 3

        def __init__(self):
            super().__init__()
            self.hidden, self.fc = nn.Linear(4, 3), nn.Linear(3, 2)

        def features(self, x):
            return torch.tanh(self.hidden(x.flatten(1)))

        def head(self, z):
            return self.fc(z)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        clf = Classifier(Hidden(), "rce")
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    bank = extract(clf, x, layers=["hidden"])
    with torch.no_grad():
        assert torch.equal(bank.layer("hidden"), clf.net.hidden(x.flatten(1)))
        assert torch.equal(bank.predictions, (-clf.net.fc(bank.features)).argmax(1))


def test_layers_survive_save_load_and_cache(ce_classifier, test_batch, tmp_path, monkeypatch):
    x, y = test_batch
    path = tmp_path / "bank.safetensors"
    bank = cached(ce_classifier, x, y, path, layers=LAYERS)
    loaded = FeatureBank.load(path)
    assert set(loaded.layers) == set(LAYERS)
    assert all(torch.equal(loaded.layer(n), bank.layer(n)) for n in LAYERS)
    assert torch.equal(loaded.features, bank.features) and torch.equal(loaded.predictions, bank.predictions)

    def boom(*a, **k):
        raise AssertionError("cached() recomputed features that were on disk")

    monkeypatch.setattr(features, "extract", boom)
    assert set(cached(ce_classifier, x, y, path, layers=["stem", "final"]).layers) == set(LAYERS)
    assert set(cached(ce_classifier, x, y, path).layers) == set(LAYERS)
    with pytest.raises(CheckpointError, match="lacks the layer.*units.0.conv1.*delete it"):
        cached(ce_classifier, x, y, path, layers=["stem", "units.0.conv1"])


def test_cached_bank_without_the_requested_layer_is_stale(ce_classifier, test_batch, tmp_path):
    x, y = test_batch
    path = tmp_path / "plain.safetensors"
    cached(ce_classifier, x, y, path)
    assert not FeatureBank.load(path).layers
    with pytest.raises(CheckpointError, match="lacks the layer.*stem"):
        cached(ce_classifier, x, y, path, layers=["stem"])


@pytest.mark.parametrize("bad", [
    {"stem": torch.zeros(5, 16)},  # wrong N
    {"stem": torch.zeros(4, 16, 2, 2)},  # not reduced to (N, C)
    {"stem": torch.zeros(4, 16, dtype=torch.float64)},
    {"stem": [[0.0]] * 4},
    {"final": torch.zeros(4, 8)},  # reserved: the final features are `features`
])
def test_invalid_layers_are_rejected(bad):
    with pytest.raises(InputError, match="layer"):
        FeatureBank(torch.zeros(4, 8), None, torch.zeros(4, dtype=torch.int64), bad)
