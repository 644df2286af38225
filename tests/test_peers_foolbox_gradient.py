"""Peer check: our FGSM and BIM against foolbox 3's LinfFastGradientAttack / LinfBasicIterativeAttack.

Same model, same images, the true labels (``label="true"``), no random start, BIM with abs_stepsize = ε/10 and
10 steps: the adversarial images must agree to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from rcedetect.attacks.gradient import BIM, FGSM

fb = pytest.importorskip("foolbox")
pytestmark = pytest.mark.peers


@pytest.mark.parametrize("objective", ["ce", "rce"])
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_fgsm_and_bim_match_foolbox(objective, eps, ce_classifier, rce_classifier, test_batch):
    clf = ce_classifier if objective == "ce" else rce_classifier
    x, y = test_batch[0][:32], test_batch[1][:32]
    fmodel = fb.PyTorchModel(clf, bounds=(0.0, 1.0))  # Classifier.forward = the effective logits

    _, fb_fgsm, fb_fgsm_ok = fb.attacks.LinfFastGradientAttack(random_start=False)(fmodel, x, y, epsilons=eps)
    ours = FGSM(eps, label="true")(clf, x, y)
    torch.testing.assert_close(ours.x_adv, fb_fgsm, atol=1e-6, rtol=0)
    assert torch.equal(ours.success, fb_fgsm_ok)

    bim = fb.attacks.LinfBasicIterativeAttack(abs_stepsize=eps / 10, steps=10, random_start=False)
    _, fb_bim, fb_bim_ok = bim(fmodel, x, y, epsilons=eps)
    ours = BIM(eps, steps=10, label="true")(clf, x, y)
    torch.testing.assert_close(ours.x_adv, fb_bim, atol=1e-6, rtol=0)
    assert torch.equal(ours.success, fb_bim_ok)
    assert float((fb_bim - x).abs().max()) > 0.5 * eps  # the comparison is not vacuous
