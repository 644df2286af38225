"""Local intrinsic dimensionality (LID) of activations, combined over layers (Ma et al., ICLR 2018; protocol §15).

For an activation a and its k nearest reference points at distances r_1 ≤ … ≤ r_k, the maximum-likelihood
estimate (Ma et al. eq. 3, after Amsaleg et al. 2015) is

    LID(a) = −( (1/k) Σ_{i=1..k} log(r_i / r_k) )^{-1}

Ma et al. estimate it within each mini-batch of 100 clean images (k = 20). A deployed detector scores one input
at a time, so the reference here is a fixed, seeded set of ``batch`` (100) clean training images — the same
distribution as their mini-batch, and the score of an input no longer depends on what else is in its batch.
Each layer is reduced to its channel means first (:func:`rcedetect.features.pool_activation`; Ma et al. flatten
the whole map — a stated difference that keeps the reference small), and a logistic regression over the
layers' LIDs gives the score (:mod:`.combiner`: fit on a split that is never scored).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ConfigError, InputError, NotFittedError
from .base import FitData, View, register
from .combiner import LayeredMetric

#: Ma et al.'s settings: k = 20 neighbours within a batch of 100
K, BATCH = 20, 100


def pairwise_distances(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, M) between rows of ``a`` and ``ref``, differentiable, never exactly 0 (a floor
    of 1e-6 keeps log r and its gradient finite when a point is its own neighbour)."""
    sq = (a * a).sum(1, keepdim=True) + (ref * ref).sum(1) - 2.0 * a @ ref.T
    return sq.clamp_min(1e-12).sqrt()


def lid_mle(a: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """The LID estimate (N,) of every row of ``a`` from its ``k`` nearest rows of ``ref`` (Ma et al. eq. 3)."""
    if k < 2 or k > len(ref):
        raise InputError(f"LID needs 2 <= k <= the number of reference points ({len(ref)}), got k = {k}")
    r = pairwise_distances(a, ref).topk(k, dim=1, largest=False).values  # ascending
    mean_log = torch.log(r / r[:, -1:]).mean(1)  # ≤ 0; 0 only when all k distances are equal
    return 1.0 / (-mean_log).clamp_min(1e-6)


@register
class LID(LayeredMetric):
    """LID per layer against a fixed reference of ``batch`` clean training images, ``k`` neighbours; logistic
    regression over the layers (:class:`~.combiner.CombinedMetric` settings ``fit_on``, ``fit_eps``, ...)."""

    name = "lid"
    label = "LID"

    def __init__(self, k: int = K, batch: int = BATCH, **kw: Any):
        super().__init__(**kw)
        for nm, v in (("k", k), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ConfigError(f"LID {nm} must be an integer >= 2, got {v!r}")
        if k > batch:
            raise ConfigError(f"LID k ({k}) cannot exceed the reference batch ({batch})")
        self.k, self.batch = k, batch
        self.reference: dict[str, torch.Tensor] = {}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": self.k, "batch": self.batch}

    def fit_statistics(self, data: FitData) -> None:
        bank = data.bank
        if len(bank) < self.batch:
            raise InputError(f"LID needs at least batch = {self.batch} clean training images for its reference, "
                             f"got {len(bank)}")
        rows = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.seed))[: self.batch]
        self.reference = {n: bank.layer(n)[rows].float().clone() for n in self.layers}

    def move_state(self, device) -> None:
        self.reference = {n: r.to(device) for n, r in self.reference.items()}

    def layer_widths(self) -> dict[str, int]:
        return {n: int(r.shape[1]) for n, r in self.reference.items()}

    def raw(self, view: View) -> torch.Tensor:
        if not self.reference:
            raise NotFittedError("the LID detector is not fitted")
        return torch.stack([lid_mle(view.layer(n), self.reference[n].to(view.z.device), self.k)
                            for n in self.layers], dim=1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ref.{n}": r.cpu() for n, r in self.reference.items()}

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        from ..core.errors import CheckpointError

        missing = [n for n in self.layers if f"ref.{n}" not in t]
        if missing:
            raise CheckpointError(f"{where} lacks the LID reference of layer(s) {', '.join(missing)}")
        self.reference = {n: t[f"ref.{n}"].float() for n in self.layers}
        if any(r.dim() != 2 or len(r) != self.batch for r in self.reference.values()):
            raise CheckpointError(f"{where}: the LID references are not ({self.batch}, C) matrices")
