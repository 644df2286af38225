"""Projected gradient descent (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks").

``restarts`` runs of ``steps`` steps of :mod:`.engine` (L∞ or L2, projection then clipping, α = 2.5·ε/steps by
default), from random points of the ε-ball or from x. ``loss="ce"`` ascends CE(effective logits, label);
``loss="margin"`` descends the classification margin Z_label − max_{j≠label} Z_j, the loss the adaptive attacks of
:mod:`.pgd_detector` and :mod:`.orthogonal_pgd` extend; a function ``loss(logits, label)`` of the effective logits
returning per-example losses is ascended (adversarial training passes its objective's loss,
:mod:`rcedetect.training.adversarial`). The label is the clean prediction (``label="pred"``, as in :mod:`.gradient`)
or the given y. Per image the first restart whose final x* is misclassified is kept; an image no restart fools
keeps the restart with the best final loss (``keep_best=True``: the first misclassified iterate of any step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.settings import setting
from .base import AttackResult, finish, predict, register
from .engine import PGDAttack, Verdict, passes
from .gradient import LABELS, prepare_labels

LOSSES = ("ce", "margin")


def class_margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Z_label − max_{j≠label} Z_j per example (< 0: misclassified)."""
    onehot = F.one_hot(label, logits.shape[1]).bool()
    own = logits.gather(1, label[:, None]).squeeze(1)
    return own - logits.masked_fill(onehot, -math.inf).amax(1)


def margin_loss(classifier, label: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-example classification margin of images (the loss ``loss="margin"`` descends)."""
    return lambda xa: class_margin(classifier.logits(xa), label)


@register("pgd")
@dataclass(frozen=True)
class PGD(PGDAttack):
    """PGD with random restarts (module docstring): the settings of :class:`~.engine.PGDAttack` (``keep_best`` off:
    the final iterates), ``label`` ("pred" or "true") and ``loss`` ("ce" ascended, "margin" descended, or a
    function of (logits, label) ascended)."""

    keep_best: bool = False
    label: str = setting("pred", choices=LABELS, hint=" (clean prediction or given y)")
    #: "ce", "margin", or a function (effective logits, label) -> per-example loss, ascended
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "ce"

    def __post_init__(self):
        super().__post_init__()
        if not callable(self.loss) and self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)} or a function (logits, label) -> "
                              f"per-example loss, got {self.loss!r}")

    def passes_per_image(self) -> float:
        return 3.0 * self.steps * self.restarts

    def loss_fn(self, classifier, label: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Per-example loss of images (CE of the label, or the classification margin)."""
        return lambda xa: self.loss_of(classifier.logits(xa), label)

    @property
    def direction(self) -> float:
        """+1: the loss is ascended (CE, a given function); −1: descended (the margin)."""
        return -1.0 if self.loss == "margin" else 1.0

    def loss_of(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if callable(self.loss):
            return self.loss(logits, label)
        if self.loss == "ce":
            return F.cross_entropy(logits, label, reduction="none")
        return class_margin(logits, label)

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, label = prepare_labels(classifier, x, y, self.label)

        def measure(c, xa, idx):  # (loss, verdict: misclassified; −d·loss ranks the rest)
            logits = classifier.logits(xa)
            loss = self.loss_of(logits, c.label[idx])
            return loss, Verdict(logits.detach().argmax(1) != c.label[idx], torch.zeros_like(loss.detach()),
                                 -self.direction * loss.detach())

        best = self.search(x, label, lambda c: passes(measure, c), direction=self.direction)[self.steps]
        pred_adv = predict(classifier, best.x)
        its = torch.full((len(x),), self.steps * self.restarts, dtype=torch.long, device=x.device)
        return finish(x_in, x, best.x, pred_adv != label, its, label=label, pred_adv=pred_adv)
