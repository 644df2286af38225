"""The attack contract: settings on a frozen dataclass, the model at call time, per-example results back.

``attack(classifier, x, y) -> AttackResult``. Inputs are images in [0, 1]; outputs always stay in [0, 1];
the input tensor is never mutated; the classifier must be in eval mode. Attacks only see
``classifier.logits`` (the effective logits: -Z for RCE) and, when they have a ``detector`` field, a detector
term. Each attack also estimates its own cost, ``passes_per_image()`` (forward + backward passes of the model,
3 units each), which experiment runners use for time-left estimates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError, InputError
from ..core.settings import check_fields
from ..core.validation import check_labels, check_model_input


@dataclass
class AttackResult:
    """What every attack returns; all tensors are per example, on the input's device."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool
    target: torch.Tensor | None = None  # long, for targeted attacks
    iterations: torch.Tensor | None = None  # long, steps actually used per example
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    x: torch.Tensor | None = None  # the clean input (for distortions)

    @property
    def l2(self) -> torch.Tensor:
        """‖x − x*‖₂/√d on the paper's [0, 255] scale (protocol §7)."""
        return l2_distortion(self.x, self.x_adv)

    @property
    def linf(self) -> torch.Tensor:
        """max |x − x*| on the [0, 1] scale."""
        return (self.x_adv - self.x).flatten(1).abs().amax(1)

    def __len__(self) -> int:
        return len(self.x_adv)

    def __repr__(self) -> str:
        """Counts and shapes, never the tensors: ``AttackResult(8 images 1×28×28, 5 succeeded, mean L2 31.2)``."""
        n, k = len(self.x_adv), int(self.success.sum()) if self.success.numel() else 0
        shape = "×".join(map(str, self.x_adv.shape[1:]))
        parts = [f"{n} images {shape}".rstrip(), f"{k} succeeded"]
        if self.x is not None and k:
            parts.append(f"mean L2 {float(self.l2[self.success.bool()].mean()):.3g} of the successes ([0, 255] scale)")
        if self.target is not None:
            parts.append("targeted")
        return f"AttackResult({', '.join(parts)})"


class NoSuccessWarning(UserWarning):
    """An attack built with :func:`rcedetect.attacks.create` succeeded on none of the images it was given."""


#: set (to the attack's name) on an attack built through the public ``attacks.create``: its calls warn when
#: nothing succeeded
WARN_FLAG = "_warn_if_no_success"


def warn_when_called(attack, name: str):
    """Mark ``attack`` (built by the public :func:`rcedetect.attacks.create` as ``name``) so that a call whose
    result has no success warns (:class:`NoSuccessWarning`); the experiment runners build theirs unmarked, batch
    by batch."""
    object.__setattr__(attack, WARN_FLAG, name)
    return attack


def _checked_call(call):
    """``call`` (an attack's ``__call__``) followed by one cheap check: a marked attack whose result has images
    and no success warns once per call."""

    @functools.wraps(call)
    def checked(self, *args, **kwargs):
        res = call(self, *args, **kwargs)
        name = self.__dict__.get(WARN_FLAG)
        if name and isinstance(res, AttackResult) and res.success.numel() and not bool(res.success.any()):
            warnings.warn(f"attack {name!r} succeeded on none of its {len(res)} images: every adversarial image is "
                          "still classified right (or, against a detector, still rejected); raise its budget "
                          "(eps, steps, max_iterations, learning_rate) or check the labels",
                          NoSuccessWarning, stacklevel=2)
        return res

    checked.checks_success = True
    return checked


def l2_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-example ‖x − x*‖₂/√d × 255: the distortion of paper Fig. 2b and Table 3."""
    return (x_adv - x).flatten(1).pow(2).mean(1).sqrt() * 255.0


def prepare(classifier, x: torch.Tensor, y: torch.Tensor | None, need_label: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the call (eval mode, images, labels) and return detached copies on the classifier's device; y
    defaults to the clean prediction (one forward pass), or stays None when ``need_label`` is False."""
    check_model_input(classifier, x)
    if getattr(classifier, "training", False):
        raise InputError(
            "the classifier is in training mode; call classifier.eval() before attacking "
            "(BatchNorm would use batch statistics and the attack would change the model)"
        )
    device = classifier.device
    x = x.detach().to(device, torch.float32).clone()
    if y is None:
        if need_label:
            with torch.no_grad():
                y = classifier.logits(x).argmax(1)
    else:
        check_labels(y, len(x), classifier.num_classes)
        y = y.to(device)
    return x, y


def seeded_generator(seed: int, device: torch.device | None = None) -> torch.Generator:
    """A CPU generator for attack randomness (the same seed gives the same draws on any device)."""
    return torch.Generator().manual_seed(int(seed))


def check_number(value, name: str, bound: str = ">= 0") -> float:
    """A finite number, ``bound`` ">= 0", "> 0" or "" (any)."""
    finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not finite or (bound == ">= 0" and value < 0) or (bound == "> 0" and value <= 0):
        raise ConfigError(f"{name} must be a finite number{' ' + bound if bound else ''}, got {value!r}")
    return float(value)


def check_eps(eps: float, name: str = "eps", norm: str = "linf") -> float:
    """A finite budget >= 0; at most 1 for an L∞ budget (images are in [0, 1]: more changes nothing)."""
    check_number(eps, name)
    if norm == "linf" and eps > 1:
        raise ConfigError(f"{name} is an L∞ budget on the [0, 1] image scale and must be <= 1, got {eps!r}")
    return float(eps)


def check_seed(seed: int, name: str = "seed") -> int:
    from ..core.settings import SEED_RANGE

    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(f"{name} must be an integer in [0, {SEED_RANGE[1]}], got {str(seed)[:40]!r}")
    return seed


def check_steps(steps: int, name: str = "steps", hint: str = "") -> int:
    """An integer >= 1 (``hint``: what it counts, in the message)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{name} must be an integer >= 1{hint}, got {steps!r}")
    return steps


def check_choice(value, name: str, choices: tuple, hint: str = ""):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}{hint}, got {value!r}")
    return value


def check_common(attack) -> None:
    """The checks every attack shares: its budget ``eps`` (L∞ unless its ``norm`` says L2) and its ``seed``."""
    if hasattr(attack, "eps"):
        check_eps(attack.eps, norm=getattr(attack, "norm", "linf"))
    if hasattr(attack, "seed"):
        check_seed(attack.seed)


class Attack:
    """The root of the attack dataclasses: their ``__post_init__`` chains (``super().__post_init__()``) down to
    here, :func:`check_common`."""

    def __post_init__(self):
        check_fields(self)
        check_common(self)


def check_term(detector) -> None:
    """A detector term is any object with ``margin(view, classes)`` (and ``layers``, the layers it reads)."""
    if detector is None or not callable(getattr(detector, "margin", None)):
        raise ConfigError("detector must be a detector term with margin(view, classes) "
                          "(e.g. rcedetect.detectors.Detector(...).attack_term())")


def place_term(detector, classifier):
    """The term on the classifier's device, after checking that it is for the classifier's classes."""
    term_classes = getattr(detector, "num_classes", None)
    if term_classes is not None and term_classes != classifier.num_classes:
        raise ConfigError(f"the detector term is for {term_classes} classes but the classifier has "
                          f"{classifier.num_classes}")
    return detector.to(classifier.device) if callable(getattr(detector, "to", None)) else detector


def begin(attack, classifier, x: torch.Tensor, y: torch.Tensor | None):
    """(prepared x, its clean prediction, the detector term on the classifier's device): how every attack on a
    detector starts."""
    x, _ = prepare(classifier, x, y, need_label=False)
    return x, predict(classifier, x), place_term(attack.detector, classifier)


@torch.no_grad()
def predict(classifier, x: torch.Tensor) -> torch.Tensor:
    return classifier.logits(x).argmax(1)


def finish(x_in: torch.Tensor, x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor,
           iterations: torch.Tensor, target: torch.Tensor | None = None, **extra: torch.Tensor) -> AttackResult:
    """Package the result on the device of the caller's input tensor."""
    dev = x_in.device
    return AttackResult(
        x_adv=x_adv.to(dev), success=success.to(dev), target=None if target is None else target.to(dev),
        iterations=iterations.to(dev), extra={k: v.to(dev) for k, v in extra.items()}, x=x.to(dev),
    )


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its dataclass, preset values, and the traits read off the dataclass's fields.

    An attack declares what it takes by its fields: ``eps`` (an L∞ budget, run over an ε grid), ``seed`` (its
    randomness; experiment runners give each batch its own seed), ``detector`` (a detector term with
    ``margin(view, classes)``, see :mod:`rcedetect.detectors.base`). ``requires`` names fields that the preset
    makes mandatory although the class gives them a default (C&W-wb needs the ``detector`` that C&W-L2 may omit).
    """

    name: str
    cls: type
    defaults: tuple[tuple[str, Any], ...] = ()
    requires: tuple[str, ...] = ()

    @property
    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.cls)}

    @property
    def takes_eps(self) -> bool:
        return "eps" in self.fields

    @property
    def seeded(self) -> bool:
        return "seed" in self.fields

    @property
    def bounded(self) -> bool:
        """True when ``eps`` bounds ‖x* − x‖ in the attack's ``norm`` (L∞ without one); an attack whose ε is
        something else says so with a class attribute ``eps_bounds = False`` (JSMA: the step of a raised feature)."""
        return self.takes_eps and getattr(self.cls, "eps_bounds", True)

    @property
    def required(self) -> tuple[str, ...]:
        """Settings without which the attack cannot be built."""
        preset = dict(self.defaults)
        bare = tuple(n for n, f in self.fields.items() if f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING and n not in preset)
        return bare + tuple(r for r in self.requires if r not in bare)

    @property
    def needs_detector(self) -> bool:
        """True when the attack optimises against a detector term (white-box against the detector)."""
        return "detector" in self.required

    def create(self, **settings: Any):
        unknown = sorted(set(settings) - set(self.fields))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown} for attack {self.name!r}; "
                              f"known: {', '.join(sorted(self.fields))}")
        missing = [r for r in self.required if settings.get(r, dict(self.defaults).get(r)) is None]
        if missing:
            raise ConfigError(f"attack {self.name!r} needs {', '.join(missing)}"
                              + (" (a detector term, e.g. Detector.attack_term())" if "detector" in missing else ""))
        try:
            return self.cls(**{**dict(self.defaults), **settings})
        except TypeError as e:
            raise ConfigError(f"bad settings for attack {self.name!r}: {e}") from e


#: name -> AttackSpec
REGISTRY: dict[str, AttackSpec] = {}


def register(name: str, *, requires: tuple[str, ...] = (), **defaults: Any):
    """Class decorator: make an attack dataclass constructible by ``name``, with preset ``defaults``."""

    def wrap(cls):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"attack {name!r} must be a dataclass")
        REGISTRY[name] = AttackSpec(name, cls, tuple(defaults.items()), tuple(requires))
        own = any("__call__" in vars(k) for k in cls.__mro__[:-1])  # defined here or inherited, not type's
        if own and not getattr(cls.__call__, "checks_success", False):
            cls.__call__ = _checked_call(cls.__call__)
        return cls

    return wrap
