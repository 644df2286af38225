"""The Mahalanobis detector: class-conditional Gaussians with one tied covariance per layer, optional input
pre-processing, logistic regression over layers (Lee et al., NeurIPS 2018; protocol §15).

For layer ℓ with channel-mean activation f (:func:`rcedetect.features.pool_activation`, as Lee et al.), class
means μ_c and the tied covariance Σ of the clean training activations (Lee et al. eq. 1-2), the confidence score is

    M_ℓ(x) = max_c −(f − μ_c)ᵀ Σ^{-1} (f − μ_c)                                        (Lee et al. eq. 2)

Input pre-processing (Lee et al. eq. 4): x̂ = x − ε · sign(∇_x (f(x) − μ_ĉ)ᵀ Σ^{-1} (f(x) − μ_ĉ)) with ĉ the
closest class, then M_ℓ(x̂); ε is chosen from Lee et al.'s magnitudes on the fitting split (half fits the
regression, half scores it) — never on an evaluated attack. Lee et al. apply ε to normalised inputs; here it is in
[0, 1] pixel units. The sign is held constant when an attacker differentiates the score (the derivative of sign is
0 almost everywhere), so a white-box attack sees the gradient through the pre-processed forward pass.

Σ is shrunk toward a multiple of the identity, Σ + λ·(tr Σ / D)·I with λ = ``shrinkage`` (1e-6 by default), so a
singular covariance (dead or duplicated channels) gives finite scores; the JSON records λ.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from .base import FitData, View, register
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
class Mahalanobis(LayeredMetric):
    """Mahalanobis confidence per layer, ``noise`` = one pre-processing magnitude or a list to choose from on the
    fitting split (default: Lee et al.'s), ``shrinkage`` of the tied covariance; logistic regression over
    layers."""

    name = "mahalanobis"
    label = "Mahalanobis"

    def __init__(self, noise: float | list[float] = NOISE_MAGNITUDES, shrinkage: float = SHRINKAGE, **kw: Any):
        super().__init__(**kw)
        grid = [noise] if isinstance(noise, (int, float)) and not isinstance(noise, bool) else noise
        if (not isinstance(grid, (list, tuple)) or not grid
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 0.1 for v in grid)):
            raise ConfigError(f"noise must be a magnitude in [0, 0.1] or a list of them, got {noise!r}")
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage < 1:
            raise ConfigError(f"shrinkage must be a number in [0, 1), got {shrinkage!r}")
        self.noise_grid = tuple(float(v) for v in grid)
        self.noise = self.noise_grid[0] if len(self.noise_grid) == 1 else None  # chosen by fit
        self.shrinkage = float(shrinkage)
        self.means: dict[str, torch.Tensor] = {}
        self.precision: dict[str, torch.Tensor] = {}
        self.selection: dict[str, float] | None = None

    @property
    def needs_images(self) -> bool:
        return bool(self.noise)

    def settings(self) -> dict[str, Any]:
        noise = list(self.noise_grid) if len(self.noise_grid) > 1 else self.noise_grid[0]
        return {**super().settings(), "noise": noise, "shrinkage": self.shrinkage}

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

        The pre-processing direction sign(∇ closest-class distance) does not depend on ε, so it is computed once
        per layer and image; each ε then costs one forward pass per layer, and the chosen ε's features are the
        ones the final regression is fitted on (the same numbers :func:`raw_features` gives at that ε)."""
        if len(self.noise_grid) == 1:
            super().fit_combiner(classifier, x_clean, x_adv)
            return
        from ..stats.metrics import auc as roc_auc

        g = torch.Generator().manual_seed(self.seed)
        pc, pa = torch.randperm(len(x_clean), generator=g), torch.randperm(len(x_adv), generator=g)
        (c1, c2), (a1, a2) = pc.tensor_split(2), pa.tensor_split(2)
        if min(len(c1), len(c2), len(a1), len(a2)) < 2:
            raise InputError("too few fitting examples to choose the pre-processing magnitude; give more "
                             "fit_images or a single noise value")
        signs = {} if not any(self.noise_grid) else {"clean": self._signs(classifier, x_clean),
                                                     "adv": self._signs(classifier, x_adv)}
        aucs, feats = {}, {}
        for eps in self.noise_grid:
            self.noise = eps
            if eps:
                fc = self._raw_at(classifier, x_clean, signs["clean"], eps)
                fa = self._raw_at(classifier, x_adv, signs["adv"], eps)
            else:
                fc, fa = raw_features(self, classifier, x_clean), raw_features(self, classifier, x_adv)
            lr = LogisticCombiner.fit(fc[c1], fa[a1])
            with torch.no_grad():
                aucs[eps] = float(roc_auc(lr(fc[c2]), lr(fa[a2]), ties="half"))
            feats[eps] = (fc, fa)
        self.noise = max(aucs, key=lambda e: (aucs[e], -e))
        self.selection = {f"{e:g}": round(a, 6) for e, a in aucs.items()}
        self.combiner = LogisticCombiner.fit(*feats[self.noise])

    def _signs(self, classifier, x: torch.Tensor, batch: int = RAW_BATCH) -> dict[str, torch.Tensor]:
        """{layer: sign(∇ₓ closest-class distance)} of images ``x`` (on the CPU), in eval mode."""
        was_training = classifier.training
        classifier.eval()
        out: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        try:
            for i in range(0, len(x), batch):
                xb = x[i : i + batch].to(classifier.device)
                for n in self.layers:
                    out[n].append(self._gradient_sign(classifier, xb, n).cpu())
        finally:
            classifier.train(was_training)
        return {n: torch.cat(v) if v else torch.empty(0) for n, v in out.items()}

    @torch.no_grad()
    def _raw_at(self, classifier, x: torch.Tensor, signs: dict[str, torch.Tensor], noise: float,
                batch: int = RAW_BATCH) -> torch.Tensor:
        """(N, layers) confidences at x − ``noise`` · ``signs`` (the pre-processed images), in eval mode."""
        was_training = classifier.training
        classifier.eval()
        rows = []
        try:
            for i in range(0, len(x), batch):
                xb = x[i : i + batch].to(classifier.device)
                rows.append(torch.stack([
                    self._confidence(self._act(classifier, xb - noise * signs[n][i : i + batch].to(xb.device), n), n)
                    for n in self.layers], dim=1).cpu())
        finally:
            classifier.train(was_training)
        return torch.cat(rows) if rows else torch.empty(0, len(self.layers))

    def move_state(self, device) -> None:
        self.means = {n: m.to(device) for n, m in self.means.items()}
        self.precision = {n: p.to(device) for n, p in self.precision.items()}

    def layer_widths(self) -> dict[str, int]:
        return {n: int(m.shape[1]) for n, m in self.means.items()}

    def _confidence(self, f: torch.Tensor, layer: str) -> torch.Tensor:
        return -squared_distances(f, self.means[layer].to(f.device), self.precision[layer].to(f.device)).amin(1)

    @staticmethod
    def _act(classifier, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The (N, C) activation of ``layer`` (the channel means of a stage; z for the final layer)."""
        from ..models.classifier import FINAL
        from ..models.features import pool_activation

        if layer == FINAL:
            return classifier.features(x)
        return pool_activation(layer, classifier.features(x, layers=[layer])[layer])

    def _gradient_sign(self, classifier, x: torch.Tensor, layer: str) -> torch.Tensor:
        """sign(∇ₓ (f(x) − μ_ĉ)ᵀ Σ^{-1} (f(x) − μ_ĉ)), ĉ the closest class (Lee et al. eq. 4), detached."""
        with torch.enable_grad():
            x0 = x.detach().requires_grad_(True)
            dist = squared_distances(self._act(classifier, x0, layer), self.means[layer].to(x.device),
                                     self.precision[layer].to(x.device)).amin(1)
            (grad,) = torch.autograd.grad(dist.sum(), x0)
        return grad.sign()

    def _preprocessed(self, view: View, layer: str) -> torch.Tensor:
        """The layer's activation at x̂ = x − ε·sign(∇ closest-class distance) (Lee et al. eq. 4)."""
        x = view.need_images("Mahalanobis input pre-processing")
        clf = view.classifier
        return self._act(clf, x - self.noise * self._gradient_sign(clf, x, layer), layer)

    def raw(self, view: View) -> torch.Tensor:
        if not self.means:
            raise NotFittedError("the Mahalanobis detector is not fitted")
        if self.noise is None:
            raise NotFittedError("the Mahalanobis pre-processing magnitude is chosen by fit; fit it first")
        return torch.stack([self._confidence(self._preprocessed(view, n) if self.noise else view.layer(n), n)
                            for n in self.layers], dim=1)

    def save(self, directory) -> dict[str, Any]:
        return {**super().save(directory), "noise": self.noise, "noise_selection": self.selection,
                "shrinkage": self.shrinkage}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"mean.{n}": m.cpu() for n, m in self.means.items()},
                **{f"precision.{n}": p.cpu() for n, p in self.precision.items()}}

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        missing = [n for n in self.layers if f"mean.{n}" not in t or f"precision.{n}" not in t]
        if missing:
            raise CheckpointError(f"{where} lacks the Gaussian of layer(s) {', '.join(missing)}")
        self.means = {n: t[f"mean.{n}"].float() for n in self.layers}
        self.precision = {n: t[f"precision.{n}"].float() for n in self.layers}
        for n in self.layers:
            d = self.means[n].shape[-1]
            if self.means[n].dim() != 2 or self.precision[n].shape != (d, d):
                raise CheckpointError(f"{where}: the Gaussian of layer {n!r} is not a (C, D) mean and (D, D) "
                                      "precision")
        noise = info.get("noise")
        if not isinstance(noise, (int, float)) or isinstance(noise, bool):
            raise CheckpointError(f"{where}: the chosen pre-processing magnitude is missing")
        self.noise, self.selection = float(noise), info.get("noise_selection")
