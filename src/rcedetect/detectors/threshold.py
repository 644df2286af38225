"""A thresholding detector: predict the label, or "NOT SURE" (-1) when the score exceeds T (paper §3.2).

The original code evaluates detectors by ROC-AUC only and fixes no threshold (SPEC §4.5); here T is chosen
from clean held-out data alone, so that a chosen share ``fpr`` of clean inputs is rejected
(:func:`rcedetect.metrics.threshold_for_fpr`). Scores follow the package convention, higher = more likely
adversarial (:mod:`rcedetect.detectors`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import metrics
from ..errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..features import FeatureBank, extract, feature_dim
from ..io import read_json, write_json
from . import check_metric, scores_from_features
from .kd import BandwidthSelection, KernelDensity, default_sigma2, select_sigma2

FORMAT = "rcedetect-detector"
NOT_SURE = -1


class Detector:
    """``Detector(classifier, metric, per_class=1000, sigma2=None, seed=0)`` for metric kd / confidence / non_me.

    ``fit`` builds the K-density kernel from training features (the paper's 1000 per class; ``sigma2`` None
    means the paper's value for the classifier's objective, ``"auto"`` the maximum held-out likelihood choice of
    :func:`~rcedetect.detectors.kd.select_sigma2`, kept in ``bandwidth_selection``); confidence and non-ME need no fit but accept
    the call. ``calibrate`` sets T; ``score`` gives raw scores; ``predict`` gives labels with -1 = NOT SURE.
    Every method taking images also takes a :class:`FeatureBank` of them (features of this classifier).
    """

    def __init__(self, classifier, metric: str, *, per_class: int | str = 1000, sigma2: float | str | None = None,
                 seed: int = 0, batch_size: int = 500, progress: bool = False):
        self.classifier = classifier
        self.metric = check_metric(metric)
        self.per_class = per_class
        self.sigma2 = sigma2
        self.seed = int(seed)
        self.batch_size = batch_size
        self.progress = progress
        self.kd: KernelDensity | None = None
        self.bandwidth_selection: BandwidthSelection | None = None
        self.threshold: float | None = None
        self.fpr: float | None = None
        self.n_calibration = 0
        self.clean_rejection_rate: float | None = None
        self.extra: dict[str, Any] = {}
        self._fitted = False

    def __repr__(self) -> str:
        return (f"Detector(metric={self.metric!r}, fitted={self.fitted}, threshold={self.threshold}, "
                f"kd={self.kd!r})")

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    # -- inputs -----------------------------------------------------------------------------------------
    def _bank(self, x, y: torch.Tensor | None = None) -> FeatureBank:
        if isinstance(x, FeatureBank):
            want = self.kd.dim if self.kd is not None else feature_dim(self.classifier)
            if x.dim != want:
                raise InputError(f"the feature bank holds {x.dim}-d features but this detector's classifier "
                                 f"has {want}-d ones (features of another model?)")
            return x
        return extract(self.classifier, x, y, batch_size=self.batch_size, progress=self.progress)

    def _need_fit(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"the {self.metric} detector is not fitted; call fit(x_train, y_train) first")

    # -- stages -----------------------------------------------------------------------------------------
    def fit(self, x_train, y_train: torch.Tensor | None = None) -> Detector:
        """KD: kernel points from the training features, by TRUE label (SPEC §4.2). Others: nothing to fit."""
        if self.metric == "kd":
            bank = self._bank(x_train, y_train)
            labels = y_train if y_train is not None else bank.labels
            if labels is None:
                raise InputError("fitting the K-density detector needs the true training labels (y_train)")
            if self.sigma2 == "auto":
                self.bandwidth_selection = select_sigma2(bank.features, labels.cpu(), self.classifier.num_classes,
                                                         per_class=self.per_class, seed=self.seed)
                sigma2 = self.bandwidth_selection.sigma2
            elif self.sigma2 is None:
                sigma2 = default_sigma2(self.classifier.objective)
            else:
                sigma2 = self.sigma2
            self.kd = KernelDensity.fit(bank.features, labels.cpu(), self.classifier.num_classes,
                                        per_class=self.per_class, sigma2=sigma2, seed=self.seed)
            self.kd = self.kd.to(self.classifier.device)
        self._fitted = True
        self.threshold = None  # a new fit invalidates any threshold
        return self

    def score(self, x) -> torch.Tensor:
        """Raw scores on the CPU, higher = more likely adversarial."""
        self._need_fit()
        return scores_from_features(self.metric, self.classifier, self._bank(x).features, kd=self.kd)

    def calibrate(self, x_clean, fpr: float = 0.05) -> Detector:
        """Choose T from clean held-out inputs only, so that the share ``fpr`` of them is rejected."""
        self._need_fit()
        s = self.score(x_clean)
        if len(s) == 0:
            raise InputError("calibration needs at least one clean input")
        self.threshold = metrics.threshold_for_fpr(s, fpr)
        self.fpr = float(fpr)
        self.n_calibration = len(s)
        self.clean_rejection_rate = float((s > self.threshold).double().mean())
        return self

    def decide(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels with -1 = NOT SURE, scores), both on the CPU."""
        if not self.calibrated:
            raise NotFittedError(f"the {self.metric} detector has no threshold; call calibrate(x_clean) first")
        bank = self._bank(x)
        s = scores_from_features(self.metric, self.classifier, bank.features, kd=self.kd)
        return torch.where(s > self.threshold, torch.full_like(bank.predictions, NOT_SURE), bank.predictions), s

    def predict(self, x) -> torch.Tensor:
        """The predicted label, or -1 (NOT SURE) where the score exceeds T."""
        return self.decide(x)[0]

    # -- files ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """``detector.json`` (settings, threshold, ``extra``) and, for KD, ``kd.safetensors``; returns the JSON path."""
        self._need_fit()
        directory = Path(directory)
        if self.kd is not None:
            self.kd.save(directory / "kd.safetensors")
        meta = {"format": FORMAT, "metric": self.metric, "objective": self.classifier.objective,
                "num_classes": self.classifier.num_classes, "feature_dim": feature_dim(self.classifier),
                "per_class": self.per_class, "sigma2_setting": self.sigma2,
                "sigma2": self.kd.sigma2 if self.kd is not None else None,
                "seed": self.seed, "threshold": self.threshold, "fpr": self.fpr,
                "n_calibration": self.n_calibration, "clean_rejection_rate": self.clean_rejection_rate,
                "bandwidth_selection": asdict(self.bandwidth_selection) if self.bandwidth_selection else None,
                "extra": extra or {}}
        return write_json(directory / "detector.json", meta)

    @classmethod
    def load(cls, directory: str | Path, classifier) -> Detector:
        """Read a detector saved by :meth:`save` for ``classifier``."""
        directory = Path(directory)
        meta = read_json(directory / "detector.json", "detector file")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{directory / 'detector.json'} is not an rcedetect detector file")
        try:
            det = cls(classifier, meta["metric"], per_class=meta["per_class"], sigma2=meta["sigma2_setting"],
                      seed=meta["seed"])
        except (KeyError, ConfigError) as e:
            raise CheckpointError(f"{directory / 'detector.json'} is inconsistent: {e}") from e
        if meta.get("objective") != classifier.objective or meta.get("num_classes") != classifier.num_classes:
            raise CheckpointError(f"the detector in {directory} was fitted for a {meta.get('objective')} model of "
                                  f"{meta.get('num_classes')} classes, not this {classifier.objective} model of "
                                  f"{classifier.num_classes}")
        if det.metric == "kd":
            det.kd = KernelDensity.load(directory / "kd.safetensors", device=classifier.device)
            if det.kd.dim != feature_dim(classifier):
                raise InputError(f"the detector in {directory} has {det.kd.dim}-d kernel points but the classifier's "
                                 f"features are {feature_dim(classifier)}-d")
        det._fitted = True
        det.threshold, det.fpr = meta.get("threshold"), meta.get("fpr")
        det.n_calibration = int(meta.get("n_calibration") or 0)
        det.clean_rejection_rate = meta.get("clean_rejection_rate")
        det.extra = meta.get("extra", {})
        sel = meta.get("bandwidth_selection")
        if sel:
            det.bandwidth_selection = BandwidthSelection(**{k: tuple(v) if isinstance(v, list) else v
                                                            for k, v in sel.items()})
        return det
