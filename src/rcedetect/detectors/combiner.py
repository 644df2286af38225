"""Detectors that combine several raw features by a logistic regression (LID, Mahalanobis, KD+BU), and the
honest way to fit that regression (protocol §15).

Ma et al. 2018 (LID), Lee et al. 2018 (Mahalanobis) and Feinman et al. 2017 (KD+BU) each turn a few raw numbers
per input (one per layer, or KD and BU) into one score with a logistic regression on clean versus adversarial
examples. Their scripts fit it on the very attack they then report, which measures how well a detector can be
tuned to a known attack, not how it fares against an unseen one. Here it is fit on a **fitting split**: training
images never attacked in an evaluation nor scored, attacked by ``fit_on`` (an attack name, by default FGSM, or
``"noise"`` for the paper's random noise) at ``fit_eps``; every evaluated attack is then unseen data, and every
attack other than ``fit_on`` an unseen attack. :class:`CombinedMetric` is their base.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..core.errors import CheckpointError, ConfigError, InputError, NotFittedError
from ..core.io import load_tensors, save_tensors
from ..core.settings import SEED_RANGE, setting
from ..models.classifier import FINAL
from ..models.features import extract
from .base import FitData, Metric, View, bank_view, batched, evaluating, observe, with_settings

#: how many training images the fitting split takes by default
FIT_IMAGES = 1000
#: the attack and ε the regression is fit on by default (the paper's Table 2 ε for MNIST FGSM is 0.1-0.2)
FIT_ON, FIT_EPS = "fgsm", 0.1
#: images per pass when the raw features of a fitting split are computed
RAW_BATCH = 250


@dataclass(frozen=True)
class FitSplit:
    """Which examples the logistic regression saw: ``attack`` at ``eps`` on ``n_images`` training images, of
    which ``n_clean`` were classified correctly and ``n_adversarial`` became adversarial (misclassified; for
    noise: every clean-correct image)."""

    attack: str
    eps: float | None
    n_images: int
    n_clean: int
    n_adversarial: int


def fit_attack(name: str):
    """The spec of the attack ``name`` a regression may be fit on: a known one that needs no detector."""
    from .. import attacks

    spec = attacks.spec(name)
    if spec.needs_detector:
        raise ConfigError(f"fit_on={name!r} needs a detector; fit the regression on an attack without one")
    return spec


def adversarial_split(classifier, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float | None, seed: int,
                      batch: int = 100) -> tuple[torch.Tensor, torch.Tensor, FitSplit]:
    """(clean images, adversarial images, what was done) of the fitting split ``x``: the clean-correct images
    and the adversarial images that fool the classifier (all noise images of clean-correct inputs)."""
    from .. import attacks

    eps = eps if fit_attack(attack).takes_eps else None
    factory = attacks.attack_factory(attack, {}, eps, seed)
    x, y = x.float(), y.long()
    parts = []  # per batch: (clean-correct, fooled, adversarial images)
    for b, i in enumerate(range(0, len(x), batch)):
        xb, yb = x[i : i + batch], y[i : i + batch]
        res = factory(b)(classifier, xb.to(classifier.device), yb.to(classifier.device))
        with torch.no_grad():
            ok = classifier.predict(xb.to(classifier.device)).cpu() == yb
            pred_adv = classifier.predict(res.x_adv).cpu()
        parts.append((ok, ok if attack == "noise" else ok & (pred_adv != yb), res.x_adv.detach().cpu()))
    ok, fool, x_adv = (torch.cat(p) for p in zip(*parts))
    if int(ok.sum()) < 2 or int(fool.sum()) < 2:
        raise InputError(f"the fitting split gave {int(ok.sum())} clean-correct and {int(fool.sum())} adversarial "
                         f"examples of {attack} (ε {eps}); a logistic regression needs at least 2 of each: give "
                         "more fitting images or a stronger fit_on attack")
    return x[ok], x_adv[fool], FitSplit(attack, eps, len(x), int(ok.sum()), int(fool.sum()))


class LogisticCombiner:
    """logit = ((f − mean) / scale) · w + b: a standardised logistic regression over raw features f (N, F),
    fit with scikit-learn (L2, C = 1, lbfgs), evaluated in torch so that it is differentiable."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias

    @classmethod
    def fit(cls, f_clean: torch.Tensor, f_adv: torch.Tensor) -> LogisticCombiner:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        f = torch.cat([f_clean, f_adv]).double()
        if not bool(torch.isfinite(f).all()):
            raise InputError("the detector's raw features of the fitting split are not all finite")
        mean, scale = f.mean(0), f.std(0)
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))  # a constant feature gets weight ~0
        target = np.r_[np.zeros(len(f_clean)), np.ones(len(f_adv))]
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(((f - mean) / scale).numpy(), target)
        return cls(mean.float(), scale.float(), torch.tensor(lr.coef_[0], dtype=torch.float32),
                   torch.tensor(lr.intercept_, dtype=torch.float32))

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        dev = f.device
        return ((f - self.mean.to(dev)) / self.scale.to(dev)) @ self.weight.to(dev) + self.bias.to(dev)

    def to(self, device) -> LogisticCombiner:
        return LogisticCombiner(*(t.to(device) for t in (self.mean, self.scale, self.weight, self.bias)))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"lr.mean": self.mean, "lr.scale": self.scale, "lr.weight": self.weight, "lr.bias": self.bias}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], width: int, where: str) -> LogisticCombiner:
        try:
            parts = [t[f"lr.{k}"].float() for k in ("mean", "scale", "weight", "bias")]
        except KeyError as e:
            raise CheckpointError(f"{where} lacks the logistic regression tensor {e}") from e
        if any(p.shape != (width,) for p in parts[:3]) or parts[3].shape != (1,):
            raise CheckpointError(f"{where}: the logistic regression does not fit {width} features")
        return cls(*parts)


def raw_features(metric: CombinedMetric, classifier, x: torch.Tensor, batch: int = RAW_BATCH) -> torch.Tensor:
    """The raw features (N, F) of images ``x`` in eval mode, on the CPU."""
    with evaluating(classifier):
        bank = None if metric.needs_images else extract(classifier, x, batch_size=batch, layers=metric.layers)
        with torch.no_grad():  # (input pre-processing turns gradients on for its own inner step)
            return batched(lambda rows: metric.raw(
                observe(classifier, x[rows].to(classifier.device), metric) if bank is None
                else bank_view(classifier, bank.features, bank.layers, rows)),
                len(x), batch, torch.empty(0, len(metric.feature_names())))


@with_settings
class CombinedMetric(Metric):
    """Base of the logistic-regression detectors; settings ``fit_on``, ``fit_eps``, ``fit_images``, ``seed``.

    A subclass provides ``feature_names()``, ``fit_statistics(data)`` (its statistics of the clean training bank),
    the raw features ``raw(view)`` ((N, F), differentiable), and ``state_tensors()``, ``move_state(device)`` and
    ``load_state(tensors, info, where)`` of its statistics; the score is the regression's logit of the raw features.
    """

    needs_fit = needs_fit_images = True

    fit_on: str = FIT_ON
    fit_eps: float | None = setting(FIT_EPS, lo=0, lo_open=True, hi=1)
    fit_images: int = setting(FIT_IMAGES, lo=4)
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])

    def __post_init__(self) -> None:
        super().__post_init__()
        fit_attack(self.fit_on)
        self.combiner: LogisticCombiner | None = None
        self.split: FitSplit | None = None

    @property
    def fitted(self) -> bool:
        return self.combiner is not None

    def fit_split_size(self, n: int) -> int:
        """The fitting split: ``fit_images`` of the ``n`` training images, at most half of them."""
        return min(self.fit_images, n // 2)

    def fit(self, data: FitData) -> CombinedMetric:
        if data.images is None or data.labels is None or data.classifier is None:
            raise InputError(f"fitting the {self.name} detector needs a split of training images with labels")
        self.fit_statistics(data)
        self.to(data.classifier.device)  # the statistics live where the network runs
        x_clean, x_adv, self.split = adversarial_split(data.classifier, data.images, data.labels, self.fit_on,
                                                       self.fit_eps, self.seed)
        self.fit_combiner(data.classifier, x_clean, x_adv)
        return self

    def fit_combiner(self, classifier, x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
        self.combiner = LogisticCombiner.fit(raw_features(self, classifier, x_clean),
                                             raw_features(self, classifier, x_adv))

    def to(self, device) -> CombinedMetric:
        self.move_state(device)
        if self.combiner is not None:
            self.combiner = self.combiner.to(device)
        return self

    def _need_fit(self) -> LogisticCombiner:
        if self.combiner is None:
            raise NotFittedError(f"the {self.name} detector is not fitted; call fit on training images first")
        return self.combiner

    def score(self, view: View) -> torch.Tensor:
        """The logistic regression's logit of the raw features (higher = more likely adversarial)."""
        return self._need_fit()(self.raw(view))

    def save(self, directory: Path) -> dict[str, Any]:
        combiner = self._need_fit()
        save_tensors(Path(directory) / f"{self.name}.safetensors", {**self.state_tensors(), **combiner.tensors()})
        return {"features": self.feature_names(), "fit_split": asdict(self.split) if self.split else None,
                "weights": [round(float(w), 6) for w in combiner.weight]}

    def load(self, directory: Path, info: dict[str, Any], device) -> CombinedMetric:
        path = Path(directory) / f"{self.name}.safetensors"
        t = load_tensors(path, f"{self.name} detector")
        self.load_state(t, info, str(path))
        self.combiner = LogisticCombiner.from_tensors(t, len(self.feature_names()), str(path))
        split = info.get("fit_split")
        if isinstance(split, dict):
            try:
                self.split = FitSplit(**split)
            except TypeError as e:
                raise CheckpointError(f"{path}: bad fit_split record: {e}") from e
        return self.to(device)


@with_settings
class LayeredMetric(CombinedMetric):
    """A combined metric with one raw feature per layer; ``layers=None`` = every residual stage's output and
    the final hidden layer (:meth:`~rcedetect.models.classifier.Classifier.stage_names`), as Ma et al. and Lee et al.
    read every block. Its fitted statistics are per layer: for each (prefix, attribute) of ``per_layer``, the
    attribute is {layer: tensor}, saved as ``prefix.layer``."""

    per_layer: ClassVar[tuple[tuple[str, str], ...]] = ()

    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None and (not self.layers or not all(isinstance(n, str) for n in self.layers)):
            raise ConfigError(f"layers must be a non-empty list of layer names, got {list(self.layers)!r}")
        self._asked = self.layers is not None
        self.layers = tuple(dict.fromkeys(self.layers or ()))
        for _, attr in self.per_layer:
            setattr(self, attr, {})

    def bind(self, classifier) -> LayeredMetric:
        if not self._asked:
            self.layers = (*classifier.stage_names(), FINAL)
        valid = classifier.layer_names()
        unknown = [n for n in self.layers if n not in valid]
        if unknown:
            raise ConfigError(f"the {self.name} detector asks for layer(s) {', '.join(map(repr, unknown))}, which "
                              f"this model lacks; choose from {', '.join(valid)}")
        return self

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "layers": list(self.layers) or None}

    def feature_names(self) -> list[str]:
        return list(self.layers)

    def layer_widths(self) -> dict[str, int]:
        return {n: int(t.shape[1]) for n, t in getattr(self, self.per_layer[0][1]).items()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"{p}.{n}": t.cpu() for p, attr in self.per_layer for n, t in getattr(self, attr).items()}

    def move_state(self, device) -> None:
        for _, attr in self.per_layer:
            setattr(self, attr, {n: t.to(device) for n, t in getattr(self, attr).items()})

    def load_state(self, t: dict[str, torch.Tensor], info: dict[str, Any], where: str) -> None:
        missing = [n for n in self.layers if any(f"{p}.{n}" not in t for p, _ in self.per_layer)]
        if missing:
            raise CheckpointError(f"{where} lacks the {self.label} statistics of layer(s) {', '.join(missing)}")
        for p, attr in self.per_layer:
            setattr(self, attr, {n: t[f"{p}.{n}"].float() for n in self.layers})
