"""Random uniform noise, the baseline "attack" of paper B.3 / Fig. 4 (protocol §5.7): x* = clip(x + U(−ε, ε), 0, 1).

The noise is drawn element-wise on the CPU from a ``torch.Generator`` seeded with ``seed`` and then moved to
the model's device, so the same seed gives the same images on any device. ``success`` = the prediction on x*
differs from the clean prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Attack, AttackResult, finish, predict, prepare, register, seeded_generator


@register("noise")
@dataclass(frozen=True)
class Noise(Attack):
    """Element-wise uniform noise in [−ε, ε], clipped to [0, 1]."""

    eps: float
    seed: int = 0

    def passes_per_image(self) -> float:
        return 3.0

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, _ = prepare(classifier, x, y, need_label=False)
        with torch.no_grad():
            pred = predict(classifier, x)
        g = seeded_generator(self.seed)
        u = torch.rand(x.shape, generator=g, dtype=torch.float32).to(x.device)
        x_adv = (x + (2.0 * u - 1.0) * self.eps).clamp(0.0, 1.0)
        pred_adv = predict(classifier, x_adv)
        its = torch.ones(len(x), dtype=torch.long, device=x.device)
        return finish(x_in, x, x_adv, pred_adv != pred, its, label=pred, pred_adv=pred_adv)
