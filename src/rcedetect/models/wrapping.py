"""Any image classifier as an rcedetect :class:`~rcedetect.models.classifier.Classifier`: ``wrap(model, head="fc")``.

The paper's method needs one split: the final hidden layer z (what K-density reads, paper §3.3) and the last linear
layer, whose output Z the CE / RCE sign convention applies to (paper §3.2). :class:`Wrapped` finds that split in the
user's own network without copying it:

- by module name (``head="fc"`` for torchvision's ResNets, ``"classifier.6"`` for VGG, ``"classifier"`` for a
  ``Sequential`` ending in a linear layer): z is the input of that ``nn.Linear``, captured by a forward pre-hook
  during one forward pass of the model;
- for a timm model (``forward_features`` / ``forward_head``) without a name: z = ``forward_head(forward_features(x),
  pre_logits=True)`` and the head is ``get_classifier()``;
- with ``head=None`` and no timm methods: ``fc``, ``classifier``, ``head`` or ``heads.head`` (a ``Sequential``
  resolves to its last linear layer), else the model's last ``nn.Linear``.

Input normalisation (``mean`` / ``std``) runs inside ``features``, so the classifier takes images in [0, 1] like every
attack and detector of the package; a model of 3 input channels fed 1-channel images gets the channel repeated
(the same as summing its first convolution's weights over channels). With ``input_shape`` known, one probe
checks that the split reproduces the model's own output, so a head that is not the model's last layer is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError

#: where torchvision and timm keep the final linear layer, tried in order when no head is named
HEAD_NAMES = ("fc", "classifier", "head", "heads.head", "last_linear")
#: the mode of a timm model split by its own forward_head (recorded in checkpoints as head = None)
TIMM_HEAD = "forward_head"


def _is_timm(model: nn.Module) -> bool:
    return all(callable(getattr(model, m, None)) for m in ("forward_features", "forward_head", "get_classifier"))


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _resolve(model: nn.Module, name: str) -> str:
    """``name`` if it is a linear layer; a Sequential's last linear layer; else ConfigError saying what exists."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        tops = ", ".join(n for n, _ in model.named_children()) or "none"
        linears = ", ".join(_linear_names(model)[-4:]) or "none"
        raise ConfigError(f"the model ({type(model).__name__}) has no module {name!r}; its top-level modules: {tops}; "
                          f"its last linear layers: {linears}") from None
    if isinstance(module, nn.Sequential):
        inner = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        if inner and isinstance(module[-1], nn.Linear):
            return f"{name}.{inner[-1]}"
    if not isinstance(module, nn.Linear):
        raise ConfigError(f"head {name!r} of the model is a {type(module).__name__}, not a linear layer (nn.Linear): "
                          "the detector needs the split between the final hidden layer and the last linear layer")
    return name


def find_head(model: nn.Module, head: str | None) -> str | None:
    """The module path of the final linear layer, or None for a timm model split by ``forward_head``."""
    if head is not None:
        if not isinstance(head, str) or not head:
            raise ConfigError(f"head must be a module name such as 'fc' or 'classifier.6', got {head!r}")
        return _resolve(model, head)
    if _is_timm(model):
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise ConfigError(f"the timm model's classifier is a {type(classifier).__name__}, not a linear layer "
                              "(a model built with num_classes=0 has none); build it with num_classes > 0")
        return None
    for name in HEAD_NAMES:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Sequential) and len(module)
                                             and isinstance(module[-1], nn.Linear)):
            return _resolve(model, name)
    linears = _linear_names(model)
    if not linears:
        raise ConfigError(f"the model ({type(model).__name__}) has no linear layer (nn.Linear) to split at: the "
                          "detector needs a final hidden layer followed by a linear layer to the logits")
    return linears[-1]


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else None


def _stats(values, channels: int, what: str) -> torch.Tensor:
    t = torch.as_tensor([float(v) for v in values], dtype=torch.float32).flatten()
    if len(t) not in (1, channels) or not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{what} must be 1 or {channels} finite numbers (one per input channel of the model), "
                          f"got {list(values)}")
    if what == "std" and bool((t <= 0).any()):
        raise ConfigError(f"std must be > 0, got {list(values)}")
    return t.expand(channels).clone().view(1, channels, 1, 1)


class Wrapped(nn.Module):
    """``features(x)`` = the input of the model's final linear layer (after normalising ``x``), ``head(z)`` = that
    layer; ``in_channels``, ``num_classes``, ``feature_dim``, ``arch`` and ``spec()`` for checkpoints."""

    def __init__(self, model: nn.Module, head: str | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, in_channels: int | None = None, arch: str = "",
                 input_shape: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"wrap needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.training = model.training  # the wrapper is in the model's mode (check_split restores it)
        self.head_name = find_head(model, head)
        linear = self._linear
        self.num_classes, self.feature_dim = int(linear.out_features), int(linear.in_features)
        if self.num_classes < 2:
            raise ConfigError(f"the model's final linear layer has {self.num_classes} output(s); a classifier needs >= 2")
        self.model_channels = _first_conv_channels(model) or int(in_channels or 3)
        self.in_channels = int(in_channels or self.model_channels)
        if self.in_channels != self.model_channels and not (self.in_channels == 1 and self.model_channels == 3):
            raise ConfigError(f"the model takes {self.model_channels}-channel images, not {self.in_channels}; only "
                              "1-channel images are adapted (repeated) to a 3-channel model")
        if mean is None and std is None and self.head_name is None:  # timm models carry their normalisation
            cfg = getattr(model, "pretrained_cfg", None) or {}
            mean, std = cfg.get("mean"), cfg.get("std")
        self.register_buffer("mean", _stats(mean if mean is not None else [0.0], self.model_channels, "mean"),
                             persistent=False)
        self.register_buffer("std", _stats(std if std is not None else [1.0], self.model_channels, "std"),
                             persistent=False)
        self.arch = arch or f"custom:{type(model).__name__}"
        self.head_modules = (f"model.{self.head_name or _name_of(model, linear)}",)
        self.detector_layers = self._stages()
        if input_shape is not None:
            self.check_split(input_shape)

    @property
    def _linear(self) -> nn.Linear:
        if self.head_name is None:
            return self.model.get_classifier()
        return self.model.get_submodule(self.head_name)

    def _stages(self) -> list[str]:
        """The outputs of the model's stages, which LID and Mahalanobis read beside z: timm's ``feature_info``, or
        torchvision-style ``layer1``, ``layer2``, ... children."""
        names = {n for n, _ in self.model.named_modules()}
        info = getattr(self.model, "feature_info", None)
        found: list[str] = []
        if isinstance(info, list):
            found = [i["module"] for i in info if isinstance(i, dict) and i.get("module") in names]
        if not found:
            found = [n for n, _ in self.model.named_children() if n.startswith("layer") and n[5:].isdigit()]
        return [f"model.{n}" for n in found]

    def spec(self) -> dict:
        """What rebuilds this wrapper around a fresh model of the same ``arch`` (recorded in checkpoint.json)."""
        return {"head": self.head_name, "mean": [round(float(v), 6) for v in self.mean.flatten()],
                "std": [round(float(v), 6) for v in self.std.flatten()]}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the model's input: channels repeated to the model's, then (x - mean) / std."""
        if x.shape[1] == 1 and self.model_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final hidden vector z: the input of the final linear layer, from one forward pass of the model."""
        x = self.prepare(x)
        if self.head_name is None:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        captured: list[torch.Tensor] = []
        handle = self._linear.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise ConfigError(f"the head {self.head_name!r} ran {len(captured)} times in one forward pass, not once: "
                              "name the model's final linear layer")
        z = captured[0]
        if z.dim() != 2:
            raise ConfigError(f"the input of the head {self.head_name!r} has shape {tuple(z.shape)}, not (N, features)")
        return z

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """The raw logits Z of the final linear layer."""
        return self._linear(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def check_split(self, input_shape: Sequence[int]) -> None:
        """One probe (eval mode, no random numbers drawn): head(features(x)) must equal the model's own output."""
        shape = tuple(int(v) for v in input_shape)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        n = 2 * shape[0] * shape[1] * shape[2]
        x = (torch.arange(n, dtype=torch.float32, device=device).reshape(2, *shape) * 0.6180339) % 1.0
        was_training = self.training
        self.eval()
        try:
            ours = self.forward(x)
            theirs = self.model(self.prepare(x))
        finally:
            self.train(was_training)
        if not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape or not torch.allclose(
                ours, theirs, rtol=1e-4, atol=1e-5):
            where = f"the module {self.head_name!r}" if self.head_name else "forward_head"
            raise ConfigError(f"{where} is not the model's last layer: the model's output differs from the linear "
                              "layer applied to its input; name the final linear layer (head=...)")


def wrap(model: nn.Module, head: str | None = None, objective: str = "ce", *, mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None, input_shape: Sequence[int] | None = None,
         in_channels: int | None = None):
    """An rcedetect :class:`~rcedetect.models.classifier.Classifier` around ``model`` (not copied: it shares the weights).

    ``head``: the module name of the final linear layer (``"fc"``, ``"classifier.6"``), or None to find it (a timm
    model's ``forward_head``); ``objective``: how the model was (or will be) trained, "ce" or "rce", which fixes
    the sign of the logits; ``mean`` / ``std``: the model's input normalisation (default: a timm model's own, else
    none), applied inside the classifier so that it takes images in [0, 1]; ``input_shape`` (C, H, W): the image
    size, checked by every command and used to verify the split once; ``in_channels``: 1 to feed grey images to a
    3-channel model. The classifier is in the model's mode: ``wrap(model.eval())`` is ready to attack.
    """
    from .classifier import Classifier

    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"input_shape must be (channels, height, width), got {input_shape}")
        in_channels = in_channels or input_shape[0]
    net = Wrapped(model, head, mean=mean, std=std, in_channels=in_channels, input_shape=input_shape)
    return Classifier(net, objective, input_shape=input_shape).train(net.training)
