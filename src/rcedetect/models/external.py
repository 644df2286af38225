"""Models by name from torchvision or timm: ``torchvision:resnet18``, ``timm:resnet18`` (timm is an optional extra).

:func:`create` builds the architecture with random weights, ``num_classes`` outputs and the package's input
convention (images in [0, 1], normalised inside the classifier; 1-channel images repeated for a 3-channel model), and
wraps it in :class:`rcedetect.models.wrapping.Wrapped`. No hub is ever contacted: pretrained weights come only from a local
safetensors file (:func:`load_weights`), whose final layer is left freshly initialised when its class count differs
(fine-tuning to another label set).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.errors import ConfigError, DataError
from .wrapping import Wrapped

SOURCES = ("torchvision", "timm")
#: the normalisation of torchvision's ImageNet weights (every classification model of torchvision.models)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_external(name: str) -> bool:
    return isinstance(name, str) and ":" in name


def _split(name: str) -> tuple[str, str]:
    source, _, model = name.partition(":")
    if source not in SOURCES or not model:
        raise ConfigError(f"unknown model {name!r}; give torchvision:NAME or timm:NAME (e.g. torchvision:resnet18)")
    return source, model


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm models need the timm package: pip install 'rcedetect[timm]'") from None
    return timm


def check_name(name: str) -> str:
    """``name`` if its source knows the model (nothing is built or downloaded), else ConfigError."""
    source, model = _split(name)
    if source == "torchvision":
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if model not in known:
            close = [k for k in known if k.startswith(model[:4])][:6]
            raise ConfigError(f"torchvision has no classification model {model!r}"
                              + (f"; close: {', '.join(close)}" if close else ""))
    elif not _timm().is_model(model):
        raise ConfigError(f"timm has no model {model!r}; list them with timm.list_models()")
    return name


def create(name: str, in_channels: int = 3, num_classes: int = 10, *, head: str | None = None,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
           input_shape: Sequence[int] | None = None) -> Wrapped:
    """The model ``name`` with random weights and ``num_classes`` outputs, wrapped (the split checked on one probe
    image of ``input_shape`` when given). ``mean`` / ``std`` default to the ImageNet statistics for torchvision
    (what its weights expect) and to the model's own ``pretrained_cfg`` for timm."""
    source, model_name = _split(check_name(name))
    if source == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(model_name, weights=None, num_classes=int(num_classes))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"torchvision cannot build {model_name} with {num_classes} classes: {e}") from e
        if mean is None and std is None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        try:
            model = _timm().create_model(model_name, pretrained=False, num_classes=int(num_classes))
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"timm cannot build {model_name} with {num_classes} classes: {e}") from e
    return Wrapped(model, head, mean=mean, std=std, in_channels=in_channels, arch=name, input_shape=input_shape)


def load_weights(net: Wrapped, path: str | Path) -> dict[str, list[str]]:
    """Load the model's weights from a local safetensors file (the bare model's ``state_dict`` keys, e.g.
    ``conv1.weight``, or ``model.conv1.weight`` as rcedetect checkpoints hold them).

    The final linear layer is kept freshly initialised when its shape differs (another class count: fine-tuning);
    any other missing, unexpected or misshapen tensor is a ConfigError naming it. Returns ``{"skipped": [...]}``.
    """
    from ..core.io import load_tensors

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist")
    if path.suffix != ".safetensors":
        raise ConfigError(f"weights file {path} must be .safetensors (nothing is unpickled; convert a .pth with "
                          "safetensors.torch.save_file(torch.load(f, weights_only=True), out))")
    state = load_tensors(path, "weights")
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    own = net.model.state_dict()
    head = net.head_modules[0][len("model."):]
    skipped = []
    for key in [k for k in state if k.startswith(f"{head}.") and k in own and state[k].shape != own[k].shape]:
        skipped.append(key)
        del state[key]
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and state[k].shape != own[k].shape]
    for what, keys in (("lacks", missing), ("has unknown tensors", unexpected), ("has misshapen tensors", bad)):
        if keys:
            raise ConfigError(f"weights {path} do not fit {net.arch}: it {what} {', '.join(keys[:4])}"
                              + (f" (and {len(keys) - 4} more)" if len(keys) > 4 else ""))
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"weights {path}: {key} holds NaN or infinite values")
        if t.dtype != own[key].dtype:
            state[key] = t.to(own[key].dtype)
    for key in skipped:
        state[key] = own[key]
    net.model.load_state_dict(state, strict=True)
    return {"skipped": skipped}
