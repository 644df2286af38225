"""Black-box transfer (paper §4.5, SPEC §8): adversarial images crafted on a substitute run, fed to a target run.

The substitute's images are read back from an ``rce attack`` output folder (:func:`load_adversarial`); the
target classifier's predictions on the clean and adversarial images give the inputs of the paper's pair mask
(clean correct AND adversarial misclassified, SPEC §4.6) on the *target* (:func:`evaluate`). Detection scores
on the target (its own K-density kernel and σ²) are computed from the same images by the detection code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, InputError
from .io import load_tensors, read_json
from .validation import check_images

FIELDS = ("x_adv", "success", "target", "iterations", "indices", "y", "pred_clean", "pred_adv")


@dataclass(frozen=True)
class AdversarialSet:
    """One attack's output on its (substitute) model; ``target``/``iterations`` are −1 where not reported."""

    x_adv: torch.Tensor
    success: torch.Tensor
    target: torch.Tensor
    iterations: torch.Tensor
    indices: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x_adv)

    def clean_images(self, dataset) -> torch.Tensor:
        """The attacked clean test images of ``dataset`` (a :class:`rcedetect.data.Dataset`), in [0, 1]."""
        if dataset.name != self.summary.get("dataset", dataset.name):
            raise InputError(f"these adversarial images come from dataset {self.summary['dataset']!r}, "
                             f"not {dataset.name!r}")
        if len(self) and int(self.indices.max()) >= len(dataset.x_test):
            raise InputError(f"indices reach {int(self.indices.max())} but {dataset.name} has "
                             f"{len(dataset.x_test)} test images")
        x = dataset.test_images()[self.indices]
        if not torch.equal(dataset.y_test[self.indices], self.y):
            raise InputError("the dataset's labels at the stored indices differ from the stored labels: "
                             "another dataset or split")
        return x


def load_adversarial(attack_dir: str | Path) -> AdversarialSet:
    """Read ``adv.safetensors`` and ``summary.json`` written by ``rce attack``; CheckpointError on defects."""
    attack_dir = Path(attack_dir)
    t = load_tensors(attack_dir / "adv.safetensors", "adversarial set")
    missing = [k for k in FIELDS if k not in t]
    if missing:
        raise CheckpointError(f"{attack_dir / 'adv.safetensors'} lacks {missing}; it was not written by rce attack")
    n = len(t["x_adv"])
    if any(len(t[k]) != n for k in FIELDS):
        raise CheckpointError(f"{attack_dir / 'adv.safetensors'} holds tensors of different lengths (corrupted?)")
    summary = read_json(attack_dir / "summary.json", "attack summary")
    return AdversarialSet(**{k: t[k] for k in FIELDS}, summary=summary)


@dataclass(frozen=True)
class TransferResult:
    """The target model's view of a transferred adversarial set (all tensors on the CPU)."""

    y: torch.Tensor
    pred_clean: torch.Tensor  # target model on the clean images
    pred_adv: torch.Tensor  # target model on the substitute's x*
    source_success: torch.Tensor  # the attack's success flag on the substitute

    @property
    def pair_mask(self) -> torch.Tensor:
        """SPEC §4.6 on the target: clean correct and adversarial misclassified."""
        return (self.pred_clean == self.y) & (self.pred_adv != self.y)

    @property
    def transfer_rate(self) -> float:
        """Among images the substitute fooled and the target classifies correctly when clean: the fraction the
        target misclassifies (paper §4.5: < 50 % on MNIST, < 15 % on CIFAR-10). NaN when there are none."""
        ok = self.source_success & (self.pred_clean == self.y)
        return float((self.pred_adv[ok] != self.y[ok]).float().mean()) if bool(ok.any()) else float("nan")

    def record(self) -> dict[str, Any]:
        return {"n": len(self.y), "n_pairs": int(self.pair_mask.sum()),
                "target_clean_accuracy": float((self.pred_clean == self.y).float().mean()) if len(self.y) else None,
                "target_adversarial_accuracy": float((self.pred_adv == self.y).float().mean()) if len(self.y) else None,
                "n_source_success": int(self.source_success.sum()), "transfer_rate": self.transfer_rate}


def evaluate(adv: AdversarialSet, classifier, x_clean: torch.Tensor, batch_size: int = 500) -> TransferResult:
    """Predictions of ``classifier`` (the target, in eval mode) on the clean and adversarial images of ``adv``."""
    check_images(x_clean, channels=classifier.in_channels, name="x_clean")
    if len(x_clean) != len(adv):
        raise InputError(f"x_clean has {len(x_clean)} images but the adversarial set {len(adv)}")
    if classifier.training:
        raise InputError("the target classifier is in training mode; call classifier.eval() first")
    return TransferResult(
        y=adv.y.cpu(),
        pred_clean=classifier.predict_batched(x_clean, batch_size),
        pred_adv=classifier.predict_batched(adv.x_adv, batch_size),
        source_success=adv.success.cpu().bool(),
    )


def transfer(attack_dir: str | Path, target_run: str | Path, device: str = "cpu") -> TransferResult:
    """Load the set in ``attack_dir`` and the classifier of ``target_run``; evaluate on the target's dataset."""
    from . import checkpoint, data

    adv = load_adversarial(attack_dir)
    ckpt = checkpoint.load(target_run, device=device)
    cfg = ckpt.config
    ds = data.load(cfg.get("dataset", ckpt.meta["dataset"]), data_dir=cfg.get("data_dir") or None,
                   data_file=cfg.get("data_file") or None)
    return evaluate(adv, ckpt.classifier, adv.clean_images(ds))
