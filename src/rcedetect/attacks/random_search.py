"""A gradient-free random search on the objective of :mod:`.pgd_detector`: the sanity check of adaptive evaluations
that a gradient-free attack does not beat the gradient attacks (Carlini et al. 2019, "On evaluating adversarial
robustness"; Tramèr, Carlini, Brendel & Mądry, NeurIPS 2020, "On adaptive attacks to adversarial example
defenses"). The search is a simplified Square-Attack-style vertex search (Andriushchenko et al. 2020).

L∞ only. Per example, with y the clean prediction and Z the effective logits::

    objective = max(0, Z_y − max_{j≠y} Z_j) + λ · max(0, margin_det(z, Z, argmax Z))

The perturbation starts at a random vertex ε·s of the ε-ball (s ∈ {−1, +1}^d, x* = clip(x + ε·s, 0, 1)); each
iteration flips the sign of a random ``p`` fraction of the coordinates of s (at least one) and keeps the
proposal only when the objective strictly decreases, so the returned objective is never above the start's.
Forward passes only (no autograd); every draw comes from a CPU generator seeded by ``seed``. The loop stops
early once every example has reached objective 0. Success = misclassified AND accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.settings import setting
from ..detectors.base import observe
from .base import AttackResult, register, seeded_generator
from .pgd import class_margin
from .pgd_detector import AgainstDetector, begin, detector_margin, finish_adaptive


@torch.no_grad()
def objective(classifier, term, x_adv: torch.Tensor, label: torch.Tensor, lam: float) -> torch.Tensor:
    """max(0, class margin) + λ · max(0, detector margin) per example."""
    view = observe(classifier, x_adv, term)
    return class_margin(view.logits, label).clamp_min(0) + lam * detector_margin(term, view).clamp_min(0)


def flip(signs: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``signs`` (N, d) with ``count`` random coordinates of each row negated (drawn on the CPU)."""
    idx = torch.rand(signs.shape, generator=generator).argsort(1)[:, :count].to(signs.device)
    return signs.scatter(1, idx, -signs.gather(1, idx))


@register("random_search_detector")
@dataclass(frozen=True)
class RandomSearchDetector(AgainstDetector):
    """Random sign-flip search on the L∞ ε-ball's vertices (module docstring).

    Fields: ``eps``, ``detector`` (a detector term), ``iterations``, ``lam`` (λ ≥ 0), ``p`` (fraction of the
    coordinates flipped per proposal, in (0, 1]), ``seed``. Extras: ``accepted``, ``misclassified``,
    ``detector_margin``, ``objective`` (at x*) and ``start_objective`` (at the random start).
    """

    iterations: int = setting(200, lo=1)
    lam: float = setting(10.0, lo=0)
    p: float = setting(0.05, lo=0, hi=1, lo_open=True, hint=" (the fraction of coordinates flipped)")
    seed: int = 0

    def passes_per_image(self) -> float:
        return 1.0 * (self.iterations + 1)  # forward passes only

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, label, term = begin(self, classifier, x, y)
        n, d = x.flatten(1).shape
        count = max(1, round(self.p * d))
        g = seeded_generator(self.seed)
        signs = (2 * torch.randint(0, 2, (n, d), generator=g) - 1).to(x.device, x.dtype)

        def image(s: torch.Tensor) -> torch.Tensor:
            return (x + self.eps * s.view_as(x)).clamp(0.0, 1.0)

        obj = objective(classifier, term, image(signs), label, self.lam)
        start_obj, done = obj.clone(), 0
        while done < self.iterations and n > 0 and not bool((obj <= 0).all()):
            done += 1
            proposal = flip(signs, count, g)
            obj_p = objective(classifier, term, image(proposal), label, self.lam)
            better = obj_p < obj
            signs = torch.where(better[:, None], proposal, signs)
            obj = torch.where(better, obj_p, obj)
        return finish_adaptive(classifier, term, x_in, x, image(signs), label, "linf", done, objective=obj,
                               start_objective=start_obj)
