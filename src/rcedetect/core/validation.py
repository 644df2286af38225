"""One place for the input conventions: images are float NCHW tensors in [0, 1] (protocol "Decisions"), labels
are integers in [0, L), features are finite (N, D) float vectors."""

from __future__ import annotations

import torch

from .errors import InputError

#: Tolerance for values that float arithmetic nudges just outside [0, 1].
RANGE_TOLERANCE = 1e-5


def all_finite(t: torch.Tensor) -> bool:
    """True when no element of ``t`` is NaN or ±inf.

    The sum is finite only if every element is (inf + finite = inf, inf − inf = NaN, NaN propagates), and one
    sum costs a tenth of ``isfinite(t).all()``; only a sum that overflowed needs the element-wise check.
    """
    if t.numel() == 0 or not t.is_floating_point():
        return True
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_images(x: torch.Tensor, *, channels: int | None = None, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a batch of images in the package's convention and return it.

    Raises :class:`InputError` naming the problem: not a tensor, not 4-D NCHW, not floating point,
    the wrong number of channels, NaN/inf values, or values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(
            f"{name} must be a 4-D batch of images (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if not x.is_floating_point():
        raise InputError(
            f"{name} must be floating point in [0, 1], got dtype {x.dtype}; convert uint8 images with x.float() / 255"
        )
    if x.device.type == "meta":
        raise InputError(f"{name} is a meta-device tensor (a shape without data); give real images")
    if channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{name} has {x.shape[1]} channels but the model expects {channels} "
            f"(shape {tuple(x.shape)}; images must be NCHW)"
        )
    if not all_finite(x):
        raise InputError(f"{name} contains NaN or infinite values")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise InputError(
                f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "rcedetect takes images scaled to [0, 1] (the model subtracts 0.5 itself)"
            )
    return x


def check_labels(y: torch.Tensor, n: int, num_classes: int, *, name: str = "y") -> torch.Tensor:
    """Check that ``y`` holds ``n`` integer class labels in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of labels, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(f"{name} must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    return y


def check_features(z: torch.Tensor, dim: int | None = None, name: str = "features") -> torch.Tensor:
    """Check that ``z`` is an (N, D) float tensor of finite feature vectors (of width ``dim`` when given)."""
    if not isinstance(z, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of feature vectors, got {type(z).__name__}")
    if z.dim() != 2:
        raise InputError(f"{name} must be an (N, D) batch of feature vectors, got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise InputError(f"{name} must be floating point, got dtype {z.dtype}")
    if dim is not None and z.shape[1] != dim:
        raise InputError(f"{name} has {z.shape[1]}-d feature vectors but {dim}-d ones are expected "
                         "(features of another model or layer?)")
    if not all_finite(z):
        raise InputError(f"{name} contains NaN or infinite values")
    return z


def check_model_input(classifier, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a batch of images ``classifier`` can take: the package's image convention
    (:func:`check_images`), the model's channels and, where the classifier knows it, its image size."""
    if classifier is None or not callable(getattr(classifier, "logits", None)):
        raise InputError(f"classifier must be an rcedetect Classifier (e.g. rcedetect.checkpoint.load(run).classifier), "
                         f"got {type(classifier).__name__}")
    check_images(x, channels=getattr(classifier, "in_channels", None), name=name)
    shape = getattr(classifier, "input_shape", None)
    if shape is not None and tuple(x.shape[2:]) != tuple(shape[1:]):
        raise InputError(f"{name} holds {x.shape[2]}x{x.shape[3]} images but the model was trained on "
                         f"{shape[1]}x{shape[2]}; resize them first")
    return x
