"""The Classifier: a trained network plus its objective, and the ONLY place that knows the RCE logit sign.

Paper §3.1: an RCE-trained network outputs a "reverse" softmax; at inference it predicts with the reversed
logits, F_R(x) = softmax(-Z(x)). Attacks, detectors and metrics all see ``Classifier.logits`` (the
*effective* logits: Z for CE, -Z for RCE), so none of them needs to know how the model was trained.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .losses import OBJECTIVES
from .validation import check_images


class Classifier(nn.Module):
    """Wrap ``net`` (with ``features(x)`` and ``head(z)``) and its training objective."""

    def __init__(self, net: nn.Module, objective: str):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.net = net
        self.objective = objective

    @property
    def sign(self) -> float:
        """+1 for CE, -1 for RCE: the reversed logits of paper §3.1."""
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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final hidden vector z (64-d for the paper's ResNets) used by K-density and t-SNE."""
        return self.net.features(x)

    def logits_from_features(self, z: torch.Tensor) -> torch.Tensor:
        """Effective logits from final hidden features: Z for CE, -Z for RCE."""
        out = self.net.head(z)
        return -out if self.objective == "rce" else out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Effective logits of images ``x`` in [0, 1]: Z for CE, -Z for RCE."""
        return self.logits_from_features(self.features(x))

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
        check_images(x, channels=self.in_channels)
        device = self.device
        return torch.cat(
            [self.predict(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        ) if len(x) else torch.empty(0, dtype=torch.long)
