"""The K-density bandwidth σ²: the paper's fixed values, or chosen by maximum held-out likelihood.

:func:`resolve_sigma2` is the one place that turns a σ² setting into a number: ``None`` (the paper default
marker) gives the paper's value for the model's objective (protocol §4.3), ``"auto"`` the choice of
:func:`select_sigma2`, and a number itself.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError, InputError
from ..core.validation import check_features, check_labels
from .density import KernelDensity, check_sigma2

#: σ² of the original code and the paper's Table 2 caption (protocol §4.3).
SIGMA2 = {"ce": 1.0 / 0.26, "rce": 0.1 / 0.26}


def default_sigma2(objective: str) -> float:
    """The paper's bandwidth: 1/0.26 for a CE model, 0.1/0.26 for an RCE model (protocol §4.3)."""
    try:
        return SIGMA2[objective]
    except KeyError:
        raise ConfigError(f"no default K-density bandwidth for objective {objective!r}; "
                          f"choose one of {', '.join(SIGMA2)} or pass sigma2=...") from None


def resolve_sigma2(setting: float | str | None, objective: str, features: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, num_classes: int | None = None,
                   per_class: int | str = 1000, seed: int = 0) -> tuple[float, BandwidthSelection | None]:
    """(σ², the bandwidth selection if one was run) for a σ² ``setting`` (module docstring); ``"auto"`` needs
    ``features``, ``labels`` and ``num_classes``."""
    if setting is None:
        return default_sigma2(objective), None
    if setting == "auto":
        if features is None or labels is None or num_classes is None:
            raise ConfigError("sigma2='auto' needs the training features, labels and num_classes")
        sel = select_sigma2(features, labels, num_classes, per_class=per_class, seed=seed)
        return sel.sigma2, sel
    if isinstance(setting, str):
        raise ConfigError(f"sigma2 must be a number, 'auto' or None (the paper's), got {setting!r}")
    return check_sigma2(setting), None


# -- automatic bandwidth --------------------------------------------------------------------------------
def log_density(kd: KernelDensity, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The normalised class-conditional log-likelihood log p(z | c) = log KD(z) − (D/2)·log(π σ²): the kernel
    exp(−d²/σ²) is a Gaussian of variance σ²/2 per dimension, so this equals scikit-learn's
    ``KernelDensity(bandwidth=sqrt(σ²/2)).score_samples``. The detector itself uses the unnormalised KD, as the
    original (protocol §4.3); only likelihood-based bandwidth selection needs the constant."""
    return kd.log_kd(z, classes) - 0.5 * kd.dim * math.log(math.pi * kd.sigma2)


@dataclass(frozen=True)
class BandwidthSelection:
    """Result of :func:`select_sigma2`: the chosen σ², each candidate's mean held-out log-likelihood, and
    the best candidate of each class taken alone."""

    sigma2: float
    candidates: tuple[float, ...]
    mean_log_likelihood: tuple[float, ...]
    per_class_sigma2: tuple[float, ...]


def select_sigma2(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  candidates=None, holdout: float = 0.2, per_class: int | str = 1000,
                  seed: int = 0) -> BandwidthSelection:
    """Choose σ² by maximum held-out log-likelihood of the class-conditional densities (an option beside the
    paper's fixed σ², protocol "Decisions"). Each class's features are split (seeded) into kernel points (at most
    ``per_class``) and a held-out share ``holdout``; for each candidate, the held-out points are scored against
    their own class's kernel with the Gaussian normalising constant (:func:`log_density`), and the candidate with
    the largest mean log-likelihood over all held-out points wins. Default candidates: 26 from 1e-3 to 1e2.
    """
    features = check_features(features, None, "features")
    check_labels(labels, len(features), num_classes, name="labels")
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    if candidates is None:
        candidates = torch.logspace(-3, 2, 26, dtype=torch.float64).tolist()
    cands = [check_sigma2(c) for c in candidates]
    if not cands:
        raise ConfigError("select_sigma2 needs at least one candidate")
    labels = labels.cpu()
    g = torch.Generator().manual_seed(int(seed))
    chosen, held = [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = round(holdout * len(idx))
        if n_held < 1 or len(idx) - n_held < 1:
            raise InputError(f"class {c} has {len(idx)} features, too few to hold out a share of {holdout}")
        keep = idx[n_held:]
        chosen.append(keep if per_class == "all" else keep[:per_class])
        held.append(idx[:n_held])
    held_idx = torch.cat(held).to(features.device)
    zh, yh = features[held_idx], labels[held_idx.cpu()]
    base = KernelDensity._from_indices(features, chosen, cands[0])
    mean_ll, per_class_ll = [], []
    with torch.no_grad():
        for s in cands:
            ll = log_density(base.with_sigma2(s), zh, yh.to(zh.device)).double().cpu()
            mean_ll.append(float(ll.mean()))
            per_class_ll.append([float(ll[yh == c].mean()) for c in range(num_classes)])
    best = max(range(len(cands)), key=lambda i: mean_ll[i])
    if len(cands) > 1 and best in (0, len(cands) - 1):
        warnings.warn(f"the best bandwidth sigma2={cands[best]:.4g} is at the edge of the candidates; "
                      "widen the candidate range", stacklevel=2)
    per_class_best = tuple(cands[max(range(len(cands)), key=lambda i: per_class_ll[i][c])]
                           for c in range(num_classes))
    return BandwidthSelection(cands[best], tuple(cands), tuple(mean_ll), per_class_best)
