"""Selective and orthogonal PGD (Bryniarski, Hingun, Pachuca, Wang & Carlini, ICLR 2022, "Evading adversarial
example detection defenses with orthogonal projected gradient descent").

Two losses per example, both descended: the classification margin f = Z_y − max_{j≠y} Z_j (y = the clean
prediction, Z the effective logits) and the detector margin g = ``detector.margin(view, argmax Z)`` (> 0 where
the detector rejects x*). Instead of one weighted sum (:mod:`.pgd_detector`) each step follows one of them:

- ``selective``: ∇f while x* is still classified as y, else ∇g;
- ``orthogonal``: ∇f projected onto the orthogonal complement of ∇g while x* is still classified as y (so the
  step does not change the detector's score to first order), else ∇g projected orthogonally to ∇f (so the step
  keeps the classification) — :func:`orthogonal_component`, per example on the flattened gradients.

Steps, projection and clipping are those of :mod:`.pgd` (L∞ sign steps or L2 normalised steps, α = 2.5·ε/steps
by default). Per image the best iterate over all steps of all restarts is returned: misclassified AND accepted
with the smallest distortion, else the one with the smallest max(0, f) + max(0, g) (the rule of
:mod:`.pgd_detector`; the original code keeps the misclassified iterate with the lowest detector score). Two presets
of one class: ``selective_pgd`` and ``orthogonal_pgd``.

Cost: each step is one forward pass (which also judges the iterate it starts from) and, for ``orthogonal``, two
backward passes (∇f and ∇g); ``selective`` needs one, of where(x* misclassified, g, f), whose gradient per image
is the one it follows. The restarts run as rows of one batch of at most ``max_batch`` images (:mod:`.variants`;
the same images as one restart after the other, up to the float rounding of a larger batch).

Limits: with L∞ the sign of the projected gradient is no longer orthogonal (small components become full
steps); and against a score tied to the classification itself (confidence, non-ME) a path of constant score to
the class boundary may not exist (the confidence there is ≤ 1/2), so ``orthogonal`` can stall where
``selective`` or :mod:`.pgd_detector` succeed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError
from ..detectors.base import observe
from .base import AttackResult, check_common, register
from .gradient import check_steps
from .pgd import (
    TINY,
    check_norm,
    check_step_size,
    class_margin,
    per_example,
    pgd_step,
    resolve_step_size,
    starts,
)
from .pgd_detector import Best, begin, check_term, detector_margin, evaluate, finish_adaptive, status_of
from .variants import MAX_BATCH, check_max_batch, chunks, merge

MODES = ("selective", "orthogonal")


def orthogonal_component(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """g − (⟨g, h⟩/‖h‖²)·h per example (flattened): the part of g orthogonal to h = ``other``; g where h = 0."""
    gf, hf = g.flatten(1), other.flatten(1)
    hh = (hf * hf).sum(1)
    coef = torch.where(hh > TINY**2, (gf * hf).sum(1) / hh.clamp_min(TINY**2), torch.zeros_like(hh))
    return g - per_example(coef, g) * other


def _grad(out: torch.Tensor, xa: torch.Tensor, retain: bool) -> torch.Tensor:
    """∇ₓ Σ out; zeros where ``out`` does not depend on x (a constant term, an empty batch)."""
    if not out.requires_grad:
        return torch.zeros_like(xa)
    (grad,) = torch.autograd.grad(out.sum(), xa, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(xa) if grad is None else grad


@register("selective_pgd", mode="selective")
@register("orthogonal_pgd", mode="orthogonal")
@dataclass(frozen=True)
class OrthogonalPGD:
    """Selective / orthogonal PGD against a classifier and a detector term (module docstring).

    Fields: ``eps``, ``detector`` (a detector term), ``mode`` ("selective" or "orthogonal"), ``norm`` ("linf" or
    "l2"), ``steps``, ``step_size`` (None = 2.5·eps/steps), ``restarts``, ``random_start``, ``seed``, ``max_batch``
    (images per pass).
    Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*), ``step`` (the step that produced x*).
    """

    eps: float
    detector: Any = field(repr=False, compare=False)
    mode: str = "orthogonal"
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    seed: int = 0
    max_batch: int = MAX_BATCH

    def __post_init__(self):
        check_common(self)
        check_term(self.detector)
        check_max_batch(self.max_batch)
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_norm(self.norm)
        check_steps(self.steps)
        check_steps(self.restarts, "restarts")
        check_step_size(self.step_size)

    def passes_per_image(self) -> float:
        # per step one forward and two backward passes (selective: one, of the loss each image follows); one
        # forward for the last iterate
        return ((3.0 if self.mode == "selective" else 5.0) * self.steps + 1.0) * self.restarts

    def direction(self, g_cls: torch.Tensor, g_det: torch.Tensor, fooled: torch.Tensor) -> torch.Tensor:
        """The gradient to descend: the classifier's until x* is misclassified, then the detector's."""
        if self.mode == "orthogonal":
            g_cls, g_det = orthogonal_component(g_cls, g_det), orthogonal_component(g_det, g_cls)
        return torch.where(per_example(fooled, g_cls), g_det, g_cls)

    def _run(self, classifier, term, x, start, label, alpha, best: Best) -> None:
        x_adv = start.detach()
        for step in range(self.steps):
            xa = x_adv.requires_grad_(True)
            with torch.enable_grad():
                view = observe(classifier, xa, term)
                logits = view.logits
                f = class_margin(logits, label)
                g = detector_margin(term, view)
                st = status_of(logits, g, label, x, xa, self.norm)
                if self.mode == "selective":  # one backward pass: each image's gradient of the loss it follows
                    grad = _grad(torch.where(st.misclassified, g, f), xa, retain=False)
                else:
                    g_cls, g_det = _grad(f, xa, retain=True), _grad(g, xa, retain=False)
                    grad = self.direction(g_cls, g_det, st.misclassified)
            best.update(xa, st, step=float(step))
            x_adv = pgd_step(x, xa.detach(), grad, eps=self.eps, norm=self.norm, step_size=alpha, direction=-1.0)
        best.update(x_adv, evaluate(classifier, term, x, x_adv, label, self.norm), step=float(self.steps))

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, label, term = begin(self, classifier, x, y)
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        best = Best(x)
        best.tags["step"] = torch.full((len(x),), math.nan, device=x.device)
        run_starts = list(starts(x, self.eps, self.norm, self.restarts, self.seed, self.random_start))
        for rows in chunks(len(x), len(run_starts), self.max_batch):  # the restarts as rows of one batch
            part = Best(rows.images(x))
            self._run(classifier, term, rows.images(x), rows.gather(run_starts.__getitem__), rows.images(label),
                      alpha, part)
            merge(best, part, rows)
        return finish_adaptive(classifier, term, x_in, x, best.x, label, self.norm, self.steps * self.restarts,
                               **best.tags)
