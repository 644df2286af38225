"""The C&W family's per-example criteria (protocol §6.1): targets, the logit hinge, and its float32 check.

Kept apart from :mod:`.carlini_wagner` (the optimisation) so that both the loop and anything that audits its
results use one definition of "reached".
"""

from __future__ import annotations

import math

import torch

from .base import seeded_generator


def random_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A seeded target per example, uniform over the ``num_classes − 1`` labels ≠ y (protocol §6.1)."""
    g = seeded_generator(seed)
    offset = torch.randint(1, num_classes, (len(y),), generator=g)
    return ((y.cpu() + offset) % num_classes).to(y.device)


def margin_reached(logits: torch.Tensor, label: torch.Tensor, kappa: float, targeted: bool):
    """(hinge f1 ≥ 0, success of the logit criterion) for each example (protocol §6.1)."""
    onehot = torch.nn.functional.one_hot(label, logits.shape[1]).bool()
    own = logits.gather(1, label[:, None]).squeeze(1)
    best_other = logits.masked_fill(onehot, -math.inf).amax(1)
    if targeted:
        f1 = (best_other - own + kappa).clamp_min(0)
        reached = (logits - kappa * onehot).argmax(1) == label
    else:
        f1 = (own - best_other + kappa).clamp_min(0)
        reached = (logits + kappa * onehot).argmax(1) != label
    return f1, reached


@torch.no_grad()
def unconfirmed(classifier, images: torch.Tensor, label: torch.Tensor, kappa: float, targeted: bool,
                which: torch.Tensor) -> torch.Tensor:
    """Indices among ``which`` whose image does NOT meet the logit criterion in a float32 forward pass: the
    successes that a bf16 pass reported and float32 does not confirm (:mod:`.precision`)."""
    idx = which.nonzero()[:, 0]
    if len(idx) == 0:
        return idx
    _, reached = margin_reached(classifier.logits(images[idx]).float(), label[idx], kappa, targeted)
    return idx[~reached]
