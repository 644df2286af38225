"""The shared inputs of a reproduce run, loaded once and on demand: the dataset, the trained classifiers, the
attacked image pool, the cached feature banks and the fitted detectors."""

from __future__ import annotations

from typing import Any

import torch

from .. import attack_store, checkpoint, data, features
from ..detectors import REGISTRY, Detector, Metric, create, score_features
from ..device import resolve
from ..errors import ConfigError
from .layout import Layout


class Inputs:
    def __init__(self, layout: Layout):
        self.layout, self.plan = layout, layout.plan
        self.device = resolve(self.plan.experiment.device)
        self._dataset: data.Dataset | None = None
        self._classifiers: dict[str, Any] = {}
        self._detectors: dict[str, dict[str, Metric]] = {}
        self._heldout: dict[str, dict[str, torch.Tensor]] = {}
        self._pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def dataset(self) -> data.Dataset:
        if self._dataset is None:
            tc = next(iter(self.plan.models.values())).train
            self._dataset = data.load(tc.dataset, data_dir=tc.data_dir or None, data_file=tc.data_file or None)
        return self._dataset

    def classifier(self, name: str):
        if name not in self._classifiers:
            self._classifiers[name] = checkpoint.load(self.layout.model_dir(name), device=self.device).classifier
        return self._classifiers[name]

    def pool(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, test-set indices) of the attacked pool: a seeded random subset (protocol §5.1).
        Built once: every attack, record and sanity check reads it."""
        if self._pool is None:
            ds = self.dataset()
            idx = attack_store.choose_images(len(ds.x_test), self.layout.pool_size(), self.plan.experiment.seed)
            self._pool = (data.to_float(ds.x_test[idx]), ds.y_test[idx], idx)
        return self._pool

    def calibration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the clean held-out set: the test images right after the pool in the same seeded
        permutation, never attacked; detector thresholds are chosen on them alone (protocol §4.5)."""
        ds, k = self.dataset(), self.layout.calibration_size()
        if k < 1:
            raise ConfigError(f"the attack pool takes {self.layout.pool_size()} of the {len(ds.x_test)} test images, "
                              "leaving none to calibrate the detectors' thresholds; lower attacks.*.images")
        perm = attack_store.choose_images(len(ds.x_test), len(ds.x_test), self.plan.experiment.seed)
        idx = perm[self.layout.pool_size():][:k]
        return data.to_float(ds.x_test[idx]), ds.y_test[idx]

    def heldout_scores(self, name: str) -> dict[str, torch.Tensor]:
        """{metric: scores of the clean held-out images} of model ``name``: what every threshold is chosen on."""
        if name not in self._heldout:
            bank = self.bank(name, "calibration")
            self._heldout[name] = {m: score_features(d, self.classifier(name), bank.features)
                                   for m, d in self.detectors(name).items()}
        return self._heldout[name]

    def bank(self, name: str, kind: str) -> features.FeatureBank:
        """The cached features of the training images, the attack pool, the t-SNE images or the clean held-out
        images of model ``name``."""
        ds = self.dataset()
        if kind == "train":
            n = min(self.plan.experiment.train_feature_images, len(ds.x_train))
            x, y = data.to_float(ds.x_train[:n]), ds.y_train[:n]
        elif kind == "tsne":
            n = min(self.plan.experiment.tsne_images, len(ds.x_test))
            x, y = data.to_float(ds.x_test[:n]), ds.y_test[:n]
        elif kind == "calibration":
            x, y = self.calibration()
        else:
            x, y, _ = self.pool()
        return features.cached(self.classifier(name), x, y, self.layout.feature_path(name, kind),
                               batch_size=self.plan.experiment.batch_size)

    def pool_bank(self, name: str, n: int) -> features.FeatureBank:
        """The features of the first ``n`` pool images (the ones an attack of ``n`` images attacks)."""
        b = self.bank(name, "pool")
        return features.FeatureBank(b.features[:n], b.labels[:n], b.predictions[:n])

    def fit_detectors(self, name: str) -> None:
        """Fit every registered detector that learns from training features and save it (protocol §4.2-4.4)."""
        clf, bank = self.classifier(name), self.bank(name, "train")
        for metric, cls in REGISTRY.items():
            if cls.needs_fit:
                settings = self.layout.detector_settings(name) if metric == "kd" else {}
                Detector(clf, metric, **settings).fit(bank).save(self.layout.detector_dir(name, metric))

    def detectors_done(self, name: str) -> bool:
        return all((self.layout.detector_dir(name, m) / "detector.json").is_file()
                   for m, cls in REGISTRY.items() if cls.needs_fit)

    def detectors(self, name: str) -> dict[str, Detector | Metric]:
        """{metric: fitted metric} of model ``name``, in the registry's order."""
        if name not in self._detectors:
            clf, out = self.classifier(name), {}
            for metric, cls in REGISTRY.items():
                out[metric] = (Detector.load(self.layout.detector_dir(name, metric), clf).scorer if cls.needs_fit
                               else create(metric))
            self._detectors[name] = out
        return self._detectors[name]
