"""Final-hidden-layer features of a classifier: the input of the K-density detector (paper §3.3).

:func:`extract` runs images through ``classifier.features`` in eval mode (moving BN statistics, as the
original's ``kernel_para`` mode), batched on the classifier's device, and returns a :class:`FeatureBank` on
the CPU: the 64-d vectors z, the true labels (if given) and the predictions (argmax of the effective logits
``classifier.logits_from_features(z)``). :func:`cached` stores a bank in a safetensors file so that scoring
never recomputes it.

With ``layers=[...]`` a bank also holds intermediate activations (``bank.layers``, for detectors such as LID
or Mahalanobis), each reduced to ``(N, C)``: 4-D maps ``(N, C, H, W)`` by their spatial mean, as Lee et al.
2018's Mahalanobis detector does; 2-D activations as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import CheckpointError, InputError
from ..core.io import load_tensors, save_tensors
from ..core.validation import check_images, check_labels
from .classifier import FINAL

FORMAT = "rcedetect-features"
LAYER_PREFIX = "layer."


@dataclass(frozen=True, eq=False)
class FeatureBank:
    """Features ``(N, D)`` float32, true ``labels`` ``(N,)`` int64 or None, ``predictions`` ``(N,)`` int64,
    and optional intermediate ``layers``: name -> ``(N, C)`` float32 activations."""

    features: torch.Tensor
    labels: torch.Tensor | None
    predictions: torch.Tensor
    layers: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.features
        if not isinstance(f, torch.Tensor) or f.dim() != 2:
            got = getattr(f, "shape", type(f).__name__)
            raise InputError(f"features must be an (N, D) tensor, got {got}")
        if self.predictions.shape != (len(f),):
            raise InputError(f"predictions must have shape ({len(f)},), got {tuple(self.predictions.shape)}")
        if self.labels is not None and self.labels.shape != (len(f),):
            raise InputError(f"labels must have shape ({len(f)},), got {tuple(self.labels.shape)}")
        if not isinstance(self.layers, dict):
            raise InputError(f"layers must be a dict name -> (N, C) tensor, got {type(self.layers).__name__}")
        for name, a in self.layers.items():
            if not isinstance(name, str) or not name or name == FINAL:
                raise InputError(f"bad layer name {name!r}: need a module name ('final' is `features`)")
            is_tensor = isinstance(a, torch.Tensor)
            if not is_tensor or a.dim() != 2 or len(a) != len(f) or a.dtype != torch.float32:
                got = f"{tuple(a.shape)} {a.dtype}" if is_tensor else type(a).__name__
                raise InputError(f"layer {name!r} must be an ({len(f)}, C) float32 tensor, got {got}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def layer(self, name: str) -> torch.Tensor:
        """The ``(N, C)`` activations of layer ``name``; "final" is :attr:`features`."""
        if name == FINAL:
            return self.features
        if name not in self.layers:
            have = ", ".join([FINAL, *self.layers])
            raise InputError(f"the feature bank has no layer {name!r}; it has {have}")
        return self.layers[name]

    def save(self, path: str | Path) -> Path:
        """Write the bank to one safetensors file (atomically)."""
        tensors = {"features": self.features, "predictions": self.predictions}
        if self.labels is not None:
            tensors["labels"] = self.labels
        tensors.update({LAYER_PREFIX + name: a for name, a in self.layers.items()})
        info = {"n": len(self), "dim": self.dim, "layers": [*self.layers]}
        meta = {"format": FORMAT, "meta": json.dumps(info)}
        return save_tensors(path, tensors, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> FeatureBank:
        """Read a bank written by :meth:`save`; :class:`CheckpointError` on a foreign or broken file."""
        t = load_tensors(path, "feature bank")
        if "features" not in t or "predictions" not in t:
            raise CheckpointError(f"feature bank {path} lacks the tensors 'features'/'predictions'")
        try:
            layers = {k[len(LAYER_PREFIX):]: v for k, v in t.items() if k.startswith(LAYER_PREFIX)}
            return cls(t["features"], t.get("labels"), t["predictions"], layers)
        except InputError as e:
            raise CheckpointError(f"feature bank {path} is inconsistent: {e}") from e


def feature_dim(classifier) -> int:
    """Width D of ``classifier.features`` (the net's ``feature_dim``)."""
    dim = getattr(getattr(classifier, "net", None), "feature_dim", None)
    if dim is not None:
        return int(dim)
    raise InputError("cannot tell the classifier's feature width; its net has no feature_dim attribute")


def pool_activation(name: str, a: torch.Tensor) -> torch.Tensor:
    """An activation as ``(N, C)``: the spatial mean of a 4-D map (Lee et al. 2018), 2-D ones as they are;
    differentiable, on the activation's device. The one reduction every multi-layer detector reads."""
    if not isinstance(a, torch.Tensor) or a.dim() not in (2, 4):
        got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise InputError(f"layer {name!r} gives {got}; only (N, C) or (N, C, H, W) activations can be used")
    return a.mean(dim=(2, 3)) if a.dim() == 4 else a


def _reduce(name: str, a: torch.Tensor) -> torch.Tensor:
    """:func:`pool_activation` as float32 on the CPU (what a bank stores)."""
    return pool_activation(name, a).float().cpu()


def _layer_list(layers: Sequence[str] | None) -> list[str]:
    """The requested intermediate layers, without duplicates and without "final" (that is ``features``)."""
    if isinstance(layers, str):
        layers = [layers]
    return [n for n in dict.fromkeys(layers or ()) if n != FINAL]


def extract(classifier, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 500,
            progress: bool = False, layers: Sequence[str] | None = None) -> FeatureBank:
    """Features, labels and predictions of images ``x`` (float NCHW in [0, 1]), on the CPU.

    Runs in eval mode (the classifier's mode is restored afterwards) and without gradients, in batches of
    ``batch_size`` on the classifier's device. With ``layers`` (names from ``classifier.layer_names()``), the
    bank's ``layers`` also holds those activations, each reduced to ``(N, C)`` (spatial mean of 4-D maps).
    """
    check_images(x, channels=getattr(classifier, "in_channels", None))
    if y is not None:
        check_labels(y, len(x), classifier.num_classes)
        y = y.detach().to("cpu", torch.int64)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    names = _layer_list(layers)
    device = classifier.device
    was_training = classifier.training
    classifier.eval()
    feats, preds = [], []
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    try:
        # an empty x still takes one (empty) pass when layers are asked for, to learn their widths C
        starts = range(0, max(len(x), 1) if names else len(x), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="features", unit="batch", leave=False)
        with torch.no_grad():
            for i in starts:
                xb = x[i : i + batch_size].to(device, torch.float32)
                if names:
                    out = classifier.features(xb, layers=[*names, FINAL])
                    z = out[FINAL]
                    for n in names:
                        acts[n].append(_reduce(n, out[n]))
                else:
                    z = classifier.features(xb)
                preds.append(classifier.logits_from_features(z).argmax(1).cpu())
                feats.append(z.float().cpu())
    finally:
        classifier.train(was_training)
    if not feats:
        d = feature_dim(classifier)
        return FeatureBank(torch.empty(0, d), y, torch.empty(0, dtype=torch.int64))
    return FeatureBank(torch.cat(feats), y, torch.cat(preds), {n: torch.cat(a) for n, a in acts.items()})


def cached(classifier, x: torch.Tensor, y: torch.Tensor | None, path: str | Path, batch_size: int = 500,
           progress: bool = False, layers: Sequence[str] | None = None) -> FeatureBank:
    """The bank of ``x`` stored at ``path``: loaded if the file exists, else extracted and saved.

    A stored bank must match the request (same N, the classifier's feature width D, the same labels when
    both have them, every requested layer); otherwise :class:`CheckpointError` says to delete the stale file.
    """
    path = Path(path)
    if path.is_file():
        bank = FeatureBank.load(path)
        want_d = feature_dim(classifier)
        missing = [n for n in _layer_list(layers) if n not in bank.layers]
        stale = None
        if len(bank) != len(x):
            stale = f"it holds {len(bank)} feature vectors but {len(x)} images were given"
        elif bank.dim != want_d:
            stale = f"its features are {bank.dim}-d but the classifier's are {want_d}-d"
        elif y is not None and bank.labels is not None and not torch.equal(bank.labels, y.cpu().long()):
            stale = "its labels differ from the given ones"
        elif missing:
            stale = f"it lacks the layer(s) {', '.join(missing)}"
        if stale:
            raise CheckpointError(f"cached feature bank {path} does not match: {stale}; "
                                  "delete it to recompute")
        return bank
    bank = extract(classifier, x, y, batch_size=batch_size, progress=progress, layers=layers)
    bank.save(path)
    return bank
