"""The common forms of images and labels, turned into the package's convention where that is unambiguous.

The package computes on float NCHW tensors in [0, 1] and int64 label tensors (:mod:`rcedetect.core.validation`). Users hold
images as NumPy arrays, as uint8 (0-255) and channels-last (NHWC, as PIL, OpenCV, TensorFlow and most ``.npz``
files store them), and grey images without a channel axis (NHW, as MNIST arrays come). The public entry points
(:class:`~rcedetect.models.classifier.Classifier`, :class:`~rcedetect.detectors.threshold.Detector`) pass their
inputs through :func:`as_images` and :func:`as_labels` first; anything these do not recognise is handed on as it
is, and the checks of :mod:`.validation` refuse it with the reason. A float NCHW tensor comes back as the same
object, so the conversion costs nothing on the package's own paths.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import InputError
from .dataset import to_float


def _channels_last(shape: tuple[int, ...], channels: int | None) -> bool:
    """True where a 4-D shape can only be NHWC: its last axis has the model's channel count (1 or 3 when the model
    is unknown) and its second axis does not."""
    wanted = (channels,) if channels is not None else (1, 3)
    return shape[-1] in wanted and shape[1] not in wanted


def as_images(x, channels: int | None = None, name: str = "x"):
    """``x`` as a float NCHW tensor in [0, 1] where its form says so unambiguously, else ``x`` unchanged.

    - a NumPy array becomes a tensor (float64 arrays, NumPy's default, become float32);
    - uint8 values 0-255 become float32 values / 255;
    - a 4-D array whose last axis holds the channels (``channels``, or 1 or 3 when not given) and whose second
      axis does not is channels-last (NHWC) and is permuted to NCHW;
    - a 3-D array for a one-channel model is a batch of grey images (NHW) and gains its channel axis (a single
      image (1, H, W) gives the same batch of one).

    Everything else (3-D colour images, other integer types, floats outside [0, 1]) is left for the checks to
    refuse with their reason: a single colour image could be HWC or CHW, and 0-255 floats could be meant either way.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise InputError(f"{name} is a NumPy array of Python objects; give numbers")
        x = torch.from_numpy(np.ascontiguousarray(x.astype(np.float32) if x.dtype == np.float64 else x))
    if not isinstance(x, torch.Tensor):
        return x
    if x.dtype == torch.uint8:
        x = to_float(x)
    if x.dim() == 3 and channels == 1:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and _channels_last(tuple(x.shape), channels):
        x = x.permute(0, 3, 1, 2).contiguous()
    return x


def as_labels(y):
    """``y`` as an int64 tensor where it is a NumPy integer array, a list of ints or an integer tensor of another
    width; anything else unchanged (the label checks refuse it)."""
    if isinstance(y, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y):
        return torch.as_tensor(list(y), dtype=torch.int64)
    if isinstance(y, np.ndarray) and np.issubdtype(y.dtype, np.integer):
        return torch.from_numpy(y.astype(np.int64))
    if isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dtype not in (torch.bool, torch.int64) \
            and not y.is_complex():
        return y.to(torch.int64)
    return y
