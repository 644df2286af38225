"""Detectors of adversarial examples and THE score convention: every score is "higher = more likely adversarial".

- ``confidence``: −(max softmax probability)                       (SPEC §4.7)
- ``non_me``:     −(non-maximal entropy, paper eq. 1)              (SPEC §4.7)
- ``kd``:         −log K-density of z against the predicted class  (SPEC §4.3)

All three are computed from the final hidden features z (``classifier.logits_from_features(z)`` gives the
effective logits), so one feature pass serves every metric. This module is the only place that sets the
sign of a score; metrics and thresholds never flip it.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, InputError
from .baselines import confidence, non_me
from .kd import KernelDensity, default_sigma2, select_sigma2

METRICS = ("confidence", "non_me", "kd")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"unknown detection metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def scores_from_logits(metric: str, logits: torch.Tensor) -> torch.Tensor:
    """The confidence or non-ME score of effective logits (higher = more likely adversarial)."""
    if check_metric(metric) == "confidence":
        return -confidence(logits)
    if metric == "non_me":
        return -non_me(logits)
    raise ConfigError("the 'kd' score needs features and a KernelDensity; use scores_from_features")


def scores_from_features(metric: str, classifier, z: torch.Tensor, kd: KernelDensity | None = None,
                         batch_size: int = 4096) -> torch.Tensor:
    """Scores of final hidden features ``z`` (N, D), batched on the classifier's device; returned on the CPU.

    The K-density score uses the kernel of the class the classifier predicts from z (SPEC §4.3).
    """
    check_metric(metric)
    if metric == "kd" and kd is None:
        raise ConfigError("the 'kd' score needs a fitted KernelDensity (kd=...)")
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise InputError(f"features must be an (N, D) tensor, got {getattr(z, 'shape', type(z).__name__)}")
    device = classifier.device
    if kd is not None and kd.device != device:
        kd = kd.to(device)
    out = []
    with torch.no_grad():
        for i in range(0, len(z), batch_size):
            zb = z[i : i + batch_size].to(device, torch.float32)
            logits = classifier.logits_from_features(zb)
            if metric == "kd":
                out.append(-kd.log_kd(zb, logits.argmax(1)).cpu())
            else:
                out.append(scores_from_logits(metric, logits).cpu())
    return torch.cat(out) if out else torch.empty(0)


def scores(metric: str, classifier, x, kd: KernelDensity | None = None, batch_size: int = 500,
           progress: bool = False) -> torch.Tensor:
    """Scores (higher = more likely adversarial) of images ``x`` (float NCHW in [0, 1]) or of a FeatureBank."""
    from ..features import FeatureBank, extract

    check_metric(metric)
    bank = x if isinstance(x, FeatureBank) else extract(classifier, x, batch_size=batch_size, progress=progress)
    return scores_from_features(metric, classifier, bank.features, kd=kd)


from .threshold import NOT_SURE, Detector  # needs the functions above

__all__ = ["METRICS", "NOT_SURE", "Detector", "KernelDensity", "check_metric", "confidence", "default_sigma2", "non_me", "scores",
           "scores_from_features", "scores_from_logits", "select_sigma2"]
