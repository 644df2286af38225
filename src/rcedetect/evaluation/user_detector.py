"""The user's own detector as a metric of this package: any callable ``score(x) -> (n,)`` tensor, higher = more
adversarial (the convention of :mod:`rcedetect.detectors.base`), becomes a :class:`UserMetric`, so that
``ScoreTerm(UserMetric(score), T)`` is the detector term score(x) − T that the detector-aware attacks
(``pgd_detector``, ``selective_pgd``, ``orthogonal_pgd``, ``pgd_defended``, a library's attack on
:func:`~rcedetect.detectors.defended.defend`) descend, exactly as they do a registered metric's
(Carlini & Wagner 2017, "Adversarial examples are not easily detected": the attacker knows the detector).

The metric reads the images of its :class:`~rcedetect.detectors.base.View` (``needs_images``) and calls the user's
function on them, differentiably when the function is: a score built of ``argmax``, rounding or a step has no useful
input gradient, which :func:`rcedetect.evaluation.detector_sanity.gradient_status` detects, so the evaluation then
leans on its gradient-free attacks (Tramèr et al. 2020, "On adaptive attacks to adversarial example defenses").

:func:`resolve_callable` also takes ``"module:function"`` (the command line's ``--detector``); a function with a
parameter named ``classifier`` gets the classifier as that keyword argument.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import ClassVar

import torch

from ..core.errors import ConfigError, InputError
from ..detectors.base import Metric, View


def check_scores(s, n: int, who: str = "the detector's score") -> torch.Tensor:
    """``s`` must be a floating (n,) tensor of finite values; InputError naming what is wrong otherwise."""
    if not isinstance(s, torch.Tensor):
        raise InputError(f"{who} must return a torch.Tensor of shape ({n},), got {type(s).__name__}")
    if s.dim() != 1 or s.shape[0] != n:
        raise InputError(f"{who} must return one score per image, shape ({n},), got {tuple(s.shape)}")
    if not s.is_floating_point():
        raise InputError(f"{who} must return floating-point scores (higher = more adversarial), got dtype {s.dtype}; "
                         "convert with .float()")
    if n and not bool(torch.isfinite(s.detach()).all()):
        raise InputError(f"{who} returned NaN or infinite scores for {int((~torch.isfinite(s.detach())).sum())} of "
                         f"{n} images")
    return s


class UserMetric(Metric):
    """A user's ``score(x) -> (n,)`` as a :class:`~rcedetect.detectors.base.Metric` (not registered: it has no
    name in the tables); every call's output is checked (:func:`check_scores`)."""

    name: ClassVar[str] = "user"
    label: ClassVar[str] = "user's detector"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], description: str = ""):
        if not callable(fn):
            raise InputError(f"detector must be a registered metric name, 'module:function', a fitted Detector or a "
                             f"callable score(x), got {type(fn).__name__}")
        self.fn = fn
        self.description = description or getattr(fn, "__qualname__", None) or type(fn).__name__

    @property
    def needs_images(self) -> bool:
        return True

    def score(self, view: View) -> torch.Tensor:
        x = view.need_images(f"the detector {self.description}")
        s = self.fn(x)
        return check_scores(s, len(x), f"the detector {self.description}").to(torch.float32)


def resolve_callable(spec: str, classifier=None) -> tuple[Callable, str]:
    """``"module:function"`` -> (the function, its name); ConfigError when it does not import or is no function.
    A function with a ``classifier`` parameter gets ``classifier`` bound to it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"a detector of your own is given as module:function (e.g. mypkg.detect:score), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an ImportError, or any error the module raises while it is imported
        raise ConfigError(f"cannot import {module_name!r} for the detector {spec!r} ({type(e).__name__}: {e})") from e
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"module {module_name!r} has no {attr!r} (the detector {spec!r})")
    if not callable(fn):
        raise ConfigError(f"{spec} is a {type(fn).__name__}, not a function score(x)")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if classifier is not None and "classifier" in params:
        return (lambda x: fn(x, classifier=classifier)), spec
    return fn, spec
