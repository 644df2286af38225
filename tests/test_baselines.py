"""Confidence and non-ME (paper eq. 1, Lemma 1; protocol §4.7) and the one score convention of rcedetect.detectors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rcedetect import detectors
from rcedetect.core.errors import ConfigError, InputError, NotFittedError
from rcedetect.detectors import (
    Detector,
    FitData,
    KDensity,
    KernelDensity,
    View,
    confidence,
    create,
    non_me,
    score_features,
)
from rcedetect.models.features import extract


def spec_non_me(logits: torch.Tensor) -> torch.Tensor:
    """protocol §4.7 formula on probabilities: Σ_{i≠ŷ}(−p_i log p_i)/S + log S."""
    p = torch.softmax(logits, 1)
    top = p.argmax(1, keepdim=True)
    rest = p.scatter(1, top, 0.0)
    s = rest.sum(1)
    return torch.special.entr(rest).sum(1) / s + s.log()


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_non_me_hits_log_l_minus_1_on_the_lemma_1_set(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    rest = torch.randn(8, 1, generator=g, dtype=torch.float64).expand(8, num_classes - 1)
    top = rest[:, :1] + torch.rand(8, 1, generator=g, dtype=torch.float64) * 30 + 1e-3
    logits = torch.cat([rest, top], 1)[:, torch.randperm(num_classes, generator=g)]
    got = non_me(logits)
    assert torch.allclose(got, torch.full_like(got, math.log(num_classes - 1)), rtol=1e-13, atol=1e-13)
    if num_classes > 2:  # off the set (unequal non-max probabilities) it is strictly smaller (Lemma 1)
        off = torch.cat([rest + torch.linspace(0, 0.5, num_classes - 1, dtype=torch.float64), top + 1], 1)
        assert (non_me(off) < math.log(num_classes - 1) - 1e-6).all()


def test_non_me_matches_the_spec_formula_and_the_paper_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 10, generator=g, dtype=torch.float64) * 3
    assert torch.allclose(non_me(logits), spec_non_me(logits), rtol=1e-12)
    p = torch.softmax(logits, 1)
    for row, val in zip(p, non_me(logits)):
        q = torch.cat([row[: row.argmax()], row[row.argmax() + 1 :]])
        q = q / q.sum()
        assert val.item() == pytest.approx(-(q * q.log()).sum().item(), rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=2, max_size=12),
       st.sampled_from([torch.float32, torch.float64]))
def test_non_me_is_finite_and_bounded_everywhere(values, dtype):
    logits = torch.tensor([values], dtype=dtype, requires_grad=True)
    h = non_me(logits)
    assert torch.isfinite(h).all()
    assert -1e-6 <= h.item() <= math.log(len(values) - 1) + 1e-5
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    c = confidence(logits.detach())
    assert 0 < c.item() <= 1


def test_non_me_when_probabilities_underflow():
    logits = torch.tensor([[0.0, -200.0, -200.0, -5000.0]], dtype=torch.float32)
    assert torch.softmax(logits, 1)[0, 3] == 0
    h = non_me(logits)
    assert torch.isfinite(h).all() and h.item() == pytest.approx(math.log(2), rel=1e-6)


def test_confidence_is_the_max_probability():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)
    assert torch.allclose(confidence(logits), p.max(1).values)
    assert confidence(logits)[1].item() == pytest.approx(1 / 3)


def test_the_score_convention_is_higher_means_adversarial():
    logits = torch.tensor([[9.0, 0.0, 0.0], [1.0, 0.9, 0.8]])  # confident vs. unsure
    z = torch.zeros(2, 5)  # confidence and non-ME read the logits only
    assert torch.equal(create("confidence").score(View(z, logits)), -confidence(logits))
    assert torch.equal(create("non_me").score(View(z, logits)), -non_me(logits))
    s = create("confidence").score(View(z, logits))
    assert s[1] > s[0]
    # the registry's order is the tables' order: the paper's three, then the baselines of other papers
    assert detectors.METRICS == ("confidence", "non_me", "kd", "kd_bu", "lid", "mahalanobis")
    assert [detectors.REGISTRY[m].needs_fit for m in detectors.METRICS] == [False, False, True, True, True, True]


def test_scores_of_images_and_features_agree(rce_classifier, test_batch, synthetic):
    x, _ = test_batch
    bank = extract(rce_classifier, x)
    with torch.no_grad():
        logits = rce_classifier.logits(x)
    assert torch.allclose(Detector(rce_classifier, "confidence").fit(None).score(x), -confidence(logits), atol=1e-6)
    assert torch.allclose(score_features(create("non_me"), rce_classifier, bank.features), -non_me(logits),
                          atol=1e-5)
    train = extract(rce_classifier, synthetic.train_images(), synthetic.y_train)
    kd = KernelDensity.fit(train.features, train.labels, 4, per_class=50, sigma2=0.1 / 0.26)
    want = -kd.log_kd(bank.features, logits.argmax(1))  # kernel of the PREDICTED class (protocol §4.3)
    metric = KDensity(per_class=50).fit(FitData(train, 4, "rce"))  # the paper's σ² for RCE, the same seeded kernel
    assert metric.density.sigma2 == pytest.approx(0.1 / 0.26)
    assert torch.allclose(Detector(rce_classifier, "kd", per_class=50).fit(train).score(x), want, atol=1e-4)
    assert torch.allclose(score_features(metric, rce_classifier, bank.features, batch_size=5), want, atol=1e-4)
    # the scores are differentiable in the features (adaptive attacks back-propagate through them)
    z = bank.features[:4].clone().requires_grad_(True)
    metric.score(View(z, rce_classifier.logits_from_features(z))).sum().backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all()) and float(z.grad.abs().sum()) > 0


def test_errors(ce_classifier):
    with pytest.raises(ConfigError):
        create("entropy")
    with pytest.raises(ConfigError):
        create("confidence", per_class=10)  # a setting the metric does not have
    with pytest.raises(NotFittedError):
        score_features(create("kd"), ce_classifier, torch.zeros(2, 64))
    with pytest.raises(ConfigError):
        KDensity(sigma2="wide")
    with pytest.raises(InputError):
        non_me(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(InputError):
        confidence(torch.zeros(3))
    with pytest.raises(InputError):
        non_me(torch.zeros(2, 1))
