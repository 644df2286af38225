"""The K-density detector on the final hidden layer (Feinman et al. 2017; paper §3.3, protocol §4.2-4.4).

Score: −log KD(z) against the kernel of the predicted class (:mod:`.density`: the kernel math, :mod:`.bandwidth`:
σ²). Fitting also prepares the paper's white-box *attack term* (protocol §4.2, §4.4, paper §4.4): a seeded
``attack_per_class`` subset of the kernel points (100 in the paper) and η_c = −log median KD_c of the training
features of class c against it; C&W-wb and adaptive attacks optimise ``margin = −log KD_t(z) − η_t`` (:class:`KDTerm`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..core.settings import SEED_RANGE, setting
from .bandwidth import BandwidthSelection, resolve_sigma2
from .base import FitData, Metric, View, register, with_settings
from .density import KernelDensity

#: the paper's kernel sizes (protocol §4.2): 1000 points per class, 100 of them for the attack term
PER_CLASS, ATTACK_PER_CLASS = 1000, 100


@dataclass(frozen=True)
class KDTerm:
    """The K-density detector term of paper §4.4: margin = −log KD_t(z) − η_t (≤ 0: the detector accepts)."""

    density: KernelDensity
    eta: torch.Tensor  # (C,) one threshold per class
    layers = ()  # it reads z only

    def __post_init__(self):
        if not isinstance(self.eta, torch.Tensor) or self.eta.shape != (self.density.num_classes,):
            raise ConfigError(f"η must be a tensor of one threshold per class ({self.density.num_classes}), got "
                              f"{getattr(self.eta, 'shape', type(self.eta).__name__)}")

    @property
    def num_classes(self) -> int:
        return self.density.num_classes

    def to(self, device) -> KDTerm:
        return KDTerm(self.density if self.density.device == torch.device(device) else self.density.to(device),
                      self.eta.to(device, torch.float32))

    def margin(self, view: View, classes: torch.Tensor) -> torch.Tensor:
        return -self.density.log_kd(view.z, classes) - self.eta[classes]


@register
@with_settings
class KDensity(Metric):
    """K-density: ``per_class`` kernel points per true class (or ``"all"``), bandwidth ``sigma2`` (None = the
    paper's for the model's objective, ``"auto"`` = maximum held-out likelihood, or a number), ``seed``, and
    ``attack_per_class`` of them for the attack term."""

    name, label = "kd", "K-density"
    needs_fit = in_paper = True

    per_class: int | str = setting(PER_CLASS, lo=1, choices=("all",))
    sigma2: float | str | None = setting(None, lo=0, lo_open=True, choices=("auto",), hint=" (None: the paper's)")
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    attack_per_class: int = setting(ATTACK_PER_CLASS, lo=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.density: KernelDensity | None = None
        self.bandwidth_selection: BandwidthSelection | None = None
        self.attack_density: KernelDensity | None = None
        self.eta: torch.Tensor | None = None

    @property
    def fitted(self) -> bool:
        return self.density is not None

    def fit(self, data: FitData) -> KDensity:
        """Kernel points from the training features by TRUE label, σ², the attack subset and η (protocol §4.2-4.4)."""
        bank, num_classes, objective = data.bank, data.num_classes, data.objective
        if bank.labels is None:
            raise InputError("fitting the K-density detector needs the true training labels")
        labels = bank.labels.cpu()
        sigma2, self.bandwidth_selection = resolve_sigma2(self.sigma2, objective, bank.features, labels, num_classes,
                                                          per_class=self.per_class, seed=self.seed)
        self.density = KernelDensity.fit(bank.features, labels, num_classes, per_class=self.per_class,
                                         sigma2=sigma2, seed=self.seed, warn=False)
        counts = self.density.counts.tolist()
        if self.per_class != "all" and min(counts) < self.per_class:  # one short line: the same for the same data,
            short = sum(n < self.per_class for n in counts)  # so Python's default filter says it once per run
            warnings.warn(f"K-density: fewer training features than per_class={self.per_class} in {short} of "
                          f"{len(counts)} classes (the smallest has {min(counts)}); using all of them", stacklevel=2)
        attack_k = self.attack_per_class if self.per_class == "all" else min(self.attack_per_class, self.per_class)
        # a class short of attack_k was short of per_class too, which the fit has said already
        self.attack_density = self.density.subset(attack_k, seed=self.seed + 1, warn=self.per_class == "all")
        self.eta = self.attack_density.eta(bank.features, labels)
        return self

    def _need_fit(self) -> KernelDensity:
        if self.density is None:
            raise NotFittedError("the K-density detector is not fitted; call fit on training features first")
        return self.density

    def to(self, device) -> KDensity:
        density = self._need_fit()
        if density.device != torch.device(device):
            self.density = density.to(device)
            if self.attack_density is not None:
                self.attack_density = self.attack_density.to(device)
        return self

    def score(self, view: View) -> torch.Tensor:
        """−log KD(z) against the kernel of the predicted class (protocol §4.3)."""
        return -self._need_fit().log_kd(view.z, view.logits.argmax(1))

    @staticmethod
    def log_kd(scores: torch.Tensor) -> torch.Tensor:
        """log KD back from this detector's scores (the histograms of paper Appendix B.3 plot log KD)."""
        return -scores

    def term(self, threshold: float | None = None):
        """The paper's attack term (subset kernel and η per class, protocol §4.4) when ``threshold`` is None; with a
        calibrated threshold T, the generic term score − T (the detector as deployed)."""
        self._need_fit()
        if threshold is not None:
            return super().term(threshold)
        if self.attack_density is None or self.eta is None:
            raise NotFittedError("this K-density detector has no attack term (loaded from an older file?); refit it")
        return KDTerm(self.attack_density, self.eta)

    def save(self, directory: Path) -> dict[str, Any]:
        density = self._need_fit()
        density.save(directory / "kd.safetensors")
        sel = self.bandwidth_selection
        info: dict[str, Any] = {"sigma2": density.sigma2, "bandwidth_selection": asdict(sel) if sel else None}
        if self.attack_density is not None:
            self.attack_density.save(directory / "kd_attack.safetensors")
            info["eta"] = self.eta.tolist()
        return info

    def load(self, directory: Path, info: dict[str, Any], device) -> KDensity:
        self.density = KernelDensity.load(directory / "kd.safetensors", device=device)
        if (directory / "kd_attack.safetensors").is_file() and info.get("eta") is not None:
            self.attack_density = KernelDensity.load(directory / "kd_attack.safetensors", device=device)
            self.eta = torch.tensor(info["eta"], dtype=torch.float32)  # not numbers: Detector.load says so
            if self.eta.shape != (self.attack_density.num_classes,):
                raise CheckpointError(f"{directory} holds {len(self.eta)} η values for "
                                      f"{self.attack_density.num_classes} classes")
        sel = info.get("bandwidth_selection")
        if sel:
            self.bandwidth_selection = BandwidthSelection(**{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in sel.items()})
        return self
