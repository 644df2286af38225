"""Run-time device choice: CUDA when present, else CPU (or what the user names)."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve(name: str | torch.device | None = "auto") -> torch.device:
    """The device named (auto = CUDA when present); under torchrun, plain "cuda" is this rank's GPU."""
    from .distributed import device_of

    if name in (None, "", "auto"):
        return device_of(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device_of(device)
