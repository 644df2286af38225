"""A targeted feature-space attack on K-density: pull the final hidden vector z into the target class's kernel.

K-density (Feinman et al. 2017; paper §3.3) accepts an input when its z lies near the kernel points of the
predicted class, so an adaptive attacker moves z itself there (the feature-space attacks of Sabour et al. 2016,
"Adversarial manipulation of deep representations", used against detectors by Carlini & Wagner 2017,
"Adversarial examples are not easily detected"). Per example, with t a seeded random wrong label (as C&W's
:func:`.carlini_wagner.random_targets`)::

    loss = mean over the k nearest valid kernel points z_i of class t of ‖z(x*) − z_i‖²

descended with the PGD steps of :mod:`.pgd` (L∞ or L2, in the ε-ball, clipped to [0, 1]). The detector term must
carry a ``.density`` (a :class:`~rcedetect.detectors.density.KernelDensity`, as
:class:`~rcedetect.detectors.kd.KDTerm`); this is checked when the attack runs (runners build attacks with a
placeholder term first). Success = predicted as t AND accepted by the term (margin at the predicted class ≤ 0).
Per image the best iterate over the steps is returned: a success with the smallest feature distance, else the
smallest feature distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError
from ..detectors.base import observe
from .base import AttackResult, check_common, register
from .carlini_wagner import random_targets
from .gradient import check_steps, finish
from .pgd import check_norm, check_step_size, per_example, pgd_step, resolve_step_size, starts
from .pgd_detector import begin, check_term, detector_margin


def kernel_of(term):
    """The term's KernelDensity, or ConfigError."""
    from ..detectors.density import KernelDensity

    density = getattr(term, "density", None)
    if not isinstance(density, KernelDensity):
        raise ConfigError("feature_pgd needs a K-density detector term (one with a .density KernelDensity, e.g. "
                          "KDTerm or Detector(classifier, 'kd').attack_term())")
    return density


def feature_distance(z: torch.Tensor, density, target: torch.Tensor, k: int) -> torch.Tensor:
    """Mean squared distance from each z[n] to the ``k`` nearest valid kernel points of class ``target[n]``
    (all of them when the class has fewer); differentiable in z."""
    kernels = density.kernels.to(z.device, z.dtype)[target]  # (N, K, D)
    counts = density.counts.to(z.device)[target]  # (N,)
    d2 = (z[:, None, :] - kernels).pow(2).sum(-1)
    valid = torch.arange(kernels.shape[1], device=z.device)[None, :] < counts[:, None]
    nearest = d2.masked_fill(~valid, math.inf).sort(dim=1).values[:, :k]
    use = torch.arange(nearest.shape[1], device=z.device)[None, :] < counts.clamp(max=k)[:, None]
    return nearest.masked_fill(~use, 0.0).sum(1) / use.sum(1)


@register("feature_pgd")
@dataclass(frozen=True)
class FeaturePGD:
    """PGD pulling z toward the ``k`` nearest kernel points of a seeded random target class (module docstring).

    Fields: ``eps``, ``detector`` (a K-density term with ``.density``), ``norm`` ("linf" or "l2"), ``steps``,
    ``step_size`` (None = 2.5·eps/steps), ``k``, ``random_start``, ``seed`` (target draw and start).
    Extras: ``accepted``, ``target_reached``, ``feature_distance`` (at x*); ``AttackResult.target``.
    """

    eps: float
    detector: Any = field(repr=False, compare=False)
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    k: int = 10
    random_start: bool = True
    seed: int = 0

    def __post_init__(self):
        check_common(self)
        check_term(self.detector)
        check_norm(self.norm)
        check_steps(self.steps)
        check_steps(self.k, "k")
        check_step_size(self.step_size)

    def passes_per_image(self) -> float:
        return 3.0 * self.steps + 1.0  # a forward+backward per step (its forward judges the iterate), one forward

    def _measure(self, classifier, term, density, xa, target):
        """(feature distance, success) at images ``xa``; the distance keeps its graph when xa has one."""
        view = observe(classifier, xa, term)
        dist = feature_distance(view.z, density, target, self.k)
        with torch.no_grad():
            ok = (view.logits.argmax(1) == target) & (detector_margin(term, view) <= 0)
        return dist, ok

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, pred, term = begin(self, classifier, x, y)
        density = kernel_of(term)
        target = random_targets(pred, classifier.num_classes, self.seed)
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        x_adv = next(starts(x, self.eps, self.norm, 1, self.seed, self.random_start)).detach()
        best_x, best_ok = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_d = torch.full((len(x),), math.inf, device=x.device)
        for step in range(self.steps + 1):
            last = step == self.steps  # the last iterate is only judged: a forward pass without a graph
            xa = x_adv.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                dist, ok = self._measure(classifier, term, density, xa, target)
                grad = None if last else torch.autograd.grad(dist.sum(), xa)[0]
            d = dist.detach()
            take = (ok & (~best_ok | (d < best_d))) | (~ok & ~best_ok & (d < best_d))
            best_x = torch.where(per_example(take, x), xa.detach(), best_x)
            best_d, best_ok = torch.where(take, d, best_d), best_ok | (take & ok)
            if grad is None:
                break
            x_adv = pgd_step(x, xa.detach(), grad, eps=self.eps, norm=self.norm, step_size=alpha, direction=-1.0)
        return self._result(classifier, term, density, x_in, x, best_x, target)

    @torch.no_grad()
    def _result(self, classifier, term, density, x_in, x, x_adv, target) -> AttackResult:
        view = observe(classifier, x_adv, term)
        z, logits = view.z, view.logits
        accepted = detector_margin(term, view) <= 0
        reached = logits.argmax(1) == target
        its = torch.full((len(x),), self.steps, dtype=torch.long, device=x.device)
        return finish(x_in, x, x_adv, reached & accepted, its, target=target, accepted=accepted,
                      target_reached=reached, feature_distance=feature_distance(z, density, target, self.k))
