"""The Classifier: a trained network plus its objective, and the ONLY place that knows the RCE logit sign.

Paper §3.2: an RCE-trained network outputs a "reverse" softmax; at inference it predicts with the reversed
logits, F_R(x) = softmax(-Z(x)). Attacks, detectors and metrics all see ``Classifier.logits`` (the
*effective* logits: Z for CE, -Z for RCE), so none of them needs to know how the model was trained; code
that holds raw network outputs Z (training) converts them with :meth:`Classifier.effective_logits`.

Paper §3.2: the K-density detector uses the final hidden vector z (:meth:`Classifier.features`); other
detectors such as LID (Ma et al. 2018) and Mahalanobis (Lee et al. 2018) use intermediate activations, which
``features(x, layers=[...])`` captures with forward hooks on the network's named submodules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.validation import check_model_input
from ..data.forms import as_images
from .losses import check_objective

#: the name of the final hidden vector z in ``features(x, layers=...)``
FINAL = "final"
#: submodules that are not part of ``net.features`` (the head's linear layer), so never hookable; a net may name
#: its own in ``head_modules`` (a wrapped model: the path of its final linear layer)
HEAD_MODULES = ("fc",)


class Classifier(nn.Module):
    """Wrap ``net`` (with ``features(x)`` and ``head(z)``) and its training objective."""

    def __init__(self, net: nn.Module, objective: str, input_shape: Sequence[int] | None = None):
        super().__init__()
        check_objective(objective)
        self.net = net
        self.objective = objective
        #: (C, H, W) of the images the net was trained on, where known (checkpoints record it); inputs of another
        #: size are refused by :func:`rcedetect.core.validation.check_model_input`
        self.input_shape = tuple(int(v) for v in input_shape) if input_shape is not None else None

    @property
    def sign(self) -> float:
        """+1 for CE, -1 for RCE: the reversed logits of paper §3.2."""
        return -1.0 if self.objective == "rce" else 1.0

    @property
    def in_channels(self) -> int:
        return self.net.in_channels

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def layer_names(self) -> list[str]:
        """Names accepted by ``features(x, layers=...)``: the net's submodules (not the head), "final"."""
        heads = tuple(getattr(self.net, "head_modules", HEAD_MODULES))
        names = [n for n, _ in self.net.named_modules()
                 if n and not any(n == h or n.startswith(f"{h}.") for h in heads)]
        return [*names, FINAL]

    def stage_names(self) -> list[str]:
        """The output of each residual stage (the last unit of every stage of the paper's ResNets), the layers
        that LID and Mahalanobis read by default beside "final"; a net may name its own in
        ``detector_layers``."""
        named = getattr(self.net, "detector_layers", None)
        if named is not None:
            return list(named)
        n, units = getattr(self.net, "n", None), getattr(self.net, "units", None)
        if isinstance(n, int) and units is not None and len(units) % n == 0:
            return [f"units.{k * n + n - 1}" for k in range(len(units) // n)]
        return []

    def features(self, x: torch.Tensor, layers: Sequence[str] | None = None):
        """The final hidden vector z (64-d for the paper's ResNets), used by K-density and t-SNE (paper §3.3).

        With ``layers`` (a list of names from :meth:`layer_names`), return instead a dict name -> activation,
        the output of each named submodule of ``net`` during ONE forward pass of ``net.features(x)`` ("final"
        is z itself). Activations keep their graph, so scores built on them are differentiable in ``x``.
        """
        if layers is None:
            return self.net.features(x)
        if isinstance(layers, str):
            layers = [layers]
        modules = dict(self.net.named_modules())
        valid = self.layer_names()
        unknown = [n for n in layers if n not in valid]
        if unknown:
            bad = ", ".join(map(repr, unknown))
            raise ConfigError(f"unknown layer(s) {bad}; choose from {', '.join(valid)}")
        captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers if n != FINAL}

        def hook_for(name: str):
            return lambda module, inputs, output: captured[name].append(output)

        handles = [modules[n].register_forward_hook(hook_for(n)) for n in captured]
        try:
            z = self.net.features(x)
        finally:
            for h in handles:
                h.remove()
        for name, outs in captured.items():
            if len(outs) != 1:
                raise ConfigError(f"layer {name!r} ran {len(outs)} times in one forward pass, not once; "
                                  "its activation is not well defined")
        return {n: z if n == FINAL else captured[n][0] for n in layers}

    def effective_logits(self, raw: torch.Tensor) -> torch.Tensor:
        """Effective logits from RAW network logits Z (e.g. ``net(x)``): Z for CE, -Z for RCE (paper §3.2)."""
        return -raw if self.sign < 0 else raw

    def logits_from_features(self, z: torch.Tensor) -> torch.Tensor:
        """Effective logits from final hidden features: Z for CE, -Z for RCE."""
        return self.effective_logits(self.net.head(z))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Effective logits of images ``x`` in [0, 1]: Z for CE, -Z for RCE. NumPy, uint8 and channels-last
        images are taken too (:func:`~rcedetect.data.forms.as_images`)."""
        return self.logits_from_features(self.features(as_images(x, self.in_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = softmax of the effective logits (F_R(x) = softmax(-Z) for RCE)."""
        return torch.softmax(self.logits(x), dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels: argmax of the effective logits (argmin of softmax(Z) for RCE)."""
        return self.logits(x).argmax(dim=1)

    @torch.no_grad()
    def predict_batched(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Predicted labels of a large, validated image set, computed in batches on the model's device."""
        x = check_model_input(self, as_images(x, self.in_channels))
        device = self.device
        return torch.cat(
            [self.predict(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        ) if len(x) else torch.empty(0, dtype=torch.long)
