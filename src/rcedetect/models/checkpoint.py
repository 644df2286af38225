"""Checkpoints: weights in safetensors, everything else in JSON beside them. Never unpickles.

A run folder holds ``checkpoint.json`` (the commit point, written last) which names the weight file and
the optimizer-state file of the same step and records their sha256; loading verifies both, so a truncated,
corrupted, foreign or mismatched file is caught and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import schemas
from ..core.errors import CheckpointError
from ..core.io import load_tensors, read_json, save_tensors, sha256_file, versions, write_json
from . import registry
from .classifier import Classifier

FORMAT = "rcedetect-checkpoint"
FORMAT_VERSION = 1
INDEX = "checkpoint.json"


@dataclass
class Checkpoint:
    """What :func:`load` returns: the classifier and its metadata (and optimizer state for resume)."""

    classifier: Classifier
    meta: dict[str, Any]
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]


def save(run_dir: str | Path, classifier: Classifier, *, step: int, config: dict[str, Any],
         dataset: str, metrics: dict[str, Any] | None = None,
         optimizer_state: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights (and optimizer state) of ``step``, then atomically switch ``checkpoint.json`` to them."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    old = read_json(run_dir / INDEX) if (run_dir / INDEX).is_file() else None
    weights_name = f"model.step{step:07d}.safetensors"
    optim_name = f"optimizer.step{step:07d}.safetensors"
    net = classifier.net
    arch = getattr(net, "arch", None) or f"resnet{net.depth}"
    save_tensors(run_dir / weights_name, dict(net.state_dict()), metadata={"format": FORMAT, "arch": arch})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "in_channels": net.in_channels,
        "num_classes": net.num_classes,
        "input_shape": list(classifier.input_shape) if classifier.input_shape is not None else None,
        "objective": classifier.objective,
        "dataset": dataset,
        "step": step,
        "config": config,
        "metrics": metrics or {},
        "versions": versions(),
        "weights": weights_name,
        "weights_sha256": sha256_file(run_dir / weights_name),
    }
    if callable(getattr(net, "spec", None)):  # a torchvision / timm / wrapped model: what rebuilds the wrapper
        meta["model"] = net.spec()
    if optimizer_state is not None:
        save_tensors(run_dir / optim_name, optimizer_state)
        meta["optimizer"] = optim_name
        meta["optimizer_sha256"] = sha256_file(run_dir / optim_name)
    meta.update(extra or {})
    write_json(run_dir / INDEX, meta)
    if old:  # remove the previous step's files only once the new index is in place
        for key in ("weights", "optimizer"):
            name = old.get(key)
            if name and name not in (meta.get("weights"), meta.get("optimizer")):
                (run_dir / name).unlink(missing_ok=True)
    return run_dir / INDEX


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint metadata of ``run_dir``, checked to be ours."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    meta = read_json(run_dir / INDEX, "checkpoint index")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{run_dir / INDEX} is not an rcedetect checkpoint (format field missing or foreign)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir / INDEX} has format version {meta.get('format_version')}, this rcedetect reads {FORMAT_VERSION}"
        )
    return schemas.check(meta, schemas.CHECKPOINT, run_dir / INDEX, "checkpoint index")


def _verified(run_dir: Path, name: str, digest: str, what: str) -> dict[str, torch.Tensor]:
    path = run_dir / name
    if not path.is_file():
        raise CheckpointError(f"{what} {path} named by {run_dir / INDEX} does not exist")
    if sha256_file(path) != digest:
        raise CheckpointError(f"{what} {path} does not match the sha256 in {run_dir / INDEX} (corrupted or replaced)")
    return load_tensors(path, what)


def _check_state(state: dict[str, torch.Tensor], net: torch.nn.Module, path: Path) -> None:
    """Weights of the model's own dtypes and all finite: ``load_state_dict`` would silently cast int64 or bf16
    weights, and NaN weights give a model that answers anything."""
    own = net.state_dict()
    for name, t in state.items():
        ref = own.get(name)
        if ref is not None and t.dtype != ref.dtype:
            raise CheckpointError(f"weights {path}: {name} is {t.dtype}, the model's is {ref.dtype} (a foreign file?)")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"weights {path}: {name} holds NaN or infinite values (a diverged run?)")


def _build(meta: dict[str, Any], model: torch.nn.Module | None) -> torch.nn.Module:
    """The network ``meta`` describes, with fresh weights; a model wrapped by the user is rebuilt around ``model``
    (a fresh instance of the user's own class), since rcedetect cannot know how to build it."""
    spec = meta.get("model") or {}
    if model is not None or str(meta["arch"]).startswith("custom:"):
        if model is None:
            raise CheckpointError(f"{meta['arch'][7:]} is your own model: rebuild it and pass it, "
                                  "checkpoint.load(run_dir, model=YourModel(...))")
        from .wrapping import Wrapped

        return Wrapped(model, spec.get("head"), mean=spec.get("mean"), std=spec.get("std"),
                       in_channels=int(meta["in_channels"]), arch=meta["arch"])
    return registry.create(meta["arch"], in_channels=int(meta["in_channels"]), num_classes=int(meta["num_classes"]),
                         dropout=float((meta.get("config") or {}).get("dropout", 0.0)), **spec)


def load(run_dir: str | Path, device: str | torch.device = "cpu", with_optimizer: bool = False,
         model: torch.nn.Module | None = None) -> Checkpoint:
    """Load the classifier of ``run_dir`` in eval mode on ``device``; raises :class:`CheckpointError` on any defect.
    ``model``: a fresh instance of your own network, for a checkpoint of a model you wrapped yourself."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    try:
        net = _build(meta, model)
        classifier = Classifier(net, meta["objective"], input_shape=meta.get("input_shape"))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{run_dir / INDEX} describes a model rcedetect cannot build: {e}") from e
    state = _verified(run_dir, meta["weights"], meta["weights_sha256"], "weights")
    _check_state(state, net, run_dir / meta["weights"])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"weights {run_dir / meta['weights']} do not fit {meta['arch']}: {first}") from e
    optimizer_state = {}
    if with_optimizer and meta.get("optimizer"):
        optimizer_state = _verified(run_dir, meta["optimizer"], meta["optimizer_sha256"], "optimizer state")
    classifier.to(device).eval()
    return Checkpoint(classifier, meta, optimizer_state)


def update_metrics(run_dir: str | Path, **metrics: Any) -> None:
    """Merge ``metrics`` into the checkpoint index (atomically)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    meta.setdefault("metrics", {}).update(metrics)
    write_json(run_dir / INDEX, meta)
