"""K-density on the final hidden layer (Feinman et al. 2017; paper §3.3, protocol §4.2-4.4).

KD(z) = (1/K_c) Σ_{i<K_c} exp(-‖z - z_i‖² / σ²) over the kernel points z_i of class c, where c is the predicted
class of the input being scored: no factor 2 and no normalising constant, exactly as the original code
(protocol §4.3). It is computed in the log domain (log KD is finite for any finite z, where the original added
1e-30), batched and chunked to bound memory, differentiable in z (C&W-wb back-propagates through it), on any device.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from ..core.errors import CheckpointError, ConfigError, InputError
from ..core.io import load_tensors, read_metadata, save_tensors
from ..core.validation import all_finite, check_features, check_labels
from .logsumexp import bounded_lse, exact_lse, gathered_lse

FORMAT = "rcedetect-kd"
FORMAT_VERSION = 1


def check_sigma2(sigma2) -> float:
    try:
        s = float(sigma2)
    except (TypeError, ValueError):
        raise ConfigError(f"the K-density bandwidth sigma2 must be a number, got {sigma2!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ConfigError(f"the K-density bandwidth sigma2 must be finite and > 0, got {sigma2!r}")
    return s


class _Prepared(NamedTuple):
    """A kernel laid out for scoring on one device and dtype (see :meth:`KernelDensity._prepare`)."""

    kc: torch.Tensor  # (C, K, D) kernel points minus their class centre
    ksq: torch.Tensor  # (C, K) ‖kc‖²
    centers: torch.Tensor  # (C, D)
    counts: list[int]
    count_t: torch.Tensor  # (C,) on the device
    log_counts: torch.Tensor  # (C,) log K_c
    aug: list[torch.Tensor]  # per class (D + 2, K_c): [2 kc/σ², −‖kc‖²/σ², 1]ᵀ
    norms: list[torch.Tensor]  # per class, (min ‖kc‖, max ‖kc‖)


class KernelDensity:
    """Per-class Gaussian K-density with kernel points ``kernels`` (C, K, D) and bandwidth ``sigma2``; ``counts``
    (C,) the valid points of each class (the first ``counts[c]`` rows of ``kernels[c]``, the rest padding: classes
    may differ in size, ``per_class="all"``); ``chunk_elements`` bounds each query×kernel distance block."""

    def __init__(self, kernels: torch.Tensor, sigma2: float, counts: torch.Tensor | None = None,
                 chunk_elements: int = 1 << 24):
        if not isinstance(kernels, torch.Tensor) or kernels.dim() != 3 or not kernels.is_floating_point():
            raise InputError("kernels must be a floating-point (C, K, D) tensor, got "
                             f"{getattr(kernels, 'shape', type(kernels).__name__)}")
        c, k, _ = kernels.shape
        if c < 1 or k < 1:
            raise InputError(f"kernels must hold at least one class and one point, got shape {tuple(kernels.shape)}")
        counts = torch.as_tensor(torch.full((c,), k) if counts is None else counts).to("cpu", torch.int64)
        if counts.shape != (c,) or int(counts.min()) < 1 or int(counts.max()) > k:
            raise InputError(f"counts must be {c} integers in [1, {k}], got {counts.tolist()}")
        if not all_finite(kernels):
            raise InputError("kernel points contain NaN or infinite values")
        self.sigma2, self.kernels, self.counts = check_sigma2(sigma2), kernels.detach(), counts
        self.chunk_elements, self._prepared = int(chunk_elements), {}

    # -- basic properties -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.kernels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.kernels.shape[2])

    @property
    def device(self) -> torch.device:
        return self.kernels.device

    def __repr__(self) -> str:
        sizes = self.counts.tolist()
        size = str(sizes[0]) if len(set(sizes)) == 1 else f"{min(sizes)}..{max(sizes)}"
        return (f"KernelDensity(classes={self.num_classes}, points_per_class={size}, dim={self.dim}, "
                f"sigma2={self.sigma2:.6g})")

    def to(self, device=None, dtype: torch.dtype | None = None) -> KernelDensity:
        """A copy with the kernel points on ``device`` (and in ``dtype``)."""
        return KernelDensity(self.kernels.to(device=device, dtype=dtype), self.sigma2, self.counts,
                             self.chunk_elements)

    def with_sigma2(self, sigma2: float) -> KernelDensity:
        """The same kernel points with another bandwidth."""
        return KernelDensity(self.kernels, sigma2, self.counts, self.chunk_elements)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int | str = 1000,
            sigma2: float | None = None, seed: int = 0, warn: bool = True) -> KernelDensity:
        """Kernel points = a seeded random ``per_class`` of the training features of each TRUE class (protocol §4.2);
        ``per_class="all"`` keeps every feature. A class with fewer features than asked uses all of them (with a
        warning, unless ``warn`` is False: the caller says it); one with none is an error. ``sigma2`` is required
        (:func:`default_sigma2` gives the paper's)."""
        if sigma2 is None:
            raise ConfigError("KernelDensity.fit needs sigma2; the paper's is default_sigma2('ce' or 'rce')")
        sigma2 = check_sigma2(sigma2)
        features = check_features(features, None, "features")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        check_labels(labels, len(features), num_classes, name="labels")
        if per_class != "all" and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
            raise ConfigError(f"per_class must be a positive integer or 'all', got {per_class!r}")
        labels = labels.cpu()
        g = torch.Generator().manual_seed(int(seed))
        chosen, short = [], {}
        for c in range(num_classes):
            idx = (labels == c).nonzero().flatten()
            if len(idx) == 0:
                raise InputError(f"class {c} has no training features; K-density needs kernel points for every "
                                 "class (check the labels and num_classes)")
            if per_class != "all":
                if len(idx) < per_class:
                    short[c] = len(idx)
                idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
            chosen.append(idx)
        if short and warn:
            _warn_short(short, per_class, "training features")
        return cls._from_indices(features, chosen, sigma2)

    @classmethod
    def _from_indices(cls, features: torch.Tensor, chosen: list[torch.Tensor], sigma2: float,
                      chunk_elements: int = 1 << 24) -> KernelDensity:
        """The kernel of rows ``chosen[c]`` of ``features`` for each class c, padded to the largest class."""
        counts = torch.tensor([len(i) for i in chosen], dtype=torch.int64)
        kernels = features.new_zeros(len(chosen), int(counts.max()), features.shape[1])
        for c, idx in enumerate(chosen):
            kernels[c, : len(idx)] = features[idx.to(features.device)]
        return cls(kernels, sigma2, counts, chunk_elements)

    def subset(self, per_class: int, seed: int, warn: bool = True) -> KernelDensity:
        """A seeded random ``per_class`` of each class's kernel points: the 100-of-1000 attack kernel (protocol §4.2);
        ``warn``: say so when a class has fewer (off where the caller has said it already)."""
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
        g, counts, k = torch.Generator().manual_seed(int(seed)), self.counts.tolist(), self.kernels.shape[1]
        chosen = [c * k + torch.randperm(n, generator=g)[:per_class] for c, n in enumerate(counts)]
        short = {c: n for c, n in enumerate(counts) if n < per_class}
        if short and warn:
            _warn_short(short, per_class, "kernel points")
        return self._from_indices(self.kernels.reshape(-1, self.dim), chosen, self.sigma2, self.chunk_elements)

    # -- scoring ----------------------------------------------------------------------------------------
    def _prepare(self, device: torch.device, dtype: torch.dtype) -> _Prepared:
        """Kernel points centred per class (fewer cancellation errors in ‖a‖² + ‖b‖² − 2a·b), cached per device."""
        key = (str(device), dtype)
        if key not in self._prepared:
            k = self.kernels.to(device=device, dtype=dtype)
            counts = self.counts.tolist()
            centers = torch.stack([k[c, :n].mean(0) for c, n in enumerate(counts)])
            kc = k - centers[:, None, :]
            ksq = kc.pow(2).sum(-1)
            count_t = self.counts.to(device)
            # per class, [2 kc/σ², −‖kc‖²/σ², 1]ᵀ: one product with [zc, 1, a] gives every exponent minus a shift
            aug = [torch.cat([kc[c, :n] * (2.0 / self.sigma2), (ksq[c, :n] / -self.sigma2)[:, None],
                              kc.new_ones(n, 1)], 1).T.contiguous() for c, n in enumerate(counts)]
            norms = [torch.stack(ksq[c, :n].sqrt().aminmax()) for c, n in enumerate(counts)]
            self._prepared[key] = _Prepared(kc, ksq, centers, counts, count_t, count_t.to(dtype).log(), aug, norms)
        return self._prepared[key]

    def log_kd(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """log KD of each feature vector z[n] against the kernel points of class ``classes[n]`` (protocol §4.3),
        differentiable in ``z``, in z's dtype on z's device. Small batches (an attack's) gather each query's kernel
        in one batched product; large ones go by class, one matrix product per class and ``chunk_elements`` block.
        """
        check_features(z, self.dim, "z")
        if not isinstance(classes, torch.Tensor):
            raise InputError(f"classes must be a torch.Tensor of class indices, got {type(classes).__name__}")
        classes = check_labels(classes, len(z), self.num_classes, name="classes").to(z.device, torch.int64)
        if len(z) == 0:
            return z.new_zeros(0)
        p = self._prepare(z.device, z.dtype)
        kc, ksq, centers, counts = p.kc, p.ksq, p.centers, p.counts
        log_counts = p.log_counts[classes]
        if len(z) * kc.shape[0] * kc.shape[1] <= self.chunk_elements // 16:
            return gathered_lse(z, classes, kc, ksq, centers, p.count_t, self.sigma2) - log_counts
        fast = not (torch.is_grad_enabled() and z.requires_grad)
        order = torch.argsort(classes, stable=True)
        present, sizes = torch.unique_consecutive(classes[order], return_counts=True)
        parts, start = [], 0
        for c, n in zip(present.tolist(), sizes.tolist()):
            zc = z[order[start : start + n]] - centers[c]
            kcc, ksqc = kc[c, : counts[c]], ksq[c, : counts[c]]
            parts.append(bounded_lse(zc, p.aug[c], p.norms[c], kcc, ksqc, self.sigma2, self.chunk_elements) if fast
                         else exact_lse(zc, kcc, ksqc, self.sigma2, self.chunk_elements))
            start += n
        out = torch.cat(parts)
        return out.new_empty(len(out)).index_copy_(0, order, out) - log_counts

    def kd(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """KD itself, exp(log KD) (may underflow to 0; prefer :meth:`log_kd`)."""
        return self.log_kd(z, classes).exp()

    def eta(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """η_c = −log median KD_c over the training features of TRUE class c, against this kernel (protocol §4.4).

        Call it on the 100-point attack subset. The median of an even count averages the two middle KD values
        (as Matlab's median does), computed in the log domain.
        """
        check_features(features, self.dim, "features")
        check_labels(labels, len(features), self.num_classes, name="labels")
        with torch.no_grad():
            lk = self.log_kd(features, labels).double()
        labels = labels.to(lk.device)
        eta = torch.empty(self.num_classes, dtype=torch.float64, device=lk.device)
        for c in range(self.num_classes):
            v = lk[labels == c].sort().values
            n = len(v)
            if n == 0:
                raise InputError(f"class {c} has no training features; eta needs at least one per class")
            med = v[n // 2] if n % 2 else torch.logaddexp(v[n // 2 - 1], v[n // 2]) - math.log(2.0)
            eta[c] = -med
        return eta.to(features.dtype)

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file: kernel points and counts, with the settings as JSON in its header."""
        meta = {"format_version": FORMAT_VERSION, "sigma2": self.sigma2, "num_classes": self.num_classes,
                "dim": self.dim}
        return save_tensors(path, {"kernels": self.kernels, "counts": self.counts},
                            metadata={"format": FORMAT, "meta": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> KernelDensity:
        """Read a file written by :meth:`save`; raises :class:`CheckpointError` if it is foreign or broken."""
        tensors = load_tensors(path, "K-density file")
        meta = read_metadata(path)
        if meta.get("format") != FORMAT or "kernels" not in tensors or "counts" not in tensors:
            raise CheckpointError(f"{path} is not an rcedetect K-density file")
        try:
            info = json.loads(meta["meta"])
            if info.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(f"{path} has K-density format version {info.get('format_version')}, "
                                      f"this rcedetect reads {FORMAT_VERSION}")
            return cls(tensors["kernels"].to(device), info["sigma2"], tensors["counts"])
        except (KeyError, TypeError, json.JSONDecodeError, InputError, ConfigError) as e:
            raise CheckpointError(f"K-density file {path} is inconsistent: {e}") from e

def _warn_short(short: dict[int, int], per_class: int, what: str) -> None:
    detail = ", ".join(f"class {c}: {n}" for c, n in short.items())
    warnings.warn(f"fewer {what} than per_class={per_class} ({detail}); using all of them", stacklevel=3)
