"""Selective and orthogonal PGD (Bryniarski, Hingun, Pachuca, Wang & Carlini, ICLR 2022, "Evading adversarial
example detection defenses with orthogonal projected gradient descent").

Two losses per example, both descended with the steps of :mod:`.engine`: the classification margin
f = Z_y − max_{j≠y} Z_j (y the clean prediction, Z the effective logits) and the detector margin
g = ``detector.margin(view, argmax Z)`` (> 0 where it rejects x*). Instead of one weighted sum (:mod:`.pgd_detector`)
each step follows one of them (presets ``selective_pgd`` and ``orthogonal_pgd``):

- ``selective``: ∇f while x* is still classified as y, else ∇g (one backward pass, of where(misclassified, g, f));
- ``orthogonal``: ∇f projected orthogonally to ∇g while x* is still classified as y (the detector's score stays
  put to first order), else ∇g projected orthogonally to ∇f (:func:`orthogonal_component`, per example).

Per image x* is chosen by the rule of :mod:`.pgd_detector` (the original code keeps the misclassified iterate with
the lowest detector score).

Limits: with L∞ the sign of the projected gradient is no longer orthogonal (small components become full
steps); and against a score tied to the classification itself (confidence, non-ME) a path of constant score to
the class boundary may not exist (the confidence there is ≤ 1/2), so ``orthogonal`` can stall where
``selective`` or :mod:`.pgd_detector` succeed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.settings import setting
from ..detectors.base import observe
from .base import AttackResult, register
from .engine import TINY, PGDAttack, on_live, per_example
from .pgd import class_margin
from .pgd_detector import AgainstDetector, begin, detector_margin, evaluate, finish_adaptive, status_of

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
class OrthogonalPGD(PGDAttack, AgainstDetector):
    """Selective / orthogonal PGD against a classifier and a detector term (module docstring).

    Settings: those of :class:`~.engine.PGDAttack`, ``detector`` (a detector term), ``mode`` ("selective" or
    "orthogonal"). Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*), ``step`` (the step that
    produced x*).
    """

    mode: str = setting("orthogonal", choices=MODES)

    def passes_per_image(self) -> float:  # per step a forward and two backward passes (selective: one)
        return ((3.0 if self.mode == "selective" else 5.0) * self.steps + 1.0) * self.restarts

    def direction(self, g_cls: torch.Tensor, g_det: torch.Tensor, fooled: torch.Tensor) -> torch.Tensor:
        """The gradient to descend: the classifier's until x* is misclassified, then the detector's."""
        if self.mode == "orthogonal":
            g_cls, g_det = orthogonal_component(g_cls, g_det), orthogonal_component(g_det, g_cls)
        return torch.where(per_example(fooled, g_cls), g_det, g_cls)

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, label, term = begin(self, classifier, x, y)

        def make(c):
            def pass_(xa, idx):
                xa = xa.requires_grad_(True)
                with torch.enable_grad():
                    view = observe(classifier, xa, term)
                    f, g = class_margin(view.logits, c.label[idx]), detector_margin(term, view)
                    st = status_of(view.logits, g, c.label[idx], c.x[idx], xa, self.norm)
                    if self.mode == "selective":  # one backward pass: each image's gradient of the loss it follows
                        return _grad(torch.where(st.misclassified, g, f), xa, retain=False), st
                    return self.direction(_grad(f, xa, retain=True), _grad(g, xa, retain=False), st.misclassified), st

            def judge(xa, idx):
                return evaluate(classifier, term, c.x[idx], xa, c.label[idx], self.norm)

            return on_live(pass_), on_live(judge), lambda t: {"step": float(t)}

        best = self.search(x, label, make, tag="step")[self.steps]
        return finish_adaptive(classifier, term, x_in, x, best.x, label, self.norm, self.steps * self.restarts,
                               **best.tags)
