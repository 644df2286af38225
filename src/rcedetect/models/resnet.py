"""The pre-activation ResNet-(6n+2) of Pang et al. 2018 (protocol §2), after TF's research/resnet.

Three stages of n units with 16/32/64 filters, strides 1/2/2; leaky ReLU 0.1 everywhere; BatchNorm eps 1e-3;
shortcuts that change width are average-pool(2) + zero channel padding (no projection convs); the head is
BN -> leaky ReLU -> global average pool, giving the 64-d final hidden vector z that K-density uses, then a
linear layer to the logits Z (with ``dropout`` > 0, dropout on z before it during training: the dropout variant for
KD+BU, off by default). The network takes images in [0, 1] and subtracts 0.5 itself (protocol "Decisions").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKINESS = 0.1
BN_EPS = 1e-3
BN_MOMENTUM = 0.1  # TF decay 0.9
STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


def _conv3x3(c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class PreActUnit(nn.Module):
    """One residual unit: (shared) pre-activation, conv, BN, LReLU, conv, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool):
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.bn1 = _bn(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = _bn(c_out)
        self.conv2 = _conv3x3(c_out, c_out, 1)
        self.stride = stride
        self.pad = (c_out - c_in) // 2

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=False)
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu(self.bn1(x), LEAKINESS)
        shortcut = self._shortcut(act if self.activate_before_residual else x)
        out = self.conv1(act)
        out = self.conv2(F.leaky_relu(self.bn2(out), LEAKINESS))
        return out + shortcut


class PreActResNet(nn.Module):
    """ResNet-(6n+2) with ``features(x)`` (the final hidden vector) and ``head(z)`` (the logits) kept apart."""

    def __init__(self, n: int, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n = n
        self.dropout = float(dropout)  # the dropout variant (before the final linear layer); 0 = the paper's net
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = STAGE_WIDTHS[-1]
        self.stem = _conv3x3(in_channels, STAGE_WIDTHS[0], 1)
        units = []
        c_in = STAGE_WIDTHS[0]
        for stage, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES)):
            for i in range(n):
                units.append(
                    PreActUnit(
                        c_in,
                        width,
                        stride if i == 0 else 1,
                        activate_before_residual=(stage == 0 and i == 0),
                    )
                )
                c_in = width
        self.units = nn.Sequential(*units)
        self.bn_final = _bn(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    @property
    def depth(self) -> int:
        return 6 * self.n + 2

    def reset_parameters(self) -> None:
        """protocol §2: conv N(0, sqrt(2 / (k·k·out))), FC U(±sqrt(3/fan_in)), biases 0, BN γ=1 β=0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (k * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = math.sqrt(3.0 / m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final hidden vector z: BN -> LReLU(0.1) -> global average pool (protocol §2 'unit_last')."""
        out = self.units(self.stem(x - 0.5))
        out = F.leaky_relu(self.bn_final(out), LEAKINESS)
        return out.mean(dim=(2, 3))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """The raw logits Z = W z + b (W dropout(z) + b in training mode for the dropout variant, which KD+BU's
        MC-dropout uncertainty reads; Feinman et al. 2017)."""
        if self.dropout and self.training:
            z = F.dropout(z, self.dropout, training=True)
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
