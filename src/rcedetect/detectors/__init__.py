"""Detectors of adversarial examples (paper §3): one interface, registered by name.

- ``confidence``: −(max softmax probability)                       (protocol §4.7)
- ``non_me``:     −(non-maximal entropy, paper eq. 1)              (protocol §4.7)
- ``kd``:         −log K-density of z against the predicted class  (protocol §4.3)

Every score is "higher = more likely adversarial" (:mod:`.base` sets that convention, metrics and thresholds
never flip it). All three are computed from the final hidden features z (``classifier.logits_from_features(z)``
gives the effective logits), so one feature pass serves every metric. :class:`Detector` adds a threshold
calibrated on clean data and the NOT SURE answer.
"""

from __future__ import annotations

import importlib
import pkgutil

from .bandwidth import BandwidthSelection, default_sigma2, resolve_sigma2, select_sigma2
from .base import (
    REGISTRY,
    Metric,
    ScoreTerm,
    check_metric,
    create,
    names,
    ready_made,
    register,
    score_features,
)
from .baselines import confidence, non_me
from .density import KernelDensity
from .kd import KDensity, KDTerm
from .threshold import NOT_SURE, Detector

for _m in pkgutil.iter_modules(__path__):  # every module registers its metrics on import (file-name order)
    importlib.import_module(f"{__name__}.{_m.name}")

#: the registered metrics, in the order of every table
METRICS = names()

__all__ = ["METRICS", "NOT_SURE", "REGISTRY", "BandwidthSelection", "Detector", "KDTerm", "KDensity",
           "KernelDensity", "Metric", "ScoreTerm", "check_metric", "confidence", "create", "default_sigma2",
           "names", "non_me", "ready_made", "register", "resolve_sigma2", "score_features", "select_sigma2"]
