"""Black-box transfer (paper §4.5, protocol §8): adversarial images crafted on a substitute run, fed to a target run.

The substitute's images are read back from an ``rce attack`` output folder (:func:`load_adversarial`, the part
files of :mod:`rcedetect.evaluation.attack_store`); the target's predictions and detector scores on the clean and adversarial
images are computed by :func:`rcedetect.evaluation.scoring.transfer_record`, the evaluator ``rce reproduce`` uses for Table 4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks.base import AttackResult
from ..core import schemas
from ..core.errors import CheckpointError, InputError
from ..core.io import read_json
from .attack_store import load_parts


@dataclass(frozen=True)
class AdversarialSet:
    """One ``rce attack`` output: the attack result (with the clean images), labels, test-set indices, summary."""

    result: AttackResult
    y: torch.Tensor
    indices: torch.Tensor
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x_adv(self) -> torch.Tensor:
        return self.result.x_adv


def load_adversarial(attack_dir: str | Path, dataset) -> AdversarialSet:
    """Read the parts and ``summary.json`` written by ``rce attack``; the clean images come from ``dataset`` (a
    :class:`rcedetect.data.Dataset`), checked against the stored labels. CheckpointError/InputError on defects."""
    attack_dir = Path(attack_dir)
    summary = schemas.check(read_json(attack_dir / "summary.json", "attack summary"), schemas.ATTACK_SUMMARY,
                            attack_dir / "summary.json", "attack summary")  # n and batch_size: integers, checked
    n, batch, name = int(summary["n"]), int(summary["batch_size"]), summary.get("dataset")
    if name != dataset.name:
        raise InputError(f"these adversarial images come from dataset {name!r}, not {dataset.name!r}")
    res, _, stored = load_parts(attack_dir, n, batch)
    indices = stored.get("indices")
    if indices is None or (n and int(indices.max()) >= len(dataset.x_test)):
        raise CheckpointError(f"the parts in {attack_dir} do not index images of the {dataset.name} test split")
    if not torch.equal(dataset.y_test[indices], stored["y"]):
        raise InputError("the dataset's labels at the stored indices differ from the stored labels: another split")
    res.x = dataset.test_images()[indices]
    return AdversarialSet(res, stored["y"], indices, summary)


def transfer(attack_dir: str | Path, target_run: str | Path, device: str = "cpu", detectors=None) -> dict[str, Any]:
    """Score the set in ``attack_dir`` on the classifier of ``target_run`` (its own dataset): the Table-4 record.

    ``detectors`` maps metric names to fitted metrics of the *target*; by default the ones that need no fitting
    (confidence, non-ME). Fit a K-density detector on the target's training features to add ``kd``.
    """
    from .. import data
    from ..detectors import ready_made
    from ..models import checkpoint, features

    ckpt = checkpoint.load(target_run, device=device)
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), model=ckpt.classifier)
    adv = load_adversarial(attack_dir, ds)
    if detectors is None:
        detectors = ready_made()
    from .scoring import transfer_record

    clean = features.extract(ckpt.classifier, adv.result.x, adv.y)
    return transfer_record(ckpt.classifier, adv.result, adv.y, clean, detectors)
