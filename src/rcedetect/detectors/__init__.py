"""Detectors of adversarial examples (paper §3): one interface, registered by name; the paper's three metrics

- ``confidence``: −(max softmax probability)                       (protocol §4.7)
- ``non_me``:     −(non-maximal entropy, paper eq. 1)              (protocol §4.7)
- ``kd``:         −log K-density of z against the predicted class  (protocol §4.3)

and baselines from other papers (protocol §15), each a logistic regression fit on a split never scored:

- ``kd_bu``:       K-density + Bayesian uncertainty of MC dropout  (Feinman et al. 2017)
- ``lid``:         local intrinsic dimensionality per layer        (Ma et al. 2018)
- ``mahalanobis``: tied-covariance Gaussian confidence per layer   (Lee et al. 2018)

Every score is "higher = more likely adversarial" (:mod:`.base`). A metric scores a :class:`View` of a batch, so
one forward pass serves every metric; :class:`Detector` adds a threshold calibrated on clean data and the NOT SURE
answer; :func:`defend` (:mod:`.defended`) puts a calibrated detector into the model as a K+1-th "reject" class.

Layer: above :mod:`rcedetect.models`; imports ``core``, ``stats`` and ``models``, and, deferred on purpose, the
attack by name that makes a combined detector's fitting split (:mod:`.combiner`): those attacks need no detector.
"""

from __future__ import annotations

import importlib
import pkgutil

from .bandwidth import BandwidthSelection, default_sigma2, resolve_sigma2, select_sigma2
from .base import (
    REGISTRY,
    FitData,
    Metric,
    ScoreTerm,
    View,
    check_metric,
    create,
    names,
    observe,
    paper_metrics,
    ready_made,
    register,
    score_any,
    score_features,
    score_images,
)
from .baselines import confidence, non_me
from .density import KernelDensity
from .kd import KDensity, KDTerm
from .threshold import NOT_SURE, Detector

for _m in pkgutil.iter_modules(__path__):  # every module registers its metrics on import (file-name order)
    importlib.import_module(f"{__name__}.{_m.name}")

#: the registered metrics, in the order of every table
METRICS = names()

__all__ = ["METRICS", "NOT_SURE", "REGISTRY", "BandwidthSelection", "Detector", "FitData", "KDTerm", "KDensity",
           "KernelDensity", "Metric", "ScoreTerm", "View", "check_metric", "confidence", "create", "default_sigma2",
           "names", "non_me", "observe", "paper_metrics", "ready_made", "register", "resolve_sigma2", "score_any",
           "score_features", "score_images", "select_sigma2"]
