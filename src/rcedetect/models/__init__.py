"""The model side: networks by name and the classifier around them, from the weights to the features.

- :mod:`.registry` (``create``, ``check_arch``, the ResNet presets), :mod:`.resnet` (the pre-activation
  ResNet-(6n+2)), :mod:`.external` (``torchvision:NAME`` / ``timm:NAME``), :mod:`.wrapping` (any image
  classifier behind the same interface, ``rcedetect.wrap``);
- :mod:`.losses` (CE and RCE), :mod:`.classifier` (``Classifier``: the network and the RCE logit sign),
  :mod:`.checkpoint` (a training run's weights and index on disk), :mod:`.features` (``FeatureBank``: final
  hidden vectors and intermediate layers, extracted and cached);
- here: :func:`from_config`, the network a training run starts from.

Layer: imports :mod:`rcedetect.core` only (the data, detectors, attacks and everything above import it).
"""

from __future__ import annotations

from ..core.errors import ConfigError
from .registry import PRESETS, check_arch, count_trainable, create, wrapped_options
from .resnet import PreActResNet


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
    from . import checkpoint

    meta = checkpoint.read_meta(run_dir)
    source = checkpoint.load(run_dir).classifier.net
    mine, theirs = net.state_dict(), source.state_dict()
    if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ConfigError(f"init={run_dir} holds a {meta['arch']} of {meta['num_classes']} classes and "
                          f"{meta['in_channels']} channel(s); it does not fit this model")
    net.load_state_dict(theirs)


__all__ = ["PRESETS", "PreActResNet", "check_arch", "count_trainable", "create", "from_config", "wrapped_options"]
