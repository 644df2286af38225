"""The defended model of Carlini & Wagner 2017 (K+1 classes): its argmax is the Detector's verdict on every input,
its class logits are the classifier's effective logits, gradients reach the image, and the one success rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rcedetect.detectors.defended
import rcedetect.stats.operating_point
from rcedetect.core.errors import InputError, NotFittedError
from rcedetect.detectors import NOT_SURE, Detector, ScoreTerm, observe
from rcedetect.detectors.defended import adaptive_success, defend
from rcedetect.stats.operating_point import operating_point


def _classifier(request, objective):
    return request.getfixturevalue(f"{objective}_classifier").eval()


def _detector(clf, synthetic, metric):
    """A detector fitted on the training images and calibrated on the LAST 80 test images (never checked below:
    one of them sits exactly at T)."""
    settings = {"per_class": 50} if metric == "kd" else {}
    det = Detector(clf, metric, **settings)
    det.fit(synthetic.train_images(), synthetic.y_train) if metric == "kd" else det.fit(None)
    return det.calibrate(synthetic.test_images()[-80:], fpr=0.05)


def _inputs(synthetic) -> torch.Tensor:
    """Clean test images, noisy ones and pure noise: both verdicts occur (the noise is rejected)."""
    x = synthetic.test_images()[:100]
    g = torch.Generator().manual_seed(0)
    noisy = (x[:50] + 0.3 * torch.randn(x[:50].shape, generator=g)).clamp(0, 1)
    noise = torch.rand((30, *x.shape[1:]), generator=g)
    return torch.cat([x, noisy, noise])


@pytest.mark.parametrize("objective", ["ce", "rce"])
@pytest.mark.parametrize("metric", ["kd", "confidence", "non_me"])
def test_argmax_of_the_k_plus_1_logits_is_the_detectors_verdict(request, synthetic, objective, metric):
    clf = _classifier(request, objective)
    det = _detector(clf, synthetic, metric)
    model = defend(clf, det)
    x = _inputs(synthetic)
    with torch.no_grad():
        out = model(x)
        logits = clf.logits(x)
    k = clf.num_classes
    assert out.shape == (len(x), k + 1) and model.reject_class == k and model.num_classes == k + 1
    torch.testing.assert_close(out[:, :k], logits)  # the classifier's effective logits (−Z for RCE), untouched
    verdict = det.predict(x)
    pred = out.argmax(1)
    assert torch.equal(torch.where(pred == k, torch.full_like(pred, NOT_SURE), pred), verdict)
    assert torch.equal(model.predict(x), verdict)
    assert (verdict == NOT_SURE).any() and (verdict != NOT_SURE).any()  # both verdicts were checked


def test_the_verdict_is_exact_at_and_next_to_the_threshold(rce_classifier, synthetic):
    """score = T is accepted, the next float above T is rejected, even where scale · margin is far below the
    rounding of the class logits."""
    clf = rce_classifier.eval()
    det = _detector(clf, synthetic, "kd")
    x = synthetic.test_images()[:8]
    k = clf.num_classes
    for i in range(len(x)):
        with torch.no_grad():  # the score the K+1 model sees of this one image (a batch of one, as below)
            t = float(det.scorer.score(observe(clf, x[i : i + 1])))
        at = defend(clf, ScoreTerm(det.scorer, t), scale=1e-30)
        below = defend(clf, ScoreTerm(det.scorer, float(np.nextafter(np.float32(t), np.float32(-np.inf)))),
                       scale=1e-30)
        with torch.no_grad():
            assert int(at(x[i : i + 1]).argmax(1)) != k  # score ≤ T: accepted
            assert int(below(x[i : i + 1]).argmax(1)) == k  # score > T by one float: rejected


@pytest.mark.parametrize("metric", ["kd", "confidence"])
def test_gradients_reach_the_image_through_the_reject_logit(rce_classifier, synthetic, metric):
    clf = rce_classifier.eval()
    model = defend(clf, _detector(clf, synthetic, metric))
    x = synthetic.test_images()[:6].clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[:, clf.num_classes].sum(), x)
    assert torch.isfinite(g).all()
    assert (g.flatten(1).abs().sum(1) > 0).all()  # every image, not just one
    # and the reject logit moves with the detector's score: scale doubles its distance from the top class logit
    with torch.no_grad():
        a, b = model(x), defend(clf, model.term, scale=2.0)(x)
    gap_a, gap_b = a[:, -1] - a[:, :-1].max(1).values, b[:, -1] - b[:, :-1].max(1).values
    torch.testing.assert_close(gap_b, 2 * gap_a, rtol=1e-4, atol=1e-4)


def test_a_detector_not_fitted_or_not_calibrated_is_refused(ce_classifier, synthetic):
    clf = ce_classifier.eval()
    with pytest.raises(NotFittedError, match="not fitted"):
        defend(clf, Detector(clf, "kd", per_class=20))
    fitted = Detector(clf, "kd", per_class=20).fit(synthetic.train_images(), synthetic.y_train)
    with pytest.raises(NotFittedError, match="calibrate"):
        defend(clf, fitted)
    with pytest.raises(InputError, match="Detector"):
        defend(clf, "kd")
    with pytest.raises(InputError, match="scale"):
        defend(clf, fitted.calibrate(synthetic.test_images()[-50:]), scale=0.0)


def test_a_detector_of_another_classifier_is_refused(ce_classifier, rce_classifier, synthetic):
    det = _detector(rce_classifier.eval(), synthetic, "confidence")
    with pytest.raises(InputError, match="another classifier"):
        defend(ce_classifier, det)


def test_the_one_success_rule():
    y = np.array([0, 1, 2, 3])
    pred = np.array([0, 2, 1, 3])
    accepted = np.array([True, True, False, False])
    assert adaptive_success(pred, y, accepted).tolist() == [False, True, False, False]  # not y, not rejected
    t = adaptive_success(torch.tensor(pred), torch.tensor(y), torch.tensor(accepted))
    assert t.tolist() == [False, True, False, False]
    # the K+1 verdict: the reject class (K = 4) counts as failure, like the true label
    k1 = torch.tensor([4, 2, 4, 3])
    assert adaptive_success(k1, torch.tensor(y), k1 != 4).tolist() == [False, True, False, False]
    # an attack's own goal (target reached) in place of pred != y
    assert adaptive_success(pred, y, accepted, np.array([True, False, True, True])).tolist() == [True, False,
                                                                                                False, False]
    assert rcedetect.detectors.defended.adaptive_success is rcedetect.stats.operating_point.adaptive_success  # one place


def test_sr_at_n_counts_by_the_rule():
    """SR@N among clean-correct images = share with adaptive_success (misclassified and score ≤ T)."""
    g = np.random.default_rng(0)
    n = 200
    heldout, clean, adv = g.normal(size=300), g.normal(size=n), g.normal(0.5, 1.0, size=n)
    y, pc, pa = g.integers(0, 4, n), g.integers(0, 4, n), g.integers(0, 4, n)
    op = operating_point(heldout, clean, adv, y, pc, pa, fpr=0.05)
    cc = pc == y
    hand = ((pa != y) & (adv <= op["threshold"]))[cc].mean()
    assert math.isclose(op["attack_success_rate"], hand)
