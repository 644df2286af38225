"""A thresholding detector: predict the label, or "NOT SURE" (-1) when the score exceeds T (paper §3.3).

The original code evaluates detectors by ROC-AUC only and fixes no threshold (protocol §4.5); here T is chosen
from clean held-out data alone, so that a share ``fpr`` of clean inputs is rejected
(:func:`rcedetect.stats.metrics.threshold_for_fpr`); higher scores are more likely adversarial.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..core import schemas
from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..core.io import read_json, write_json
from ..core.validation import check_model_input
from ..data.forms import as_images, as_labels
from ..models.features import FeatureBank, extract, feature_dim
from ..stats import metrics
from .base import FitData, Metric, check_metric, create, evaluating, observe, score_features, score_images

FORMAT = "rcedetect-detector"
NOT_SURE = -1
#: what detector.json records of a detector beside its metric: the threshold and how it was chosen, the images' shape
RECORD = ("threshold", "fpr", "n_calibration", "clean_rejection_rate", "input_shape")


class Detector:
    """``Detector(classifier, metric, **settings)``: a registered metric (``kd``, ``confidence``, ``non_me``, ...)
    with its settings (for ``kd`` those of :class:`~rcedetect.detectors.kd.KDensity`), a threshold T, and files.

    ``fit`` learns from training features (a no-op for confidence and non-ME); ``calibrate`` sets T; ``score``
    gives raw scores; ``predict`` gives labels with -1 = NOT SURE; ``attack_term`` gives the detector term that
    white-box attacks (C&W-wb) optimise against. Every method taking images also takes a :class:`FeatureBank`
    of them (features of this classifier).
    """

    def __init__(self, classifier, metric: str, *, batch_size: int = 500, progress: bool = False, **settings: Any):
        if classifier is None or not callable(getattr(classifier, "logits", None)):
            raise InputError(f"Detector needs an rcedetect Classifier, got {type(classifier).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.classifier, self.metric = classifier, check_metric(metric)
        self.scorer: Metric = create(metric, **settings).bind(classifier)
        self.batch_size, self.progress = batch_size, progress
        self.threshold: float | None = None  # T, chosen by calibrate at the share fpr of n_calibration clean images
        self.fpr: float | None = None
        self.n_calibration, self.clean_rejection_rate, self.extra, self._fitted = 0, None, {}, False
        self.input_shape: list[int] | None = None  # (C, H, W) of the images it was fitted on, where known

    def __repr__(self) -> str:
        """The metric, objective, fitted or not, the threshold and where it came from, the settings; no tensor."""
        src = (f" ({100 * self.fpr:g} % FPR on {self.n_calibration} clean images)" if self.fpr is not None
               and self.n_calibration else "")
        cal = "threshold=None (not calibrated)" if self.threshold is None else f"threshold={self.threshold:.4g}{src}"
        objective = str(getattr(self.classifier, "objective", "?")).upper()
        return (f"Detector(metric={self.metric!r}, classifier={objective}, fitted={self.fitted}, {cal}, "
                f"settings={self.scorer.settings()})")

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    @property
    def kd(self):
        """The fitted K-density kernel of a ``kd`` detector (None otherwise)."""
        return getattr(self.scorer, "density", None)

    @property
    def bandwidth_selection(self):
        return getattr(self.scorer, "bandwidth_selection", None)

    # -- inputs -----------------------------------------------------------------------------------------
    def _check_images(self, x) -> None:
        """Images in [0, 1] of the model's channels and size, and of the size this detector was fitted on."""
        check_model_input(self.classifier, x)
        if self.input_shape is not None and list(x.shape[1:]) != list(self.input_shape):
            raise InputError(f"x holds images of shape {tuple(x.shape[1:])} but this detector was fitted on "
                             f"{tuple(self.input_shape)}")

    def _bank(self, x, y: torch.Tensor | None = None) -> FeatureBank:
        if isinstance(x, FeatureBank):
            want = self.kd.dim if self.kd is not None else feature_dim(self.classifier)
            if x.dim != want:
                raise InputError(f"the feature bank holds {x.dim}-d features but this detector's classifier "
                                 f"has {want}-d ones (features of another model?)")
            return x
        self._check_images(x)
        return extract(self.classifier, x, y, batch_size=self.batch_size, progress=self.progress,
                       layers=self.scorer.layers)

    def _images(self, x):
        """Images in the package's form (:func:`~rcedetect.data.forms.as_images`); a FeatureBank as it is."""
        return x if isinstance(x, FeatureBank) else as_images(x, self.classifier.in_channels)

    def _scores(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, predictions) on the CPU of images or a FeatureBank."""
        x = self._images(x)
        if self.scorer.needs_images and not isinstance(x, FeatureBank):
            self._check_images(x)
            preds = self.classifier.predict_batched(x, self.batch_size)
            return score_images(self.scorer, self.classifier, x, self.batch_size), preds
        bank = self._bank(x)
        return score_features(self.scorer, self.classifier, bank), bank.predictions

    def _need_fit(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"the {self.metric} detector is not fitted; call fit(x_train, y_train) first")

    # -- stages -----------------------------------------------------------------------------------------
    def fit(self, x_train, y_train: torch.Tensor | None = None) -> Detector:
        """Fit the metric on training images or their FeatureBank (K-density: kernel points by TRUE label,
        protocol §4.2). Metrics that learn nothing accept ``fit(None)``. Metrics with a logistic regression
        (LID, Mahalanobis, KD+BU) need images: the last ``fit_images`` of them are the fitting split their
        adversarial examples are made from (protocol §15), the rest give the statistics."""
        if x_train is not None or self.scorer.needs_fit:
            if x_train is None:
                raise InputError(f"fitting the {self.metric} detector needs training images or their features")
            images = labels = None
            x_train, y_train = self._images(x_train), as_labels(y_train)
            self.input_shape = None  # a new fit may take other images
            if self.scorer.needs_fit_images:
                if isinstance(x_train, FeatureBank) or y_train is None:
                    raise InputError(f"fitting the {self.metric} detector needs training images and their labels "
                                     "(it makes adversarial examples of some of them), not cached features")
                k = self.scorer.fit_split_size(len(x_train))
                x_train, images = x_train[: len(x_train) - k], x_train[len(x_train) - k :]
                y_train, labels = y_train[: len(y_train) - k], y_train[len(y_train) - k :]
            bank = self._bank(x_train, y_train)
            if not isinstance(x_train, FeatureBank):
                self.input_shape = list(x_train.shape[1:])
            if y_train is not None:
                bank = replace(bank, labels=y_train.detach().cpu().to(torch.int64))
            self.scorer.fit(FitData(bank, self.classifier.num_classes, self.classifier.objective,
                                    self.classifier, images, labels))
            self.scorer.to(self.classifier.device)
        self._fitted, self.threshold = True, None  # a new fit invalidates any threshold
        return self

    def mark_fitted(self) -> Detector:
        """Declare the metric fitted by hand (``detector.scorer.fit(FitData(...))`` with a custom split)."""
        if not self.scorer.fitted:
            raise NotFittedError(f"the {self.metric} metric has not been fitted")
        self.scorer.to(self.classifier.device)
        self._fitted, self.threshold = True, None
        return self

    def score(self, x) -> torch.Tensor:
        """Raw scores on the CPU, higher = more likely adversarial."""
        self._need_fit()
        return self._scores(x)[0]

    def calibrate(self, x_clean, fpr: float = 0.05) -> Detector:
        """Choose T from clean held-out inputs only, so that the share ``fpr`` of them is rejected."""
        s = self.score(x_clean)
        if len(s) == 0:
            raise InputError("calibration needs at least one clean input")
        self.threshold = metrics.threshold_for_fpr(s, fpr)
        self.fpr, self.n_calibration = float(fpr), len(s)
        self.clean_rejection_rate = float((s > self.threshold).double().mean())
        return self

    def decide(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels with -1 = NOT SURE, scores), both on the CPU."""
        if not self.calibrated:
            raise NotFittedError(f"the {self.metric} detector has no threshold; call calibrate(x_clean) first")
        s, preds = self._scores(x)
        return torch.where(s > self.threshold, torch.full_like(preds, NOT_SURE), preds), s

    def predict(self, x) -> torch.Tensor:
        """The predicted label, or -1 (NOT SURE) where the score exceeds T."""
        return self.decide(x)[0]

    def attack_term(self):
        """The detector term a white-box attack optimises against (``margin(view, classes)`` ≤ 0 where this
        detector accepts): K-density's paper term (protocol §4.4), else score − T (needs :meth:`calibrate`)."""
        self._need_fit()
        if self.metric == "kd":
            return self.scorer.term()
        if not self.calibrated:
            raise NotFittedError(f"the {self.metric} detector term needs a threshold; call calibrate(x_clean) first")
        return self.scorer.term(self.threshold)

    def _check_layer_widths(self, directory: Path) -> None:
        """A detector fitted on other layers (another model with the same layer names) fails here, not later."""
        widths = self.scorer.layer_widths()
        if not widths or self.input_shape is None:  # a shape the schema checked, where known
            return
        with evaluating(self.classifier), torch.no_grad():
            probe = observe(self.classifier, torch.zeros(1, *self.input_shape, device=self.classifier.device),
                            self.scorer)
        for name, width in widths.items():
            got = probe.layer(name).shape[1]
            if got != width:
                raise CheckpointError(f"the detector in {directory} was fitted on {width}-wide activations of layer "
                                      f"{name!r}, but this model's are {got}-wide (another model?)")

    # -- files ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """``detector.json`` (metric, settings, fitted state, threshold, ``extra``) and the metric's tensors
        (for KD ``kd.safetensors`` and ``kd_attack.safetensors``); returns the JSON path."""
        self._need_fit()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "metric": self.metric, "objective": self.classifier.objective,
                "num_classes": self.classifier.num_classes, "feature_dim": feature_dim(self.classifier),
                "settings": self.scorer.settings(), "state": self.scorer.save(directory),
                **{k: getattr(self, k) for k in RECORD}, "extra": extra or {}}
        return write_json(directory / "detector.json", meta)

    @classmethod
    def load(cls, directory: str | Path, classifier) -> Detector:
        """Read a detector saved by :meth:`save` for ``classifier``."""
        directory = Path(directory)
        path = directory / "detector.json"
        meta = read_json(path, "detector file")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an rcedetect detector file")
        schemas.check(meta, schemas.DETECTOR, path, "detector file")
        try:  # (the schema checked the types of the fields read below)
            det = cls(classifier, meta["metric"], **meta["settings"])
        except (TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"{path} is inconsistent: {e}") from e
        if meta.get("objective") != classifier.objective or meta.get("num_classes") != classifier.num_classes:
            raise CheckpointError(f"the detector in {directory} was fitted for a {meta.get('objective')} model of "
                                  f"{meta.get('num_classes')} classes, not this {classifier.objective} model of "
                                  f"{classifier.num_classes}")
        try:
            det.scorer = det.scorer.load(directory, meta["state"], classifier.device)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the fitted state of the {meta['metric']} detector is inconsistent "
                                  f"({type(e).__name__}: {e})") from e
        if det.kd is not None and det.kd.dim != feature_dim(classifier):
            raise InputError(f"the detector in {directory} has {det.kd.dim}-d kernel points but the classifier's "
                             f"features are {feature_dim(classifier)}-d")
        for k in RECORD:
            setattr(det, k, meta.get(k))
        det._check_layer_widths(directory)
        det._fitted, det.n_calibration, det.extra = True, det.n_calibration or 0, meta.get("extra", {})
        return det
