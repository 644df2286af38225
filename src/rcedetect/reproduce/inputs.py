"""The shared inputs of a reproduce run, loaded once and on demand: the dataset, the trained classifiers, the
attacked image pool, the cached feature banks and the fitted detectors."""

from __future__ import annotations

from typing import Any

import torch

from .. import data
from ..core.device import resolve
from ..core.errors import ConfigError, DataError
from ..detectors import REGISTRY, Detector, FitData, Metric, create, score_any
from ..evaluation import attack_store
from ..models import checkpoint, features
from .layout import Layout


def check_expected(ds: data.Dataset, exp) -> data.Dataset:
    """``ds`` if it has the channels and classes the preset expects (``experiment.channels`` / ``classes``, 0 = any),
    else :class:`DataError` naming both: a 1-channel file given to a CIFAR preset fails here, before training."""
    where = f"dataset {ds.name!r}"
    if exp.channels and ds.channels != exp.channels:
        raise DataError(f"{where} has {ds.channels}-channel images but this preset expects {exp.channels} "
                        f"(experiment.channels); give it a file of {exp.channels}-channel images")
    if exp.classes and ds.num_classes != exp.classes:
        raise DataError(f"{where} has labels 0..{ds.num_classes - 1} ({ds.num_classes} classes) but this preset "
                        f"expects {exp.classes} classes (experiment.classes)")
    return ds


class Inputs:
    """``same_data``: another replicate's inputs (:mod:`.replicates`) whose dataset this one reads, loaded once."""

    def __init__(self, layout: Layout, same_data: Inputs | None = None):
        self.layout, self.plan = layout, layout.plan
        self._same_data = same_data
        self.device = resolve(self.plan.experiment.device)
        self._dataset: data.Dataset | None = None
        self._classifiers: dict[str, Any] = {}
        self._detectors: dict[str, dict[str, Metric]] = {}
        self._heldout: dict[str, dict[str, torch.Tensor]] = {}
        self._pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def dataset(self) -> data.Dataset:
        if self._dataset is None and self._same_data is not None:
            self._dataset = self._same_data.dataset()
        if self._dataset is None:
            tc = next(iter(self.plan.models.values())).train
            self._dataset = check_expected(data.load(tc.dataset, data_dir=tc.data_dir or None,
                                                     data_file=tc.data_file or None), self.plan.experiment)
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
            bank, (x, _) = self.bank(name, "calibration"), self.calibration()
            self._heldout[name] = {m: score_any(d, self.classifier(name), bank, x)
                                   for m, d in self.detectors(name).items()}
        return self._heldout[name]

    def baselines(self, name: str) -> tuple[str, ...]:
        """The baseline detectors of model ``name`` (protocol §15): those of ``detector.baselines`` on a main model."""
        return self.plan.detector.baselines if name in self.plan.detected else ()

    def bank(self, name: str, kind: str) -> features.FeatureBank:
        """The cached features of the training images, the attack pool, the t-SNE images or the clean held-out
        images of model ``name`` (with the layers its baselines read)."""
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
        layers = self.layout.baseline_layers(name) if kind != "tsne" else ()  # the layers its baselines read
        return features.cached(self.classifier(name), x, y, self.layout.feature_path(name, kind),
                               batch_size=self.plan.experiment.batch_size, layers=layers)

    def pool_bank(self, name: str, n: int) -> features.FeatureBank:
        """The features of the first ``n`` pool images (the ones an attack of ``n`` images attacks)."""
        b = self.bank(name, "pool")
        return features.FeatureBank(b.features[:n], b.labels[:n], b.predictions[:n],
                                    {k: a[:n] for k, a in b.layers.items()})

    def fit_split(self, name: str, metric) -> tuple[int, int]:
        """(statistics rows, first training index of the fitting split) for a baseline: the fitting split is the
        last ``fit_images`` training images (at most half), the statistics the bank's images before it."""
        n_train = len(self.dataset().x_train)
        k = metric.fit_split_size(n_train)
        return min(len(self.bank(name, "train")), n_train - k), n_train - k

    def fit_detectors(self, name: str) -> None:
        """Fit the K-density detector on the training features (protocol §4.2-4.4) and every baseline on the
        training images before its fitting split, its regression on that split (protocol §15); save them."""
        clf, bank = self.classifier(name), self.bank(name, "train")
        Detector(clf, "kd", **self.layout.detector_settings(name)).fit(bank).save(self.layout.detector_dir(name, "kd"))
        ds = self.dataset()
        for metric in self.baselines(name):
            det = Detector(clf, metric, **self.layout.baseline_settings(name, metric))
            rows, start = self.fit_split(name, det.scorer)
            stats = features.FeatureBank(bank.features[:rows], bank.labels[:rows], bank.predictions[:rows],
                                         {k: a[:rows] for k, a in bank.layers.items()})
            det.scorer.fit(FitData(stats, clf.num_classes, clf.objective, clf, data.to_float(ds.x_train[start:]),
                                   ds.y_train[start:]))
            det.input_shape = list(ds.x_train.shape[1:])
            det.mark_fitted().save(self.layout.detector_dir(name, metric),
                                   extra={"statistics_images": rows, "fit_split_indices": [start, len(ds.x_train)]})

    def detectors_done(self, name: str) -> bool:
        return all((self.layout.detector_dir(name, m) / "detector.json").is_file()
                   for m in ("kd", *self.baselines(name)))

    def detectors(self, name: str) -> dict[str, Detector | Metric]:
        """{metric: fitted metric} of model ``name``: the paper's three, then its baselines (registry order)."""
        if name not in self._detectors:
            clf, out = self.classifier(name), {}
            for metric, cls in REGISTRY.items():
                if cls.in_paper or metric in self.baselines(name):
                    out[metric] = (Detector.load(self.layout.detector_dir(name, metric), clf).scorer
                                   if cls.needs_fit else create(metric))
            self._detectors[name] = out
        return self._detectors[name]
