"""Local intrinsic dimensionality (LID) of activations, combined over layers (Ma et al., ICLR 2018; protocol §15).

For an activation a and its k nearest reference points at distances r_1 ≤ … ≤ r_k, the maximum-likelihood
estimate (Ma et al. eq. 3, after Amsaleg et al. 2015) is

    LID(a) = −( (1/k) Σ_{i=1..k} log(r_i / r_k) )^{-1}

Ma et al. estimate it within each mini-batch of 100 clean images (k = 20); a deployed detector scores one input at
a time, so the reference here is a fixed, seeded set of ``batch`` (100) clean training images (the same
distribution, and a score that does not depend on the rest of its batch). Each layer is reduced to its channel
means (:func:`rcedetect.features.pool_activation`; Ma et al. flatten the whole map), and a logistic regression over
the layers' LIDs gives the score (:mod:`.combiner`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..core.settings import setting
from .base import FitData, View, register, with_settings
from .combiner import LayeredMetric

#: Ma et al.'s settings: k = 20 neighbours within a batch of 100
K, BATCH = 20, 100


def lid_mle(a: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """The LID estimate (N,) of every row of ``a`` from its ``k`` nearest rows of ``ref`` (Ma et al. eq. 3)."""
    if k < 2 or k > len(ref):
        raise InputError(f"LID needs 2 <= k <= the number of reference points ({len(ref)}), got k = {k}")
    # Euclidean distances (N, M), never exactly 0: a floor of 1e-6 keeps log r and its gradient finite where a
    # point is its own neighbour
    sq = (a * a).sum(1, keepdim=True) + (ref * ref).sum(1) - 2.0 * a @ ref.T
    r = sq.clamp_min(1e-12).sqrt().topk(k, dim=1, largest=False).values  # ascending
    mean_log = torch.log(r / r[:, -1:]).mean(1)  # ≤ 0; 0 only when all k distances are equal
    return 1.0 / (-mean_log).clamp_min(1e-6)


@register
@with_settings
class LID(LayeredMetric):
    """LID per layer against a fixed reference of ``batch`` clean training images, ``k`` neighbours; logistic
    regression over the layers (:class:`~.combiner.CombinedMetric` settings ``fit_on``, ``fit_eps``, ...)."""

    name, label = "lid", "LID"
    per_layer = (("ref", "reference"),)

    k: int = setting(K, lo=2)
    batch: int = setting(BATCH, lo=2)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k > self.batch:
            raise ConfigError(f"LID k ({self.k}) cannot exceed the reference batch ({self.batch})")

    def fit_statistics(self, data: FitData) -> None:
        bank = data.bank
        if len(bank) < self.batch:
            raise InputError(f"LID needs at least batch = {self.batch} clean training images for its reference, "
                             f"got {len(bank)}")
        rows = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.seed))[: self.batch]
        self.reference = {n: bank.layer(n)[rows].float().clone() for n in self.layers}

    def raw(self, view: View) -> torch.Tensor:
        if not self.reference:
            raise NotFittedError("the LID detector is not fitted")
        return torch.stack([lid_mle(view.layer(n), self.reference[n].to(view.z.device), self.k)
                            for n in self.layers], dim=1)

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        super().load_state(t, info, where)
        if any(r.dim() != 2 or len(r) != self.batch for r in self.reference.values()):
            raise CheckpointError(f"{where}: the LID references are not ({self.batch}, C) matrices")
