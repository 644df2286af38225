"""KD+BU: kernel density plus Bayesian uncertainty from MC dropout, combined by logistic regression (Feinman et
al. 2017, "Detecting adversarial samples from artifacts"; protocol §15).

- KD: −log K-density of the final hidden vector z against the kernel of the predicted class — the ``kd``
  detector's own kernel and bandwidth (:mod:`.kd`, protocol §4.2-4.3), so the comparison isolates what BU adds.
- BU (Feinman et al. eq. 4): with T dropout masks m_t on z and p_t = softmax(effective logits of m_t ⊙ z),

      BU(x) = (1/T) Σ_t p_tᵀ p_t − p̄ᵀ p̄,   p̄ = (1/T) Σ_t p_t.

  The dropout sits where the paper's ResNet's dropout variant has it (before the final linear layer,
  ``TrainConfig.dropout``), at the model's rate, else ``dropout`` (0.5, as Feinman et al.). The T = ``samples``
  masks (50) are drawn once, seeded, at fit: the score is a deterministic, differentiable function of the input
  (a white-box attacker knows them).
- The regression over the standardised [KD, BU] is fit on the fitting split (:mod:`.combiner`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, NotFittedError
from ..core.settings import setting
from .base import FitData, View, register, with_settings
from .combiner import CombinedMetric
from .density import KernelDensity
from .kd import PER_CLASS, KDensity

SAMPLES, DROPOUT = 50, 0.5


def bayesian_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """BU (N,) of MC samples ``probs`` (T, N, L) (Feinman et al. eq. 4): mean_t ‖p_t‖² − ‖mean_t p_t‖²."""
    mean = probs.mean(0)
    return (probs * probs).sum(-1).mean(0) - (mean * mean).sum(-1)


def model_dropout(classifier) -> float:
    """The dropout rate the classifier's net was trained with (0 for the paper's ResNets)."""
    return float(getattr(getattr(classifier, "net", None), "dropout", 0.0) or 0.0)


@register
@with_settings
class KDBU(CombinedMetric):
    """[−log KD, BU] with ``samples`` MC-dropout masks at rate ``dropout`` (None = the model's, or 0.5); the KD
    part takes the ``kd`` settings ``per_class`` and ``sigma2``."""

    name, label = "kd_bu", "KD+BU"

    samples: int = setting(SAMPLES, lo=2)
    dropout: float | None = setting(None, lo=0, lo_open=True, hi=1, hi_open=True,
                                    hint=f" (None: the model's rate, else {DROPOUT})")
    per_class: int | str = PER_CLASS  # the KD part's settings, whose ranges it checks
    sigma2: float | str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kd = KDensity(per_class=self.per_class, sigma2=self.sigma2, seed=self.seed)
        self.masks: torch.Tensor | None = None  # (T, D), already scaled by 1 / (1 − p)
        self.rate: float | None = None

    def feature_names(self) -> list[str]:
        return ["kd", "bu"]

    def fit_statistics(self, data: FitData) -> None:
        self.kd.fit(data)
        self.rate = self.dropout or model_dropout(data.classifier) or DROPOUT
        g = torch.Generator().manual_seed(self.seed + 2)
        keep = torch.rand(self.samples, data.bank.dim, generator=g) >= self.rate
        self.masks = keep.float() / (1.0 - self.rate)

    def move_state(self, device) -> None:
        if self.kd.fitted:
            self.kd.to(device)
        if self.masks is not None:
            self.masks = self.masks.to(device)

    def uncertainty(self, view: View) -> torch.Tensor:
        """BU of the view's z under the fixed dropout masks."""
        if self.masks is None:
            raise NotFittedError("the KD+BU detector is not fitted")
        masks = self.masks.to(view.z.device)
        zt = view.z.unsqueeze(0) * masks.unsqueeze(1)  # (T, N, D)
        logits = view.classifier.logits_from_features(zt.reshape(-1, zt.shape[-1]))
        return bayesian_uncertainty(torch.softmax(logits, 1).reshape(len(masks), len(view.z), -1))

    def raw(self, view: View) -> torch.Tensor:
        return torch.stack([self.kd.score(view), self.uncertainty(view)], dim=1)

    def save(self, directory) -> dict[str, Any]:
        info = super().save(directory)
        self.kd.density.save(directory / "kd_bu_kernel.safetensors")
        return {**info, "dropout_rate": self.rate, "sigma2": self.kd.density.sigma2}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"masks": self.masks.cpu()}

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        if "masks" not in t or t["masks"].dim() != 2 or len(t["masks"]) != self.samples:
            raise CheckpointError(f"{where} lacks the {self.samples} MC-dropout masks")
        self.masks, self.rate = t["masks"].float(), info.get("dropout_rate")
        self.kd.density = KernelDensity.load(Path(where).with_name("kd_bu_kernel.safetensors"))
