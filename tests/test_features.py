"""FeatureBank extraction, save/load and caching (SPEC §4.1)."""

from __future__ import annotations

import pytest
import torch

from rcedetect import features
from rcedetect.errors import CheckpointError, InputError
from rcedetect.features import FeatureBank, cached, extract


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
