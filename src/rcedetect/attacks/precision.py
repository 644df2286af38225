"""Reduced-precision gradient passes for attacks: one place for the choice and its rule.

``precision="bf16"`` runs an attack's forward and backward passes under ``torch.autocast`` in bfloat16 (on
CUDA, and on CPUs with bf16 matrix units such as Intel AMX, these passes are several times faster). The rule
that keeps results honest: bf16 only *steers* the attack (which gradient, which feature); every success that
the attack reports or stops on is decided by a float32 forward pass. ``"fp32"`` (the default) changes nothing.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """The context for an attack's gradient passes on ``device``: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
