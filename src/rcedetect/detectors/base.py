"""The detector interface, its registry, and THE score convention: every score is "higher = more likely adversarial".

A detection metric (paper §3.3) is an object with

- ``fit(bank, num_classes, objective)``: learn what it needs from the features of clean training images (a
  :class:`~rcedetect.features.FeatureBank`); metrics that need nothing (confidence, non-ME) return at once;
- ``score(z, logits)``: the score of final hidden features ``z`` (N, D) whose effective logits are ``logits``
  (``classifier.logits_from_features(z)``), differentiable in both, higher = more likely adversarial;
- ``save(directory)`` / ``load(directory, info, settings, device)``: its fitted state (safetensors + JSON);
- ``term(threshold)``: a *detector term* for attacks (below).

Metrics register by name with :func:`register`; :func:`names` lists them in registration order, which is the order
of every table (the report and the CLI read it from here). Adding a detector is one file in this package.

A **detector term** is what a white-box attack optimises against (paper §4.4): ``margin(z, logits, classes)``,
differentiable, > 0 where the detector flags the input and ≤ 0 where it accepts it; ``classes`` is the class the
attacker wants (the target). :class:`ScoreTerm` is the generic one, score − threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..validation import check_features

#: name -> metric class, in registration order
REGISTRY: dict[str, type[Metric]] = {}


class Metric:
    """Base class of detection metrics (see the module docstring)."""

    name: ClassVar[str] = ""
    #: the column label of the report's tables
    label: ClassVar[str] = ""
    #: whether ``fit`` learns anything from training features (else the metric is ready when created)
    needs_fit: ClassVar[bool] = False

    def fit(self, bank, num_classes: int, objective: str) -> Metric:
        return self

    @property
    def fitted(self) -> bool:
        return True

    def score(self, z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device) -> Metric:
        return self

    def settings(self) -> dict[str, Any]:
        """The constructor settings (saved beside the fitted state)."""
        return {}

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the fitted state into ``directory`` (safetensors); return what goes into the detector's JSON."""
        return {}

    @classmethod
    def load(cls, directory: Path, info: dict[str, Any], settings: dict[str, Any], device) -> Metric:
        """The metric saved by :meth:`save` (``info`` = what it returned)."""
        return cls(**settings)

    def term(self, threshold: float) -> ScoreTerm:
        """The generic detector term: score − ``threshold`` (a calibrated T)."""
        return ScoreTerm(self, float(threshold))


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric constructible by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute name")
    REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """Every registered metric, in registration order (confidence, non_me, kd, ...)."""
    return tuple(REGISTRY)


def check_metric(metric: str) -> str:
    if metric not in REGISTRY:
        raise ConfigError(f"unknown detection metric {metric!r}; choose one of {', '.join(REGISTRY)}")
    return metric


def create(metric: str, **settings: Any) -> Metric:
    """A new, unfitted metric ``metric`` with ``settings`` (unknown names raise ConfigError)."""
    cls = REGISTRY[check_metric(metric)]
    try:
        return cls(**settings)
    except TypeError as e:
        raise ConfigError(f"bad settings for detector {metric!r}: {e}") from e


def ready_made() -> dict[str, Metric]:
    """{name: metric} of every registered metric that needs no fitting (confidence, non-ME, ...)."""
    return {name: cls() for name, cls in REGISTRY.items() if not cls.needs_fit}


def score_features(metric: Metric, classifier, z: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Scores of final hidden features ``z`` (N, D), batched on the classifier's device, without gradients;
    returned on the CPU."""
    check_features(z)
    device = classifier.device
    metric = metric.to(device)
    out = []
    with torch.no_grad():
        for i in range(0, len(z), batch_size):
            zb = z[i : i + batch_size].to(device, torch.float32)
            out.append(metric.score(zb, classifier.logits_from_features(zb)).cpu())
    return torch.cat(out) if out else torch.empty(0)


@dataclass(frozen=True)
class ScoreTerm:
    """Detector term score(z, logits) − T: flagged above the threshold T, accepted at or below it."""

    metric: Metric
    threshold: float

    def to(self, device) -> ScoreTerm:
        return ScoreTerm(self.metric.to(device), self.threshold)

    @property
    def density(self):
        """The metric's K-density kernel, where it has one (feature-space attacks pull z toward its points)."""
        return getattr(self.metric, "density", None)

    def margin(self, z: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.metric.score(z, logits) - self.threshold
