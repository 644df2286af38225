"""Targeted PGD on the defended K+1-class model: Carlini & Wagner's attack on a detector (2017, "Adversarial
examples are not easily detected: bypassing ten detection methods", the K+1-class construction) with the PGD steps
of Madry et al. 2018 (:mod:`.engine`).

Per image and target t (one of the K real classes other than the clean prediction; ``targets`` of them, drawn
from a seeded permutation), PGD descends the cross-entropy of the defended model's K+1 logits
(:func:`rcedetect.detectors.defended.defend`) toward t::

    loss = CE(G(x*), t),   G = (Z_1 … Z_K, max_j Z_j + s · (score(x*) − T))

The one loss pulls t up and pushes the reject logit down together, so it needs no λ schedule; an untargeted attack
on G is satisfied by the reject class, hence the targets. It fools images that :mod:`.pgd_detector` and
:mod:`.orthogonal_pgd` miss (REPRODUCE.md, "Third-party attacks on the defended model"). The runs are targets ×
starts; per image x* is chosen as in :mod:`.pgd_detector`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.settings import setting
from .base import AttackResult, register
from .engine import PGDAttack, passes
from .pgd_detector import AgainstDetector, begin, finish_adaptive, status_of


def target_classes(label: torch.Tensor, num_classes: int, targets: int, seed: int) -> torch.Tensor:
    """(N, targets): per image the first ``targets`` of a seeded random order of the classes other than its label."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.rand(len(label), num_classes - 1, generator=g).argsort(1) + 1  # offsets 1 … K-1, shuffled
    return (label[:, None].cpu() + order[:, :targets]) % num_classes


@register("pgd_defended")
@dataclass(frozen=True)
class PGDDefended(PGDAttack, AgainstDetector):
    """Targeted PGD on CE of the defended K+1 model (module docstring).

    Settings: those of :class:`~.engine.PGDAttack`, ``detector`` (a detector term, e.g. score − T), ``targets``
    (target classes per image, 1 … K−1), ``reject_scale`` (the slope s of the reject logit).
    Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*); ``target``: the target that produced x*.
    """

    targets: int = setting(1, lo=1)
    reject_scale: float = setting(1.0, lo=0, lo_open=True)

    def passes_per_image(self) -> float:  # per run: a forward+backward per step, a forward for the last iterate
        return (3.0 * self.steps + 1.0) * self.restarts * self.targets

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        from ..detectors.defended import defend

        x_in = x
        x, label, term = begin(self, classifier, x, y)
        k = classifier.num_classes
        if self.targets > k - 1:
            raise ConfigError(f"targets must be at most K - 1 = {k - 1} (the classes other than the label), "
                              f"got {self.targets}")
        model = defend(classifier, term, scale=self.reject_scale)
        chosen = target_classes(label, k, self.targets, self.seed).to(x.device)

        def measure(c, xa, idx):  # (CE toward each row's target, status) from one forward
            logits, margin = model.margin(xa)
            target = chosen[c.image[idx], c.option[idx]]
            loss = F.cross_entropy(model.assemble(logits, margin), target, reduction="none")
            return loss, status_of(logits, margin, c.label[idx], c.x[idx], xa, self.norm)

        def make(c):
            target = chosen[c.image, c.option].float()
            return (*passes(measure, c), lambda t: {"target": target})

        best = self.search(x, label, make, options=self.targets, tag="target")[self.steps]
        its = self.steps * self.restarts * self.targets
        return finish_adaptive(classifier, term, x_in, x, best.x, label, self.norm, its, **best.tags)
