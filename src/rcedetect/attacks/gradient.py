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
from .base import AttackResult, check_common, prepare, register
from .precision import autocast, check_precision

LABELS = ("pred", "true")


def check_steps(steps: int, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {steps!r}")
    return steps


def check_label(label: str) -> str:
    if label not in LABELS:
        raise ConfigError(f"label must be one of {', '.join(LABELS)} (clean prediction or given y), got {label!r}")
    return label


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
    """(x*, label) after ``steps`` sign-gradient steps of size ``alpha`` (``direction`` +1 ascends the CE, −1
    descends it), each followed by projection onto the L∞ ball of radius ``eps`` around ``x`` and clipping to
    [0, 1]; ``label=None`` uses the clean prediction, read off the first step's forward pass."""
    x_adv = x
    for _ in range(steps):
        g, label = ce_gradient(classifier, x_adv, label, precision)
        x_adv = x_adv + direction * (alpha * g.sign())
        x_adv = x + torch.clamp(x_adv - x, -eps, eps)
        x_adv = x_adv.clamp(0.0, 1.0)
    return x_adv.detach(), label


@torch.no_grad()
def predict(classifier, x: torch.Tensor) -> torch.Tensor:
    return classifier.logits(x).argmax(1)


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


def finish(x_in: torch.Tensor, x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor,
           iterations: torch.Tensor, target: torch.Tensor | None = None, **extra: torch.Tensor) -> AttackResult:
    """Package the result on the device of the caller's input tensor."""
    dev = x_in.device
    return AttackResult(
        x_adv=x_adv.to(dev), success=success.to(dev), target=None if target is None else target.to(dev),
        iterations=iterations.to(dev), extra={k: v.to(dev) for k, v in extra.items()}, x=x.to(dev),
    )


@dataclass(frozen=True)
class BIM:
    """Basic iterative method (Kurakin et al.; protocol §5.4): ``steps`` steps of ε/steps along sign ∇ₓ CE."""

    eps: float
    steps: int = 10
    label: str = "pred"
    #: "bf16": gradient passes in bfloat16 (:mod:`.precision`); the clean label and the verdict in float32
    precision: str = "fp32"

    def __post_init__(self):
        check_common(self)
        check_steps(self.steps)
        check_label(self.label)
        check_precision(self.precision)

    def passes_per_image(self) -> float:
        return 3.0 * self.steps

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, label = prepare_labels(classifier, x, y, self.label, lazy=self.precision == "fp32")
        x_adv, label = sign_steps(classifier, x, label, eps=self.eps, alpha=self.eps / self.steps, steps=self.steps,
                                  direction=1.0, precision=self.precision)
        pred_adv = predict(classifier, x_adv)
        its = torch.full((len(x),), self.steps, dtype=torch.long, device=x.device)
        return finish(x_in, x, x_adv, pred_adv != label, its, label=label, pred_adv=pred_adv)


@dataclass(frozen=True)
class FGSM(BIM):
    """Fast gradient sign method (Goodfellow et al.; protocol §5.3): x* = clip(x + ε·sign ∇ₓ CE(x, label))."""

    steps: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.steps != 1:
            raise ConfigError(f"FGSM takes exactly one step; use bim for steps={self.steps}")


@dataclass(frozen=True)
class ILCM:
    """Iterative least-likely class method (protocol §5.5): BIM descending CE(x*, y_ll), y_ll = argmin clean logits."""

    eps: float
    steps: int = 10
    precision: str = "fp32"  # as BIM's: bf16 steers, float32 decides the target and the verdict

    def __post_init__(self):
        check_common(self)
        check_steps(self.steps)
        check_precision(self.precision)

    def passes_per_image(self) -> float:
        return 3.0 * self.steps

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, _ = prepare(classifier, x, y, need_label=False)
        with torch.no_grad():
            logits = classifier.logits(x)
        pred, target = logits.argmax(1), logits.argmin(1)
        x_adv, _ = sign_steps(classifier, x, target, eps=self.eps, alpha=self.eps / self.steps, steps=self.steps,
                              direction=-1.0, precision=self.precision)
        pred_adv = predict(classifier, x_adv)
        its = torch.full((len(x),), self.steps, dtype=torch.long, device=x.device)
        return finish(x_in, x, x_adv, pred_adv != pred, its, target=target, label=pred, pred_adv=pred_adv,
                      target_reached=pred_adv == target)


register("fgsm")(FGSM)
register("bim")(BIM)
register("ilcm")(ILCM)
