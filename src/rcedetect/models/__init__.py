"""Model presets by name: ``create('resnet32', in_channels=1, num_classes=10)``."""

from __future__ import annotations

from ..errors import ConfigError
from .resnet import PreActResNet

#: name -> number of residual units per stage (depth = 6n + 2)
PRESETS = {"resnet8": 1, "resnet14": 2, "resnet20": 3, "resnet32": 5, "resnet56": 9}


def create(name: str, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0) -> PreActResNet:
    """Build the pre-activation ResNet preset ``name`` (protocol §2); ``dropout`` > 0 is the dropout variant."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    return PreActResNet(PRESETS[name], in_channels=in_channels, num_classes=num_classes, dropout=dropout)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["PRESETS", "PreActResNet", "count_trainable", "create"]
