"""The thresholding detector: fit, calibrate on clean held-out data, predict / NOT SURE, files, errors."""

from __future__ import annotations

import pytest
import torch

from rcedetect import data
from rcedetect.core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from rcedetect.detectors import NOT_SURE, Detector
from rcedetect.models.features import FeatureBank, extract


@pytest.fixture(scope="module")
def clean_pool(ce_classifier):
    """2,000 fresh held-out images from the synthetic distribution the classifiers were trained on."""
    ds = data.make_synthetic(n_test=2000)  # same seed: same class prototypes, new test draws
    return extract(ce_classifier, ds.test_images())


@pytest.fixture(scope="module")
def train_bank(ce_classifier, synthetic):
    return extract(ce_classifier, synthetic.train_images(), synthetic.y_train)


@pytest.mark.parametrize("metric", ["kd", "non_me"])
def test_calibration_rejects_the_requested_share_of_held_out_clean_inputs(ce_classifier, train_bank, clean_pool,
                                                                          metric):
    cal = FeatureBank(clean_pool.features[:1000], None, clean_pool.predictions[:1000])
    held = FeatureBank(clean_pool.features[1000:], None, clean_pool.predictions[1000:])
    settings = {"per_class": 100} if metric == "kd" else {}  # each metric takes its own settings
    det = Detector(ce_classifier, metric, **settings).fit(train_bank).calibrate(cal, fpr=0.05)
    assert det.clean_rejection_rate == pytest.approx(0.05, abs=1e-9)  # exact on the calibration set (no ties)
    rate = (det.predict(held) == NOT_SURE).double().mean().item()
    assert abs(rate - 0.05) < 4 * (0.05 * 0.95 / 1000) ** 0.5  # within sampling error (4 SE ≈ 0.028)


def test_confidence_never_rejects_more_than_asked(ce_classifier, clean_pool):
    det = Detector(ce_classifier, "confidence").fit(None).calibrate(clean_pool, fpr=0.1)
    assert det.clean_rejection_rate <= 0.1 + 1e-12  # ties (saturated softmax) can only lower it


def test_predict_is_the_label_or_not_sure(ce_classifier, train_bank, test_batch):
    x, _ = test_batch
    det = Detector(ce_classifier, "kd", per_class=50).fit(train_bank).calibrate(x, fpr=0.25)
    labels, s = det.decide(x)
    with torch.no_grad():
        pred = ce_classifier.predict(x)
    assert torch.equal(labels, torch.where(s > det.threshold, torch.full_like(pred, NOT_SURE), pred))
    assert (labels == NOT_SURE).sum() == 16  # a quarter of the 64 calibration images
    assert torch.equal(det.predict(x), labels) and torch.allclose(det.score(x), s)
    assert det.kd.sigma2 == pytest.approx(1 / 0.26)  # the paper's CE bandwidth by default


def test_images_and_labels_fit_like_a_bank(rce_classifier, synthetic, test_batch):
    x, _ = test_batch
    a = Detector(rce_classifier, "kd", per_class=30, seed=1).fit(synthetic.train_images(), synthetic.y_train)
    b = Detector(rce_classifier, "kd", per_class=30, seed=1).fit(
        extract(rce_classifier, synthetic.train_images(), synthetic.y_train))
    assert torch.allclose(a.score(x), b.score(x), atol=1e-5)
    assert a.kd.sigma2 == pytest.approx(0.1 / 0.26)


@pytest.mark.parametrize("metric", ["kd", "confidence"])
def test_save_load_round_trip_gives_identical_scores(ce_classifier, train_bank, test_batch, tmp_path, metric):
    x, _ = test_batch
    settings = {"per_class": 40, "sigma2": 2.0} if metric == "kd" else {}
    det = Detector(ce_classifier, metric, **settings).fit(train_bank).calibrate(x, fpr=0.1)
    det.save(tmp_path / "det", extra={"note": "hi"})
    back = Detector.load(tmp_path / "det", ce_classifier)
    assert torch.equal(back.score(x), det.score(x))
    assert torch.equal(back.predict(x), det.predict(x))
    assert back.threshold == det.threshold and back.fpr == 0.1 and back.extra == {"note": "hi"}


def test_automatic_bandwidth(ce_classifier, train_bank, test_batch, tmp_path):
    x, _ = test_batch
    det = Detector(ce_classifier, "kd", per_class=100, sigma2="auto").fit(train_bank).calibrate(x)
    sel = det.bandwidth_selection
    assert det.kd.sigma2 == sel.sigma2 == sel.candidates[max(range(len(sel.candidates)),
                                                             key=sel.mean_log_likelihood.__getitem__)]
    det.save(tmp_path / "auto")
    back = Detector.load(tmp_path / "auto", ce_classifier)
    assert back.bandwidth_selection == sel and back.scorer.settings()["sigma2"] == "auto" and back.kd.sigma2 == sel.sigma2


def test_errors(ce_classifier, rce_classifier, train_bank, test_batch, tmp_path):
    x, _ = test_batch
    with pytest.raises(ConfigError):
        Detector(ce_classifier, "lda")  # no such detector
    det = Detector(ce_classifier, "kd", per_class=20)
    with pytest.raises(NotFittedError):
        det.score(x)
    with pytest.raises(NotFittedError):
        det.calibrate(x)
    with pytest.raises(NotFittedError):
        det.save(tmp_path / "x")
    with pytest.raises(InputError, match="labels"):
        det.fit(FeatureBank(train_bank.features, None, train_bank.predictions))
    det.fit(train_bank)
    with pytest.raises(NotFittedError, match="calibrate"):
        det.predict(x)
    wrong = FeatureBank(torch.zeros(3, 10), None, torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="10-d"):
        det.score(wrong)
    det.calibrate(x).save(tmp_path / "ce")
    with pytest.raises(CheckpointError, match="ce model"):
        Detector.load(tmp_path / "ce", rce_classifier)
    with pytest.raises(CheckpointError):
        Detector.load(tmp_path / "missing", ce_classifier)
    with pytest.raises(InputError):
        det.calibrate(x, fpr=1.5)
