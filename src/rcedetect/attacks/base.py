"""The attack contract: settings on a frozen dataclass, the model at call time, per-example results back.

``attack(classifier, x, y) -> AttackResult``. Inputs are images in [0, 1]; outputs always stay in [0, 1];
the input tensor is never mutated; the classifier must be in eval mode. Attacks only see
``classifier.logits`` (the effective logits: -Z for RCE) and, for C&W-wb, a K-density detector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, InputError
from ..validation import check_images, check_labels


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
        """‖x − x*‖₂/√d on the paper's [0, 255] scale (SPEC §7)."""
        return l2_distortion(self.x, self.x_adv)

    @property
    def linf(self) -> torch.Tensor:
        """max |x − x*| on the [0, 1] scale."""
        return (self.x_adv - self.x).flatten(1).abs().amax(1)

    def __len__(self) -> int:
        return len(self.x_adv)


def l2_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-example ‖x − x*‖₂/√d × 255: the distortion of paper Fig. 2b and Table 3."""
    return (x_adv - x).flatten(1).pow(2).mean(1).sqrt() * 255.0


def prepare(classifier, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the call (eval mode, images, labels) and return detached copies on the classifier's device."""
    if getattr(classifier, "training", False):
        raise InputError(
            "the classifier is in training mode; call classifier.eval() before attacking "
            "(BatchNorm would use batch statistics and the attack would change the model)"
        )
    check_images(x, channels=getattr(classifier, "in_channels", None))
    device = classifier.device
    x = x.detach().to(device, torch.float32).clone()
    if y is None:
        with torch.no_grad():
            y = classifier.logits(x).argmax(1)
    else:
        check_labels(y, len(x), classifier.num_classes)
        y = y.to(device)
    return x, y


def seeded_generator(seed: int, device: torch.device | None = None) -> torch.Generator:
    """A CPU generator for attack randomness (the same seed gives the same draws on any device)."""
    return torch.Generator().manual_seed(int(seed))


def check_eps(eps: float, name: str = "eps") -> float:
    if not isinstance(eps, (int, float)) or math.isnan(eps) or eps < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {eps!r}")
    return float(eps)


#: name -> factory(**settings) -> attack object
REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str):
    """Class/function decorator: make an attack (or preset) constructible by name."""

    def wrap(factory):
        REGISTRY[name] = factory
        return factory

    return wrap


def create(name: str, **settings: Any):
    """Build the attack registered as ``name`` with ``settings`` (unknown names and settings raise ConfigError)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**settings)
    except TypeError as e:
        raise ConfigError(f"bad settings for attack {name!r}: {e}") from e
