"""Projected gradient descent (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks").

``restarts`` runs of ``steps`` steps each, from a random point of the ε-ball (or from x); each step is::

    L∞:  x* ← clip(Π_ε(x* + d · α · sign ∇ₓ loss))
    L2:  x* ← clip(Π_ε(x* + d · α · ∇ₓ loss / ‖∇ₓ loss‖₂))

Π_ε projects onto the ball around x (per example, the image flattened), then the image is clipped to [0, 1]
(the order of :mod:`.gradient` and foolbox). ε is on the [0, 1] scale for both norms (for L2 the plain
‖x* − x‖₂ of the flattened image, not :attr:`AttackResult.l2`'s [0, 255]/√d scale); α defaults to 2.5·ε/steps
(Madry et al.). The restarts run as rows of one batch of at most ``max_batch`` images (:mod:`.variants`).
``loss="ce"`` ascends CE(effective logits, label) (d = +1); ``loss="margin"`` descends the
classification margin Z_label − max_{j≠label} Z_j (d = −1), the loss the adaptive attacks of
:mod:`.pgd_detector` and :mod:`.orthogonal_pgd` extend; a function ``loss(logits, label)`` of the effective logits
returning per-example losses is ascended (d = +1): adversarial training passes its objective's loss, e.g. RCE's
(:mod:`rcedetect.adversarial_training`). The label is the clean prediction (``label="pred"``, as in
:mod:`.gradient`) or the given y. Per image the first restart whose final x* is misclassified is kept; an image
no restart fools keeps the restart with the best final loss.

The reusable pieces live here as functions: :func:`pgd_step`, :func:`project`, :func:`random_start`,
:func:`class_margin`, :func:`input_gradient`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from .base import AttackResult, check_common, register, seeded_generator
from .gradient import check_label, check_steps, finish, predict, prepare_labels
from .variants import MAX_BATCH, check_max_batch, chunks

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
#: guards divisions by gradient / perturbation norms
TINY = 1e-12


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def check_step_size(step_size: float | None) -> float | None:
    if step_size is None:
        return None
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) \
            or step_size < 0:
        raise ConfigError(f"step_size must be a number >= 0 or None (2.5·eps/steps), got {step_size!r}")
    return float(step_size)


def resolve_step_size(step_size: float | None, eps: float, steps: int) -> float:
    """The step α: ``step_size`` or Madry et al.'s 2.5·ε/steps."""
    return 2.5 * eps / steps if step_size is None else float(step_size)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) → (N, 1, 1, ...) to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the flattened tensor."""
    return t.flatten(1).norm(dim=1)


def distortion(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ‖x* − x‖ in the attack's norm, on the [0, 1] scale."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x + Π_ε(x* − x): the perturbation clamped (L∞) or rescaled onto the L2 ball (per example)."""
    delta = x_adv - x
    if norm == "linf":
        return x + torch.clamp(delta, -eps, eps)
    factor = (eps / flat_norm(delta).clamp_min(TINY)).clamp(max=1.0)
    return x + delta * per_example(factor, delta)


def pgd_step(x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, *, eps: float, norm: str,
             step_size: float, direction: float) -> torch.Tensor:
    """One PGD step along ``direction`` · ``grad`` (+1 ascends, −1 descends), projected, then clipped to [0, 1]."""
    if norm == "linf":
        step = grad.sign()
    else:
        step = grad / per_example(flat_norm(grad).clamp_min(TINY), grad)
    x_new = x_adv + direction * (step_size * step)
    return project(x, x_new, eps, norm).clamp(0.0, 1.0).detach()


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniform random point of the ε-ball around x (drawn on the CPU from ``generator``), clipped to [0, 1]."""
    shape = x.shape
    if norm == "linf":
        delta = (2.0 * torch.rand(shape, generator=generator) - 1.0) * eps
    else:
        direction = torch.randn(shape, generator=generator)
        direction = direction / per_example(flat_norm(direction).clamp_min(TINY), direction)
        d = x[0].numel() if len(x) else 1
        radius = eps * torch.rand(len(x), generator=generator).pow(1.0 / d)
        delta = direction * per_example(radius, direction)
    return (x + delta.to(x.device, x.dtype)).clamp(0.0, 1.0)


def class_margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Z_label − max_{j≠label} Z_j per example (< 0: misclassified)."""
    onehot = F.one_hot(label, logits.shape[1]).bool()
    own = logits.gather(1, label[:, None]).squeeze(1)
    return own - logits.masked_fill(onehot, -math.inf).amax(1)


def margin_loss(classifier, label: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-example classification margin of images (the loss ``loss="margin"`` descends)."""
    return lambda xa: class_margin(classifier.logits(xa), label)


def input_gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor], x_adv: torch.Tensor) -> torch.Tensor:
    """∇ₓ Σ_n loss_fn(x*)_n: summed, so each example's gradient ignores the rest of the batch."""
    xa = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(xa).sum(), xa)
    return grad


def run_pgd(x: torch.Tensor, start: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, eps: float,
            norm: str, steps: int, step_size: float, direction: float,
            on_iterate: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """``steps`` PGD steps on ``loss_fn`` (per-example losses) from ``start``; the final iterate.
    ``on_iterate(x_adv)`` sees every iterate after a step (to keep the best one, not just the last)."""
    x_adv = start.detach()
    for _ in range(steps):
        x_adv = pgd_step(x, x_adv, input_gradient(loss_fn, x_adv), eps=eps, norm=norm, step_size=step_size,
                         direction=direction)
        if on_iterate is not None:
            on_iterate(x_adv)
    return x_adv


def starts(x: torch.Tensor, eps: float, norm: str, restarts: int, seed: int, random: bool):
    """The start of each restart: random points of the ε-ball, drawn in order from one generator seeded by
    ``seed`` (so restart r starts at the same point in every attack of this package), or x itself."""
    g = seeded_generator(seed)
    for _ in range(restarts):
        yield random_start(x, eps, norm, g) if random else x


@register("pgd")
@dataclass(frozen=True)
class PGD:
    """PGD with random restarts (Madry et al. 2018; module docstring): ``eps``, ``norm`` ("linf" or "l2"),
    ``steps``, ``step_size`` (None = 2.5·eps/steps), ``random_start``, ``restarts``, ``seed``, ``label``
    ("pred" or "true"), ``loss`` ("ce" ascended, "margin" descended, or a function of (logits, label) ascended)
    and ``max_batch`` (images per pass)."""

    eps: float
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    seed: int = 0
    label: str = "pred"
    #: "ce", "margin", or a function (effective logits, label) -> per-example loss, ascended
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "ce"
    max_batch: int = MAX_BATCH

    def __post_init__(self):
        check_common(self)
        check_norm(self.norm)
        check_max_batch(self.max_batch)
        check_steps(self.steps, "steps")
        check_steps(self.restarts, "restarts")
        check_step_size(self.step_size)
        check_label(self.label)
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
        direction = self.direction
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        best = x.clone()
        best_loss = torch.full((len(x),), math.inf, device=x.device)  # −direction · loss: lower is better
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        run_starts = list(starts(x, self.eps, self.norm, self.restarts, self.seed, self.random_start))
        for rows in chunks(len(x), len(run_starts), self.max_batch):  # the restarts as rows of one batch
            labels = rows.images(label)
            x_adv = run_pgd(rows.images(x), rows.gather(run_starts.__getitem__), self.loss_fn(classifier, labels),
                            eps=self.eps, norm=self.norm, steps=self.steps, step_size=alpha, direction=direction)
            with torch.no_grad():
                logits = classifier.logits(x_adv)
                fooled_rows, score_rows = logits.argmax(1) != labels, -direction * self.loss_of(logits, labels)
            for _, r, img in rows.segments():  # restart by restart, in order
                fooled, score = fooled_rows[r], score_rows[r]
                take = ~found[img] & (fooled | (score < best_loss[img]))
                best[img] = torch.where(per_example(take, x_adv[r]), x_adv[r], best[img])
                best_loss[img] = torch.where(take, score, best_loss[img])
                found[img] |= fooled
        pred_adv = predict(classifier, best)
        its = torch.full((len(x),), self.steps * self.restarts, dtype=torch.long, device=x.device)
        return finish(x_in, x, best, pred_adv != label, its, label=label, pred_adv=pred_adv)
