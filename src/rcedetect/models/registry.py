"""The networks by name: the package's pre-activation ResNet presets (``create('resnet32', in_channels=1,
num_classes=10)``) and any torchvision or timm classifier (``create('torchvision:resnet18', 3, 10)``,
:mod:`.external`)."""

from __future__ import annotations

from ..core.errors import ConfigError
from .resnet import PreActResNet

#: name -> number of residual units per stage (depth = 6n + 2)
PRESETS = {"resnet8": 1, "resnet14": 2, "resnet20": 3, "resnet32": 5, "resnet56": 9}


def check_arch(name: str) -> str:
    """``name`` if it names a model rcedetect can build (a preset, ``torchvision:NAME`` or ``timm:NAME``)."""
    from . import external

    if isinstance(name, str) and external.is_external(name):
        return external.check_name(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown arch {name!r}; choose one of {', '.join(PRESETS)}, or torchvision:NAME / "
                          "timm:NAME (e.g. torchvision:resnet18)")
    return name


def create(name: str, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0, **wrapped):
    """Build the pre-activation ResNet preset ``name`` (protocol §2); ``dropout`` > 0 is the dropout variant. A
    ``torchvision:`` / ``timm:`` name builds that model with random weights instead (``wrapped``: ``head``, ``mean``,
    ``std``, ``input_shape`` of :func:`rcedetect.models.external.create`)."""
    from . import external

    if isinstance(name, str) and external.is_external(name):
        if dropout:
            raise ConfigError(f"dropout applies to the package's ResNets, not to {name}")
        return external.create(name, in_channels, num_classes, **wrapped)
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    if any(v not in (None, "", [], ()) for v in wrapped.values()):
        raise ConfigError(f"{', '.join(sorted(wrapped))} apply to torchvision / timm models, not to {name}")
    return PreActResNet(PRESETS[name], in_channels=in_channels, num_classes=num_classes, dropout=dropout)


def wrapped_options(cfg) -> dict:
    """The :func:`create` options of a training config beyond the architecture (empty for the package's ResNets)."""
    return {"head": cfg.head or None, "mean": list(cfg.mean) or None, "std": list(cfg.std) or None}


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
