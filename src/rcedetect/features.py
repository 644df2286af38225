"""Final-hidden-layer features of a classifier: the input of the K-density detector (SPEC §4.1).

:func:`extract` runs images through ``classifier.features`` in eval mode (moving BN statistics, as the
original's ``kernel_para`` mode), batched on the classifier's device, and returns a :class:`FeatureBank` on
the CPU: the 64-d vectors z, the true labels (if given) and the predictions (argmax of the effective logits
``classifier.logits_from_features(z)``). :func:`cached` stores a bank in a safetensors file so that scoring
never recomputes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, InputError
from .io import load_tensors, save_tensors
from .validation import check_images, check_labels

FORMAT = "rcedetect-features"


@dataclass(frozen=True, eq=False)
class FeatureBank:
    """Features ``(N, D)`` float32, true ``labels`` ``(N,)`` int64 or None, ``predictions`` ``(N,)`` int64."""

    features: torch.Tensor
    labels: torch.Tensor | None
    predictions: torch.Tensor

    def __post_init__(self) -> None:
        f = self.features
        if not isinstance(f, torch.Tensor) or f.dim() != 2:
            raise InputError(f"features must be an (N, D) tensor, got {getattr(f, 'shape', type(f).__name__)}")
        if self.predictions.shape != (len(f),):
            raise InputError(f"predictions must have shape ({len(f)},), got {tuple(self.predictions.shape)}")
        if self.labels is not None and self.labels.shape != (len(f),):
            raise InputError(f"labels must have shape ({len(f)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write the bank to one safetensors file (atomically)."""
        tensors = {"features": self.features, "predictions": self.predictions}
        if self.labels is not None:
            tensors["labels"] = self.labels
        meta = {"format": FORMAT, "meta": json.dumps({"n": len(self), "dim": self.dim})}
        return save_tensors(path, tensors, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> FeatureBank:
        """Read a bank written by :meth:`save`; raises :class:`CheckpointError` on a foreign or broken file."""
        t = load_tensors(path, "feature bank")
        if "features" not in t or "predictions" not in t:
            raise CheckpointError(f"feature bank {path} lacks the tensors 'features'/'predictions'")
        try:
            return cls(t["features"], t.get("labels"), t["predictions"])
        except InputError as e:
            raise CheckpointError(f"feature bank {path} is inconsistent: {e}") from e


def feature_dim(classifier) -> int:
    """Width D of ``classifier.features`` (the net's ``feature_dim``)."""
    dim = getattr(getattr(classifier, "net", None), "feature_dim", None)
    if dim is not None:
        return int(dim)
    raise InputError("cannot tell the classifier's feature width; its net has no feature_dim attribute")


def extract(classifier, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 500,
            progress: bool = False) -> FeatureBank:
    """Features, labels and predictions of images ``x`` (float NCHW in [0, 1]), on the CPU.

    Runs in eval mode (the classifier's mode is restored afterwards) and without gradients, in batches of
    ``batch_size`` on the classifier's device.
    """
    check_images(x, channels=getattr(classifier, "in_channels", None))
    if y is not None:
        check_labels(y, len(x), classifier.num_classes)
        y = y.detach().to("cpu", torch.int64)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    device = classifier.device
    was_training = classifier.training
    classifier.eval()
    feats, preds = [], []
    try:
        starts = range(0, len(x), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="features", unit="batch", leave=False)
        with torch.no_grad():
            for i in starts:
                z = classifier.features(x[i : i + batch_size].to(device, torch.float32))
                preds.append(classifier.logits_from_features(z).argmax(1).cpu())
                feats.append(z.float().cpu())
    finally:
        classifier.train(was_training)
    if not feats:
        d = feature_dim(classifier)
        return FeatureBank(torch.empty(0, d), y, torch.empty(0, dtype=torch.int64))
    return FeatureBank(torch.cat(feats), y, torch.cat(preds))


def cached(classifier, x: torch.Tensor, y: torch.Tensor | None, path: str | Path, batch_size: int = 500,
           progress: bool = False) -> FeatureBank:
    """The bank of ``x`` stored at ``path``: loaded if the file exists, else extracted and saved.

    A stored bank must match the request (same N, the classifier's feature width D, the same labels when
    both have them); otherwise :class:`CheckpointError` says to delete the stale file.
    """
    path = Path(path)
    if path.is_file():
        bank = FeatureBank.load(path)
        want_d = feature_dim(classifier)
        stale = None
        if len(bank) != len(x):
            stale = f"it holds {len(bank)} feature vectors but {len(x)} images were given"
        elif bank.dim != want_d:
            stale = f"its features are {bank.dim}-d but the classifier's are {want_d}-d"
        elif y is not None and bank.labels is not None and not torch.equal(bank.labels, y.cpu().to(torch.int64)):
            stale = "its labels differ from the given ones"
        if stale:
            raise CheckpointError(f"cached feature bank {path} does not match: {stale}; delete it to recompute")
        return bank
    bank = extract(classifier, x, y, batch_size=batch_size, progress=progress)
    bank.save(path)
    return bank
