"""A targeted feature-space attack on K-density: pull the final hidden vector z into the target class's kernel.

K-density (Feinman et al. 2017; paper §3.3) accepts an input when its z lies near the kernel points of the
predicted class, so an adaptive attacker moves z itself there (the feature-space attacks of Sabour et al. 2016,
"Adversarial manipulation of deep representations", used against detectors by Carlini & Wagner 2017,
"Adversarial examples are not easily detected"). Per example, with t a seeded random wrong label (as C&W's
:func:`.carlini_wagner.random_targets`)::

    loss = mean over the k nearest valid kernel points z_i of class t of ‖z(x*) − z_i‖²

descended with the steps of :mod:`.engine`. The detector term must carry a ``.density`` (a
:class:`~rcedetect.detectors.density.KernelDensity`, as :class:`~rcedetect.detectors.kd.KDTerm`), checked when the
attack runs (runners build attacks with a placeholder term first). Success = predicted as t AND accepted by the
term; per image x* is a success with the smallest feature distance, else the smallest feature distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError
from ..core.settings import setting
from ..detectors.base import observe
from .base import AttackResult, finish, register
from .cw_margins import random_targets
from .engine import PGDAttack, Verdict, passes
from .pgd_detector import AgainstDetector, begin, detector_margin


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
class FeaturePGD(PGDAttack, AgainstDetector):
    """PGD pulling z toward the ``k`` nearest kernel points of a seeded random target class (module docstring).

    Settings: those of :class:`~.engine.PGDAttack`, ``detector`` (a K-density term with ``.density``), ``k``;
    ``seed`` draws the targets and the starts. Extras: ``accepted``, ``target_reached``, ``feature_distance`` (at
    x*); ``AttackResult.target``.
    """

    k: int = setting(10, lo=1)

    def passes_per_image(self) -> float:  # per run: a forward+backward per step, a forward for the last iterate
        return (3.0 * self.steps + 1.0) * self.restarts

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, pred, term = begin(self, classifier, x, y)
        density = kernel_of(term)
        target = random_targets(pred, classifier.num_classes, self.seed)

        def measure(c, xa, idx):
            """(feature distance, verdict) at images ``xa``; the distance keeps its graph when xa has one."""
            t = target[c.image[idx]]
            view = observe(classifier, xa, term)
            dist = feature_distance(view.z, density, t, self.k)
            with torch.no_grad():
                ok = (view.logits.argmax(1) == t) & (detector_margin(term, view) <= 0)
            return dist, Verdict(ok, dist.detach(), dist.detach())

        best = self.search(x, pred, lambda c: passes(measure, c))[self.steps]
        return self._result(classifier, term, density, x_in, x, best.x, target)

    @torch.no_grad()
    def _result(self, classifier, term, density, x_in, x, x_adv, target) -> AttackResult:
        view = observe(classifier, x_adv, term)
        z, logits = view.z, view.logits
        accepted = detector_margin(term, view) <= 0
        reached = logits.argmax(1) == target
        its = torch.full((len(x),), self.steps * self.restarts, dtype=torch.long, device=x.device)
        return finish(x_in, x, x_adv, reached & accepted, its, target=target, accepted=accepted,
                      target_reached=reached, feature_distance=feature_distance(z, density, target, self.k))
