"""Post-hoc defence of an existing model: no retraining, only a detector fitted on its features.

:func:`import_model` turns a model you already have (a torchvision / timm architecture and a local safetensors file
of its weights, trained with CE elsewhere) into an rcedetect run folder, so that every command works on it;
``rce calibrate`` / ``rce fit-detector`` then fit K-density, non-ME or confidence on its training features and choose
the threshold on clean held-out images. :func:`evaluate` measures such a detector against an ``rce attack`` folder at
its operating point: the strict AUC over the pairs and the TPR at the calibrated FPR, with percentile-bootstrap 95 %
intervals (:func:`rcedetect.stats.operating_point.operating_points`, the threshold re-chosen in every resample). Compare
it with the same numbers on an RCE run of the same architecture and data to see what training with RCE adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, InputError

#: what an evaluation record keeps of each detector's operating point
KEEP = ("auc", "tpr_success", "n_pairs", "threshold", "clean_rejection_rate", "attack_success_rate", "too_few_pairs")


def import_model(run_dir: str | Path, cfg, dataset=None, progress: bool = False) -> Path:
    """Write the run folder of an already trained model: ``cfg`` (a :class:`~rcedetect.training.config.TrainConfig`) names
    its ``arch``, ``weights`` (or ``init``), ``dataset`` and ``objective``; nothing is trained (step 0). Returns
    the checkpoint index; the test accuracy is measured and recorded."""
    from .. import data, models
    from ..core.io import write_json
    from ..models import checkpoint
    from ..models.classifier import Classifier
    from . import accuracy

    run_dir = Path(run_dir)
    if (run_dir / checkpoint.INDEX).exists():
        raise ConfigError(f"{run_dir} already holds a run; give another folder or drop --model to use it")
    if not (cfg.weights or cfg.init):
        raise ConfigError("importing a trained model needs its weights: --weights FILE.safetensors (or --init RUN)")
    ds = dataset or data.load(cfg.dataset, data_dir=cfg.data_dir or None, data_file=cfg.data_file or None)
    torch.manual_seed(cfg.seed)  # a final layer re-initialised for another class count is reproducible
    net = models.from_config(cfg, ds)
    clf = Classifier(net, cfg.objective, input_shape=ds.image_shape).eval()
    acc = accuracy(clf, ds.x_test, ds.y_test)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"train": cfg.to_dict()})
    return checkpoint.save(run_dir, clf, step=0, config=cfg.to_dict(), dataset=ds.name,
                           metrics={"test_accuracy": acc, "test_error": 1 - acc, "imported": True})


def _scores(det, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return det.score(x), det.classifier.predict_batched(x)


def evaluate(detectors: dict[str, Any], attack_dir: str | Path, dataset, calibration: torch.Tensor,
             n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each calibrated detector of ``detectors`` ({metric: Detector}) on the images of ``attack_dir`` (an ``rce
    attack`` folder of the same run and dataset): AUC and TPR at the detector's FPR with bootstrap intervals.
    ``calibration``: the clean held-out images the thresholds were chosen on; they must not be attacked images."""
    from ..evaluation.transfer import load_adversarial
    from ..stats.operating_point import operating_points

    adv = load_adversarial(attack_dir, dataset)
    n_test, n_cal = len(dataset.x_test), len(calibration)
    if int(adv.indices.max()) >= n_test - n_cal:
        raise InputError(f"{attack_dir} attacks test images among the last {n_cal}, which calibrate the threshold; "
                         f"attack with --first --n N, N <= {n_test - n_cal}, or lower --calibration-size")
    record: dict[str, Any] = {"attack_dir": str(attack_dir), "attack": adv.summary.get("attack"),
                              "eps": adv.summary.get("eps"), "n_images": len(adv), "n_calibration": n_cal,
                              "detectors": {}}
    for metric, det in detectors.items():
        if not det.calibrated:
            raise InputError(f"the {metric} detector has no threshold; calibrate it first")
        held = det.score(calibration)
        s_clean, p_clean = _scores(det, adv.result.x)
        s_adv, p_adv = _scores(det, adv.x_adv)
        point = operating_points(held, s_clean, s_adv, adv.y, p_clean, p_adv, adv.result.success,
                                 fprs=(det.fpr,), n_boot=n_boot, seed=seed)
        entry = next(iter(point.values()))
        boot = entry.get("bootstrap", {})
        record["detectors"][metric] = {**{k: entry.get(k) for k in KEEP}, "fpr": det.fpr,
                                       "auc_interval": boot.get("auc"), "tpr_interval": boot.get("tpr_success"),
                                       "n_boot": n_boot}
    return record


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _interval(iv) -> str:
    return "" if not iv or None in iv else f" [{100 * iv[0]:.0f}, {100 * iv[1]:.0f}]"


def lines(record: dict[str, Any]) -> list[str]:
    """The evaluation as a few printable lines: one per detector."""
    eps = record.get("eps")
    head = (f"{record['attack']}" + (f" ε={eps:g}" if eps is not None else "")
            + f" on {record['n_images']} images ({record['attack_dir']}):")
    out = [head]
    for metric, d in record["detectors"].items():
        few = " (too few pairs)" if d.get("too_few_pairs") else ""
        out.append(f"  {metric}: AUC {_pct(d['auc'])}{_interval(d['auc_interval'])}, TPR at {100 * d['fpr']:g}% FPR "
                   f"{_pct(d['tpr_success'])}{_interval(d['tpr_interval'])}, {d['n_pairs']} pairs{few}")
    return out
