"""Cross-check of our C&W-L2 against an independent implementation: foolbox 3's ``L2CarliniWagnerAttack``.

Both run untargeted (foolbox's targeted mode needs a criterion object) with the same budget: the same binary
search steps and iterations per step, Adam step size 0.01, κ = 0, c₀ = 1, abort-early. What is the same and
what differs (read from foolbox 3.3's source):

- the loss: both minimise the SQUARED L2 norm ‖x* − x‖²₂ + c·max(Z_y − max_{j≠y} Z_j + κ, 0) in the same tanh
  box, w₀ = atanh((2x − 1)·0.999999), and both re-create Adam from w₀ at every search step; foolbox measures
  the L2 term from tanh(w₀) (x after the tanh round trip, ≈1e-6 away), we from x;
- the search on c: foolbox sets upper = c on success and lower = c on failure, then multiplies c by 10 while
  upper is still infinite, else bisects: the same sequence of constants as protocol 6.1's rule (c ≥ lower and
  c ≤ upper always hold, so its "= c" equals our min/max, and "upper is infinite" equals our "upper ≥ 1e9");
  foolbox also repeats the last step at the upper bound when binary_search_steps ≥ 10 (not used here);
- abort-early: foolbox checks the loss summed over the whole batch (one slow example keeps all going), we
  check each example alone; with the same budget this only lets us stop sooner, never changes a success;
- failures: foolbox returns a zero image, we return the clean input (compared only where both succeed).

So the minimal distortions must agree closely: the mean within 5 %, most examples within 2 %.
"""

from __future__ import annotations

import pytest
import torch

from rcedetect.attacks import create, l2_distortion

fb = pytest.importorskip("foolbox")

STEPS, ITERATIONS = 3, 80


def test_untargeted_minimal_distortion_matches_foolbox(ce_classifier, test_batch):
    x = test_batch[0][:16]
    y = ce_classifier.predict(x)
    ours = create("cw", mode="untargeted", binary_search_steps=STEPS, max_iterations=ITERATIONS)(ce_classifier, x, y)

    model = fb.PyTorchModel(ce_classifier, bounds=(0, 1))  # Classifier.forward = effective logits
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=STEPS, steps=ITERATIONS, stepsize=0.01,
                                              confidence=0, initial_const=1, abort_early=True)
    raw, _, theirs_ok = attack(model, x, fb.criteria.Misclassification(y), epsilons=None)
    theirs = l2_distortion(x, raw)
    theirs_ok = theirs_ok & (raw != 0).flatten(1).any(1)  # foolbox's "nothing found" is a zero image

    both = ours.success & theirs_ok
    assert both.sum() >= 12
    assert ours.success.sum() >= theirs_ok.sum()
    mean_ours, mean_theirs = float(ours.l2[both].mean()), float(theirs[both].mean())
    assert abs(mean_ours - mean_theirs) <= 0.05 * mean_theirs, (mean_ours, mean_theirs)
    # the same optimisation: per example within 2 % for most images
    rel = ((ours.l2[both] - theirs[both]).abs() / theirs[both])
    assert float(rel.median()) < 0.02, rel
    assert not torch.equal(ours.l2[both], torch.zeros_like(ours.l2[both]))
