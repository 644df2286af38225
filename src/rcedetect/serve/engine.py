"""The model side of the service: a run's classifier and its calibrated detectors, loaded once.

The detectors are the command line's (:func:`rcedetect.evaluation.calibrated.calibrated_detector`, cached in
``RUN_DIR/detector-<metric>/`` and shared with ``rce detect`` and ``rce calibrate``): the paper's three, and the
served metric if it is another (any registered detector); every answer carries all their scores, and the served
metric's threshold decides.

One model pass per micro-batch: the batch's features are extracted once (under ``torch.inference_mode``) and
every detector scores them, as :meth:`Detector.predict` does on the images; a detector that must see the images
(Mahalanobis with input pre-processing takes a gradient step on them) scores them outside inference mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.errors import RceError
from ..core.io import package_version
from ..core.validation import check_model_input
from ..detectors.threshold import NOT_SURE
from ..evaluation.calibrated import FitOptions
from ..models.features import extract
from .runs import ServedRun


@dataclass
class Batch:
    """The model's answer for a batch: labels (-1 = NOT SURE), the classifier's predictions, scores per metric."""

    labels: torch.Tensor
    predicted: torch.Tensor
    scores: dict[str, torch.Tensor]

    def rows(self, start: int, stop: int) -> Batch:
        return Batch(self.labels[start:stop], self.predicted[start:stop],
                     {m: s[start:stop] for m, s in self.scores.items()})


class Engine:
    def __init__(self, run: ServedRun, ckpt, detectors: dict, metric: str, test=None):
        self.run, self.ckpt, self.metric = run, ckpt, metric
        self.classifier = ckpt.classifier
        self.detectors = detectors  # {metric: calibrated Detector}, the served one among them
        self.detector = detectors[metric]
        self.shape = tuple(int(v) for v in self.detector.extra.get("image_shape") or self.classifier.input_shape)
        self.test = test  # (uint8 images, labels) of the test split, when the dataset could be read
        self._on_images = [m for m, d in detectors.items() if d.scorer.needs_images]
        self._on_bank = [m for m in detectors if m not in self._on_images]
        self._layers = sorted({n for m in self._on_bank for n in detectors[m].scorer.layers})

    @property
    def metrics(self) -> list[str]:
        """The metrics each answer scores: the paper's three, then the served one if it is another."""
        return list(self.detectors)

    def infer(self, x: torch.Tensor) -> Batch:
        """One model pass (called in the batcher's worker thread)."""
        check_model_input(self.classifier, x)
        with torch.inference_mode():
            bank = extract(self.classifier, x, batch_size=max(1, len(x)), layers=self._layers)
            out = {m: self._decide(m, bank) for m in self._on_bank}
        out.update((m, self._decide(m, x)) for m in self._on_images)  # gradients of the images: not inference mode
        return Batch(out[self.metric][0], bank.predictions, {m: out[m][1] for m in self.detectors})

    def _decide(self, m: str, inputs) -> tuple:
        """(labels, scores) of the served metric's detector, (None, scores) of another."""
        d = self.detectors[m]
        return d.decide(inputs) if m == self.metric else (None, d.score(inputs))

    def answer(self, b: Batch, images: torch.Tensor | None = None) -> list[dict]:
        """The JSON answer per image. NOT SURE is spelled as everywhere (the JSON of `rce detect` too): label null,
        accepted false, predicted = the classifier's own label."""
        scores = {m: s.tolist() for m, s in b.scores.items()}
        out = []
        for i, (lab, pred) in enumerate(zip(b.labels.tolist(), b.predicted.tolist())):
            r = {"label": None if lab == NOT_SURE else lab, "accepted": lab != NOT_SURE, "predicted": pred,
                 "scores": {m: s[i] if math.isfinite(s[i]) else None for m, s in scores.items()},
                 "threshold": self.detector.threshold, "metric": self.metric}
            if images is not None:
                r["image"] = images[i].tolist()
            out.append(r)
        return out

    def info(self) -> dict:
        meta, det = self.ckpt.meta, self.detector
        acc = (meta.get("metrics") or {}).get("test_accuracy")
        return {
            "model": self.run.name, "run_dir": str(self.run.model_dir), "arch": meta.get("arch"),
            "objective": self.classifier.objective, "dataset": det.extra.get("dataset", meta.get("dataset")),
            "num_classes": self.classifier.num_classes, "input_shape": list(self.shape),
            "metric": self.metric, "threshold": det.threshold, "fpr": det.fpr,
            "clean_rejection_rate": det.clean_rejection_rate, "calibration": det.extra.get("calibration"),
            "clean_accuracy": acc, "sigma2": det.kd.sigma2 if det.kd is not None else None,
            "thresholds": {m: d.threshold for m, d in self.detectors.items()},
            "metrics": self.metrics, "labels": {m: d.scorer.label for m, d in self.detectors.items()},
            "device": str(self.classifier.device), "version": package_version(),
        }


def served_metrics(metric: str) -> tuple[str, ...]:
    """The detectors built for ``metric``: the paper's three, and ``metric`` if it is another."""
    from ..detectors import paper_metrics

    paper = paper_metrics()
    return paper if metric in paper else (*paper, metric)


def load(run: ServedRun, metric: str, opts: FitOptions, device: str = "auto",
         before_fit: Callable[[object], None] | None = None) -> Engine:
    """The classifier of ``run`` on ``device`` and its calibrated detectors for ``metric`` (fitted with ``opts`` and
    cached on first use); ``before_fit(checkpoint)`` runs once the model is loaded, before any detector is fitted."""
    from .. import data
    from ..core.device import resolve
    from ..evaluation.calibrated import calibrated_detector
    from ..models import checkpoint

    ckpt = checkpoint.load(run.model_dir, device=resolve(device))
    if before_fit is not None:
        before_fit(ckpt)
    detectors = {m: calibrated_detector(ckpt, run.model_dir, m, opts) for m in served_metrics(metric)}
    test = None
    try:
        ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), data_dir=opts.data_dir,
                               data_file=opts.data_file, download=False, model=ckpt.classifier)
        test = (ds.x_test, ds.y_test)
    except RceError:
        pass  # the page then offers no test images; everything else works
    return Engine(run, ckpt, detectors, metric, test)
