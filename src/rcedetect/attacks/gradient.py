"""FGSM, BIM and ILCM: the L∞ sign-gradient attacks of paper §2.3 / B.2, as run by the original (protocol §5.3-5.5).

All three take steps of ``alpha · sign(∇ₓ CE(logits(x*), label))`` on the *effective* logits (``classifier.logits``:
Z for CE, −Z for RCE, so an RCE model is attacked through F_R = softmax(−Z) exactly as in the original):

- FGSM (protocol §5.3): one step of ε, ascending the CE of the label.
- BIM (protocol §5.4): ``steps`` steps of ε/steps, ascending, the label fixed for all steps.
- ILCM (protocol §5.5): ``steps`` steps of ε/steps, *descending* the CE of the least-likely class
  y_ll = argmin of the clean logits, with a correct one-hot target (the original's ±0.5 label is a bug,
  not reproduced).

After each step the image is projected onto the ε-ball around x (a no-op for the paper's ε/steps schedule,
kept for safety) and clipped to [0, 1] — the same order as foolbox's ``LinfBaseGradientDescent``.

Label (protocol "Decisions"): by default the label is the model's *prediction* on the clean input (the
original's "label leaking" fix); ``label="true"`` uses the given ``y``. ``success`` is always "misclassified":
the prediction on x* differs from that label (for ILCM: from the clean prediction). Targeted attacks put
their target in ``AttackResult.target`` and ``extra["target_reached"]`` says whether it was reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, InputError
from ..core.settings import setting
from .base import Attack, AttackResult, finish, predict, prepare, register
from .engine import pgd_step
from .precision import PRECISIONS, autocast

LABELS = ("pred", "true")


def ce_gradient(classifier, x: torch.Tensor, label: torch.Tensor | None, precision: str = "fp32"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇ₓ Σ_n CE(logits(x_n), label_n), label): summed, so each example's gradient ignores the rest of the batch.
    ``label=None`` takes the prediction from the same forward pass (no separate pass for the clean prediction);
    ``precision="bf16"`` runs the pass under bf16 autocast (:mod:`.precision`) and then needs a given label."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast(x.device, precision):
            logits = classifier.logits(x)
        logits = logits.float()
        if label is None:
            label = logits.detach().argmax(1)
        loss = F.cross_entropy(logits, label, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad, label


def sign_steps(classifier, x: torch.Tensor, label: torch.Tensor | None, *, eps: float, alpha: float, steps: int,
               direction: float, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(x*, label) after ``steps`` L∞ PGD steps (:func:`.engine.pgd_step`) of size ``alpha`` along the CE's
    gradient (``direction`` +1 ascends, −1 descends); ``label=None`` uses the clean prediction, read off the first
    step's forward pass."""
    x_adv = x
    for _ in range(steps):
        g, label = ce_gradient(classifier, x_adv, label, precision)
        x_adv = pgd_step(x, x_adv, g, eps=eps, norm="linf", step_size=alpha, direction=direction)
    return x_adv.detach(), label


def prepare_labels(classifier, x: torch.Tensor, y: torch.Tensor | None, label: str, lazy: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prepared x, the label to move away from); with ``lazy``, None stands for the clean prediction, for the
    caller to read off its first forward pass (:func:`sign_steps`)."""
    if label == "true" and y is None:
        raise InputError('label="true" needs the true labels: call attack(classifier, x, y)')
    x, y_checked = prepare(classifier, x, y, need_label=label == "true" or not lazy)
    if label == "true":
        return x, y_checked
    return x, None if lazy else (y_checked if y is None else predict(classifier, x))


class SignSteps(Attack):
    """``steps`` sign steps of ε/steps (:func:`sign_steps`; ``direction`` +1 ascends the CE, −1 descends it) from
    the label :meth:`aim` gives; success = the prediction on x* differs from the label moved away from."""

    direction = 1.0

    def passes_per_image(self) -> float:
        return 3.0 * self.steps

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, steer, away, target = self.aim(classifier, x, y)
        x_adv, steer = sign_steps(classifier, x, steer, eps=self.eps, alpha=self.eps / self.steps, steps=self.steps,
                                  direction=self.direction, precision=self.precision)
        away = steer if away is None else away
        pred_adv = predict(classifier, x_adv)
        its = torch.full((len(x),), self.steps, dtype=torch.long, device=x.device)
        extra = {} if target is None else {"target_reached": pred_adv == target}
        return finish(x_in, x, x_adv, pred_adv != away, its, target=target, label=away, pred_adv=pred_adv, **extra)


@dataclass(frozen=True)
class BIM(SignSteps):
    """Basic iterative method (Kurakin et al.; protocol §5.4): ``steps`` steps of ε/steps along sign ∇ₓ CE."""

    eps: float
    steps: int = setting(10, lo=1)
    label: str = setting("pred", choices=LABELS, hint=" (clean prediction or given y)")
    #: "bf16": gradient passes in bfloat16 (:mod:`.precision`); the clean label and the verdict in float32
    precision: str = setting("fp32", choices=PRECISIONS)

    def aim(self, classifier, x, y):
        """(x, the label steered away from: None for the clean prediction read off the first pass, the same)."""
        x, label = prepare_labels(classifier, x, y, self.label, lazy=self.precision == "fp32")
        return x, label, None, None


@dataclass(frozen=True)
class FGSM(BIM):
    """Fast gradient sign method (Goodfellow et al.; protocol §5.3): x* = clip(x + ε·sign ∇ₓ CE(x, label))."""

    steps: int = setting(1, lo=1)

    def __post_init__(self):
        super().__post_init__()
        if self.steps != 1:
            raise ConfigError(f"FGSM takes exactly one step; use bim for steps={self.steps}")


@dataclass(frozen=True)
class ILCM(SignSteps):
    """Iterative least-likely class method (protocol §5.5): BIM descending CE(x*, y_ll), y_ll = argmin clean logits."""

    eps: float
    steps: int = setting(10, lo=1)
    precision: str = setting("fp32", choices=PRECISIONS)  # as BIM's: bf16 steers, float32 decides the target and the verdict
    direction = -1.0

    def aim(self, classifier, x, y):
        """(x, y_ll steered toward, the clean prediction moved away from, the target y_ll)."""
        x, _ = prepare(classifier, x, y, need_label=False)
        with torch.no_grad():
            logits = classifier.logits(x)
        target = logits.argmin(1)
        return x, target, logits.argmax(1), target


register("fgsm")(FGSM)
register("bim")(BIM)
register("ilcm")(ILCM)
