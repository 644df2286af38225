"""pgd_defended: targeted PGD on CE of the defended K+1 model (Carlini & Wagner 2017). Its success is the detector's
verdict counted by the one rule, its targets are real classes other than the label, and bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from rcedetect import attacks
from rcedetect.attacks.pgd_defended import target_classes
from rcedetect.core.errors import ConfigError
from rcedetect.detectors import NOT_SURE, Detector


@pytest.fixture(scope="module")
def setting(ce_classifier, synthetic):
    clf = ce_classifier.eval()
    det = Detector(clf, "non_me").fit(None).calibrate(synthetic.test_images()[-80:], fpr=0.05)
    return clf, det, synthetic.test_images()[:32], synthetic.y_test[:32]


def test_success_is_the_detectors_verdict_by_the_rule(setting):
    clf, det, x, y = setting
    term = det.scorer.term(det.threshold)
    res = attacks.create("pgd_defended", eps=0.2, detector=term, steps=10, targets=2)(clf, x, y)
    v = det.predict(res.x_adv)
    pred = clf.predict(x)
    hand = (v != pred) & (v != NOT_SURE)  # against the clean prediction, as every attack of this package
    assert torch.equal(res.success, hand) and 0 < int(hand.sum()) < len(x)
    assert (res.x_adv - x).abs().amax() <= 0.2 + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    target = res.target  # the target that produced each x*
    assert bool((target[res.success] != pred[res.success].float()).all())
    again = attacks.create("pgd_defended", eps=0.2, detector=term, steps=10, targets=2)(clf, x, y)
    assert torch.equal(again.x_adv, res.x_adv)  # seeded


def test_more_targets_never_lose_an_image(setting):
    clf, det, x, y = setting
    term = det.scorer.term(det.threshold)
    one = attacks.create("pgd_defended", eps=0.2, detector=term, steps=10, targets=1)(clf, x, y)
    three = attacks.create("pgd_defended", eps=0.2, detector=term, steps=10, targets=3)(clf, x, y)
    assert bool((three.success | ~one.success).all())  # the first target's runs are the same; the best is kept
    assert int(three.success.sum()) > int(one.success.sum())


def test_targets_are_other_real_classes():
    label = torch.tensor([0, 1, 2, 3, 3])
    t = target_classes(label, 4, 3, seed=0)
    assert t.shape == (5, 3) and bool((t != label[:, None]).all()) and int(t.max()) < 4
    assert all(len(set(row.tolist())) == 3 for row in t)  # distinct targets per image
    assert torch.equal(t, target_classes(label, 4, 3, seed=0)) and not torch.equal(t, target_classes(label, 4, 3, 1))


def test_bad_settings(setting):
    clf, det, x, y = setting
    term = det.scorer.term(det.threshold)
    with pytest.raises(ConfigError, match="targets must be at most"):
        attacks.create("pgd_defended", eps=0.3, detector=term, targets=4)(clf, x[:2], y[:2])
    with pytest.raises(ConfigError, match="reject_scale"):
        attacks.create("pgd_defended", eps=0.3, detector=term, reject_scale=-1.0)
    with pytest.raises(ConfigError, match="needs detector"):
        attacks.create("pgd_defended", eps=0.3)
    assert attacks.create("pgd_defended", eps=0.1, detector=term, steps=40, targets=3).passes_per_image() == 363.0
