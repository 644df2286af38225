"""Models by name: the package's ResNets (``create('resnet32', in_channels=1, num_classes=10)``) and any torchvision or
timm classifier (``create('torchvision:resnet18', 3, 10)``, :mod:`.external`)."""

from __future__ import annotations

from ..errors import ConfigError
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


def from_config(cfg, dataset):
    """The network a training run starts from: ``cfg.arch`` sized for ``dataset`` (channels, classes, image size),
    then the weights of ``cfg.weights`` (a local safetensors file, torchvision / timm models) and of ``cfg.init``
    (the checkpoint of an earlier run of the same architecture, e.g. a CE model fine-tuned with RCE)."""
    from . import external

    kw = {}
    if external.is_external(cfg.arch):
        kw = {**wrapped_options(cfg), "input_shape": dataset.image_shape}
    net = create(cfg.arch, in_channels=dataset.channels, num_classes=dataset.num_classes, dropout=cfg.dropout, **kw)
    if cfg.weights:
        if not external.is_external(cfg.arch):
            raise ConfigError(f"weights= loads a torchvision / timm model's weights; for {cfg.arch} use init=RUN_DIR")
        external.load_weights(net, cfg.weights)
    if cfg.init:
        load_init(net, cfg.init)
    return net


def load_init(net, run_dir) -> None:
    """Copy the weights of the checkpoint in ``run_dir`` into ``net`` (same architecture and class count)."""
    from .. import checkpoint

    meta = checkpoint.read_meta(run_dir)
    source = checkpoint.load(run_dir).classifier.net
    mine, theirs = net.state_dict(), source.state_dict()
    if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ConfigError(f"init={run_dir} holds a {meta['arch']} of {meta['num_classes']} classes and "
                          f"{meta['in_channels']} channel(s); it does not fit this model")
    net.load_state_dict(theirs)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["PRESETS", "PreActResNet", "check_arch", "count_trainable", "create", "from_config"]
