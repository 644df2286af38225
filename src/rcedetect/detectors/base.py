"""The detector interface, its registry, and THE score convention: every score is "higher = more likely adversarial".

A detection metric (paper §3.3) is a :class:`Metric`: it learns from clean training images (``fit``, a
:class:`FitData`) and scores a batch as the detector sees it (``score``, a :class:`View`: z, the effective logits,
the channel means of the ``layers`` it reads, the images where ``needs_images``), differentiably. A metric with
settings is a :data:`with_settings` dataclass, each setting a :func:`~rcedetect.core.settings.setting` field.
:func:`register` makes a metric constructible by name; :func:`names` lists them in registration order, the order of
every table (the report and the CLI read it from here). Adding a detector is one file in this package.

A **detector term** is what a white-box attack optimises against (paper §4.4): ``margin(view, classes)``,
differentiable, > 0 where the detector flags the input and ≤ 0 where it accepts it; ``classes`` is the class the
attacker wants (the target); its ``layers`` / ``needs_images`` say what :func:`observe` must put in the view.
:class:`ScoreTerm` is the generic one, score − threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..core.errors import ConfigError, InputError
from ..core.settings import check_fields
from ..core.validation import check_features, check_images
from ..models.classifier import FINAL
from ..models.features import FeatureBank, pool_activation

#: name -> metric class, in registration order
REGISTRY: dict[str, type[Metric]] = {}

#: how a metric declares its settings: keyword-only dataclass fields (compared by identity, the plain repr)
with_settings = dataclass(eq=False, repr=False, kw_only=True)


@dataclass(frozen=True, eq=False)
class View:
    """What a detector sees of a batch of N inputs: final hidden features ``z`` (N, D), effective ``logits``
    (N, L), the ``layers`` it asked for (name -> (N, C)), the images ``x`` (None when scored from cached
    features) and the ``classifier`` (for metrics that re-run its head, such as MC dropout)."""

    z: torch.Tensor
    logits: torch.Tensor
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    x: torch.Tensor | None = None
    classifier: Any = None

    def layer(self, name: str) -> torch.Tensor:
        """The (N, C) activations of ``name``; "final" is z."""
        if name == FINAL:
            return self.z
        if name not in self.layers:
            raise InputError(f"the detector needs layer {name!r} but was given only "
                             f"{', '.join([FINAL, *self.layers])}")
        return self.layers[name]

    def need_images(self, who: str) -> torch.Tensor:
        if self.x is None:
            raise InputError(f"{who} needs the input images, not cached features; score images instead")
        return self.x


@dataclass(frozen=True)
class FitData:
    """What a metric fits on: ``bank``, the features of clean training images with their true labels (and the
    layers the metric reads); for metrics that also fit a logistic regression, ``images``/``labels``: a separate
    split of clean training images (never attacked, never scored) from which the adversarial fitting examples
    are made; ``classifier``, ``num_classes`` and ``objective`` of the model."""

    bank: Any
    num_classes: int
    objective: str
    classifier: Any = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None


class Metric:
    """Base class of detection metrics (see the module docstring)."""

    name: ClassVar[str] = ""
    #: the column label of the report's tables
    label: ClassVar[str] = ""
    #: whether ``fit`` learns anything from training features (else the metric is ready when created)
    needs_fit: ClassVar[bool] = False
    #: whether ``fit`` also needs a split of training images (``FitData.images``) for its logistic regression
    needs_fit_images: ClassVar[bool] = False
    #: whether it is one of the paper's three metrics (the paper's tables show only those)
    in_paper: ClassVar[bool] = False
    #: intermediate layers it reads (resolved by ``bind``; "final" z and the logits are always in a view)
    layers: tuple[str, ...] = ()

    @property
    def needs_images(self) -> bool:
        """Whether it must see the images (it cannot score cached features)."""
        return False

    def __post_init__(self) -> None:  # (a with_settings metric) each setting's type and range
        check_fields(self)

    def bind(self, classifier) -> Metric:
        """Resolve the settings that depend on the classifier (e.g. its default layers); returns self."""
        return self

    def layer_widths(self) -> dict[str, int]:
        """{layer: the width C it was fitted on} (checked against a model when a detector is loaded)."""
        return {}

    def fit_split_size(self, n: int) -> int:
        """How many of ``n`` training images go to the fitting split (metrics with ``needs_fit_images``)."""
        return 0

    def fit(self, data: FitData) -> Metric:
        return self

    @property
    def fitted(self) -> bool:
        return True

    def score(self, view: View) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device) -> Metric:
        return self

    def settings(self) -> dict[str, Any]:
        """The constructor settings (saved beside the fitted state): the fields of a :data:`with_settings` one."""
        fields = dataclasses.fields(self) if dataclasses.is_dataclass(self) else ()
        return {f.name: getattr(self, f.name) for f in fields}

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the fitted state into ``directory`` (safetensors); return what goes into the detector's JSON."""
        return {}

    def load(self, directory: Path, info: dict[str, Any], device) -> Metric:
        """Read the fitted state :meth:`save` wrote (``info`` = what it returned) into this metric; returns self."""
        return self

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


def paper_metrics() -> tuple[str, ...]:
    """The paper's three metrics (``in_paper``), K-density first as the paper names them: kd, non_me, confidence
    (registered the other way round)."""
    return tuple(reversed([name for name, cls in REGISTRY.items() if cls.in_paper]))


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


def observe(classifier, x: torch.Tensor, needs=None) -> View:
    """The view of images ``x`` for ``needs`` (a metric or a detector term, or None for z and logits only): ONE
    forward pass capturing its layers, differentiable in ``x`` (what attacks call at every step)."""
    layers = tuple(getattr(needs, "layers", ()) or ())
    if layers:
        out = classifier.features(x, layers=[*layers, FINAL])
        z, acts = out[FINAL], {n: pool_activation(n, out[n]) for n in layers if n != FINAL}
    else:
        z, acts = classifier.features(x), {}
    return View(z, classifier.logits_from_features(z), acts, x, classifier)


def bank_view(classifier, z: torch.Tensor, layers: dict[str, torch.Tensor], rows: slice) -> View:
    """The view of ``rows`` of cached features ``z`` and ``layers`` (no images), on the classifier's device."""
    z = z[rows].to(classifier.device, torch.float32)
    layers = {n: a[rows].to(classifier.device, torch.float32) for n, a in layers.items()}
    return View(z, classifier.logits_from_features(z), layers, None, classifier)


@contextmanager
def evaluating(classifier):
    """``classifier`` in eval mode for the block, then back in the mode it was in."""
    was_training = classifier.training
    classifier.eval()
    try:
        yield classifier
    finally:
        classifier.train(was_training)


def batched(fn: Callable[[slice], torch.Tensor], n: int, batch: int, empty: torch.Tensor) -> torch.Tensor:
    """``fn(rows)`` of every slice of ``batch`` rows of ``n``, moved to the CPU and concatenated (``empty`` when
    n = 0)."""
    out = [fn(slice(i, i + batch)).detach().cpu() for i in range(0, n, batch)]
    return torch.cat(out) if out else empty


def score_features(metric: Metric, classifier, z, batch_size: int = 4096) -> torch.Tensor:
    """Scores of cached features, without gradients, batched on the classifier's device, returned on the CPU:
    ``z`` is the (N, D) final hidden features or a FeatureBank (which must hold the metric's layers)."""
    feats, layers = (z.features, z.layers) if isinstance(z, FeatureBank) else (z, {})
    check_features(feats)
    if metric.needs_images:
        raise InputError(f"the {metric.name} detector needs the images (input pre-processing), not cached "
                         "features; score images instead")
    missing = [n for n in metric.layers if n != FINAL and n not in layers]
    if missing:
        raise InputError(f"the {metric.name} detector reads layer(s) {', '.join(missing)}, which the cached "
                         "features lack; extract them with layers=...")
    metric = metric.to(classifier.device)
    with torch.no_grad():
        return batched(lambda rows: metric.score(bank_view(classifier, feats, layers, rows)), len(feats), batch_size,
                       torch.empty(0))


def score_images(metric: Metric, classifier, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Scores of images ``x`` (validated NCHW in [0, 1]) in eval mode, batched on the classifier's device,
    returned on the CPU, without gradients (input pre-processing turns them on for its own inner step)."""
    check_images(x, channels=getattr(classifier, "in_channels", None))
    metric = metric.to(classifier.device)
    with evaluating(classifier), torch.no_grad():
        return batched(lambda rows: metric.score(observe(classifier, x[rows].to(classifier.device, torch.float32),
                                                         metric)), len(x), batch_size, torch.empty(0))


def score_any(metric: Metric, classifier, bank=None, x: torch.Tensor | None = None) -> torch.Tensor:
    """Scores from the cached ``bank`` where the metric can use it, else from the images ``x``."""
    usable = bank is not None and not metric.needs_images and all(
        n == FINAL or n in bank.layers for n in metric.layers)
    if usable:
        return score_features(metric, classifier, bank)
    if x is None:
        raise InputError(f"the {metric.name} detector needs the images (or their layers), which were not given")
    return score_images(metric, classifier, x)


@dataclass(frozen=True)
class ScoreTerm:
    """Detector term score(view) − T: flagged above the threshold T, accepted at or below it."""

    metric: Metric
    threshold: float

    def to(self, device) -> ScoreTerm:
        return ScoreTerm(self.metric.to(device), self.threshold)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.metric.layers

    @property
    def density(self):
        """The metric's K-density kernel, where it has one (feature-space attacks pull z toward its points)."""
        return getattr(self.metric, "density", None)

    def margin(self, view: View, classes: torch.Tensor) -> torch.Tensor:
        return self.metric.score(view) - self.threshold
