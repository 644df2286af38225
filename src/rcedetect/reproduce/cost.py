"""The relative cost of an image pass, for the time-left estimate (:mod:`.runner`)."""

from __future__ import annotations

_PIXELS = 784.0  # the image size the rates were first measured on (28×28)


def pass_size(tc, shape: tuple[int, int, int]) -> float:
    """Relative cost of one image pass of model ``tc`` on images of ``shape`` (C, H, W): depth × pixels ×
    (1 + C/8), a ResNet-8 on 28×28×1 = 1."""
    depth = int("".join(c for c in tc.arch if c.isdigit()) or 8)
    c, h, w = shape
    return depth / 8 * (h * w / _PIXELS) * (1 + c / 8) / (1 + 1 / 8)
