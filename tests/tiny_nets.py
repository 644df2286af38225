"""Tiny hand-weighted networks shared by the tests: known weights, so attacks have known answers.

Import with ``from tiny_nets import LinearNet`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import torch
from torch import nn


class LinearNet(nn.Module):
    """A Classifier-compatible net: ``features(x)`` = flatten(x), ``head(z)`` = W z (+ b).

    ``weight`` is W ``(K, D)``; ``bias`` b ``(K,)`` defaults to zeros, and ``use_bias=False`` builds the layer
    without a bias at all. ``flatten=False`` takes ``(N, D)`` inputs as they are. The layer is created as
    ``nn.Linear`` then overwritten, so it draws from the global RNG exactly like a plain ``nn.Linear``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, use_bias: bool = True,
                 in_channels: int = 1, flatten: bool = True):
        super().__init__()
        if bias is not None and not use_bias:
            raise ValueError("a bias was given but use_bias=False")
        self.in_channels, self.num_classes, self.feature_dim = in_channels, weight.shape[0], weight.shape[1]
        self.flatten = flatten
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=use_bias)
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            if use_bias:
                self.fc.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if self.flatten else x

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)
