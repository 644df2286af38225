"""The Mahalanobis detector: class-conditional Gaussians with one tied covariance per layer, optional input
pre-processing, logistic regression over layers (Lee et al., NeurIPS 2018; protocol §15).

For layer ℓ with channel-mean activation f (:func:`rcedetect.features.pool_activation`, as Lee et al.), class
means μ_c and the tied covariance Σ of the clean training activations (Lee et al. eq. 1-2), the confidence score is

    M_ℓ(x) = max_c −(f − μ_c)ᵀ Σ^{-1} (f − μ_c)                                        (Lee et al. eq. 2)

Input pre-processing (Lee et al. eq. 4): x̂ = x − ε · sign(∇_x (f(x) − μ_ĉ)ᵀ Σ^{-1} (f(x) − μ_ĉ)) with ĉ the
closest class, then M_ℓ(x̂); ε, in [0, 1] pixel units (Lee et al.'s are of normalised inputs), is chosen from their
magnitudes on the fitting split (half fits the regression, half scores it), never on an evaluated attack. The sign
is constant to an attacker differentiating the score (its derivative is 0 almost everywhere).

Σ is shrunk to Σ + λ·(tr Σ / D)·I, λ = ``shrinkage`` (1e-6 by default, recorded in the JSON), so a singular
covariance (dead or duplicated channels) gives finite scores.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..core.settings import Rule, setting
from ..models.classifier import FINAL
from ..models.features import pool_activation
from ..stats.metrics import auc as roc_auc
from .base import FitData, View, batched, evaluating, register, with_settings
from .combiner import RAW_BATCH, LayeredMetric, LogisticCombiner, raw_features

#: Lee et al.'s input pre-processing magnitudes (their adversarial-detection experiments)
NOISE_MAGNITUDES = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01)
SHRINKAGE = 1e-6


def tied_gaussian(f: torch.Tensor, labels: torch.Tensor, num_classes: int, shrinkage: float = SHRINKAGE
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(class means (C, D), precision Σ^{-1} (D, D)) of activations ``f`` with true ``labels`` (Lee et al. eq. 1),
    Σ shrunk by λ·(tr Σ / D)·I (an absolute floor of 1e-12 when Σ = 0)."""
    f = f.double()
    missing = [c for c in range(num_classes) if not bool((labels == c).any())]
    if missing:
        raise InputError(f"the Mahalanobis detector needs training activations of every class; none of class(es) "
                         f"{missing}")
    means = torch.stack([f[labels == c].mean(0) for c in range(num_classes)])
    centred = f - means[labels]
    cov = centred.T @ centred / len(f)
    d = cov.shape[0]
    ridge = max(float(shrinkage) * float(torch.trace(cov)) / d, 1e-12)
    precision = torch.linalg.inv(cov + ridge * torch.eye(d, dtype=cov.dtype))
    precision = (precision + precision.T) / 2
    return means.float(), precision.float()


def squared_distances(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(f − μ_c)ᵀ P (f − μ_c) for every row of ``f`` and class c: (N, C)."""
    diff = f.unsqueeze(1) - means.unsqueeze(0)  # (N, C, D)
    return torch.einsum("ncd,de,nce->nc", diff, precision, diff)


@register
@with_settings
class Mahalanobis(LayeredMetric):
    """Mahalanobis confidence per layer, ``noise`` = one pre-processing magnitude or a list to choose from on the
    fitting split (default: Lee et al.'s; ``self.noise`` is the one chosen, ``noise_grid`` the list), ``shrinkage``
    of the tied covariance; logistic regression over layers."""

    name, label = "mahalanobis", "Mahalanobis"
    per_layer = (("mean", "means"), ("precision", "precision"))

    noise: float | tuple[float, ...] = setting(NOISE_MAGNITUDES, lo=0, hi=0.1,
                                               each=Rule(lo=0, hi=0.1, kind="float"))
    shrinkage: float = setting(SHRINKAGE, lo=0, hi=1, hi_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.noise_grid = self.noise if isinstance(self.noise, tuple) else (self.noise,)
        if not self.noise_grid:
            raise ConfigError("noise must be a magnitude in [0, 0.1] or a non-empty list of them, got []")
        self.noise = self.noise_grid[0] if len(self.noise_grid) == 1 else None  # chosen by fit
        self.selection: dict[str, float] | None = None

    @property
    def needs_images(self) -> bool:
        return bool(self.noise)

    def settings(self) -> dict[str, Any]:
        grid = self.noise_grid
        return {**super().settings(), "noise": list(grid) if len(grid) > 1 else grid[0]}

    def fit_statistics(self, data: FitData) -> None:
        bank = data.bank
        if bank.labels is None:
            raise InputError("fitting the Mahalanobis detector needs the true training labels")
        labels = bank.labels.cpu().long()
        for n in self.layers:
            self.means[n], self.precision[n] = tied_gaussian(bank.layer(n).cpu(), labels, data.num_classes,
                                                             self.shrinkage)

    def fit_combiner(self, classifier, x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Choose ε on the fitting split (regression on one half, ROC-AUC on the other), then fit on all of it.
        The direction sign(∇ closest-class distance) does not depend on ε: computed once per layer and image, each
        ε then costs one forward pass per layer (the same numbers :func:`raw_features` gives at that ε)."""
        if len(self.noise_grid) == 1:
            super().fit_combiner(classifier, x_clean, x_adv)
            return
        g = torch.Generator().manual_seed(self.seed)
        pc, pa = torch.randperm(len(x_clean), generator=g), torch.randperm(len(x_adv), generator=g)
        (c1, c2), (a1, a2) = pc.tensor_split(2), pa.tensor_split(2)
        if min(len(c1), len(c2), len(a1), len(a2)) < 2:
            raise InputError("too few fitting examples to choose the pre-processing magnitude; give more "
                             "fit_images or a single noise value")
        signs = [self._signs(classifier, x) if any(self.noise_grid) else None for x in (x_clean, x_adv)]
        aucs, feats = {}, {}
        for eps in self.noise_grid:
            self.noise = eps
            fc, fa = (self._raw_at(classifier, x, sign, eps) if eps else raw_features(self, classifier, x)
                      for x, sign in zip((x_clean, x_adv), signs))
            lr = LogisticCombiner.fit(fc[c1], fa[a1])
            with torch.no_grad():
                aucs[eps] = float(roc_auc(lr(fc[c2]), lr(fa[a2]), ties="half"))
            feats[eps] = (fc, fa)
        self.noise = max(aucs, key=lambda e: (aucs[e], -e))
        self.selection = {f"{e:g}": round(a, 6) for e, a in aucs.items()}
        self.combiner = LogisticCombiner.fit(*feats[self.noise])

    def _signs(self, classifier, x: torch.Tensor, batch: int = RAW_BATCH) -> dict[str, torch.Tensor]:
        """{layer: sign(∇ₓ closest-class distance)} of images ``x`` (on the CPU), in eval mode."""
        with evaluating(classifier):
            return {n: batched(lambda rows, n=n: self._gradient_sign(classifier, x[rows].to(classifier.device), n),
                               len(x), batch, torch.empty(0)) for n in self.layers}

    @torch.no_grad()
    def _raw_at(self, classifier, x: torch.Tensor, signs: dict[str, torch.Tensor], noise: float,
                batch: int = RAW_BATCH) -> torch.Tensor:
        """(N, layers) confidences at x − ``noise`` · ``signs`` (the pre-processed images), in eval mode."""
        def confidences(rows: slice) -> torch.Tensor:
            xb = x[rows].to(classifier.device)
            return torch.stack([self._confidence(self._act(classifier, xb - noise * signs[n][rows].to(xb.device), n),
                                                 n) for n in self.layers], dim=1)

        with evaluating(classifier):
            return batched(confidences, len(x), batch, torch.empty(0, len(self.layers)))

    def _confidence(self, f: torch.Tensor, layer: str) -> torch.Tensor:
        return -squared_distances(f, self.means[layer].to(f.device), self.precision[layer].to(f.device)).amin(1)

    @staticmethod
    def _act(classifier, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The (N, C) activation of ``layer`` (the channel means of a stage; z for the final layer)."""
        if layer == FINAL:
            return classifier.features(x)
        return pool_activation(layer, classifier.features(x, layers=[layer])[layer])

    def _gradient_sign(self, classifier, x: torch.Tensor, layer: str) -> torch.Tensor:
        """sign(∇ₓ (f(x) − μ_ĉ)ᵀ Σ^{-1} (f(x) − μ_ĉ)), ĉ the closest class (Lee et al. eq. 4), detached."""
        with torch.enable_grad():
            x0 = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(-self._confidence(self._act(classifier, x0, layer), layer).sum(), x0)
        return grad.sign()

    def raw(self, view: View) -> torch.Tensor:
        """(N, layers): the confidence of each layer, at x̂ = x − ε·sign(∇ closest-class distance) with
        pre-processing (Lee et al. eq. 4)."""
        if not self.means:
            raise NotFittedError("the Mahalanobis detector is not fitted")
        if self.noise is None:
            raise NotFittedError("the Mahalanobis pre-processing magnitude is chosen by fit; fit it first")
        if not self.noise:
            return torch.stack([self._confidence(view.layer(n), n) for n in self.layers], dim=1)
        x, clf = view.need_images("Mahalanobis input pre-processing"), view.classifier
        return torch.stack([self._confidence(self._act(clf, x - self.noise * self._gradient_sign(clf, x, n), n), n)
                            for n in self.layers], dim=1)

    def save(self, directory) -> dict[str, Any]:
        return {**super().save(directory), "noise": self.noise, "noise_selection": self.selection,
                "shrinkage": self.shrinkage}

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        super().load_state(t, info, where)
        for n in self.layers:
            d = self.means[n].shape[-1]
            if self.means[n].dim() != 2 or self.precision[n].shape != (d, d):
                raise CheckpointError(f"{where}: the Gaussian of layer {n!r} is not a (C, D) mean and (D, D) "
                                      "precision")
        noise = info.get("noise")
        if not isinstance(noise, (int, float)) or isinstance(noise, bool):
            raise CheckpointError(f"{where}: the chosen pre-processing magnitude is missing")
        self.noise, self.selection = float(noise), info.get("noise_selection")
