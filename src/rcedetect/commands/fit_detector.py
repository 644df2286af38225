"""``rce fit-detector RUN_DIR [--model NAME --weights FILE --dataset D] [--metric kd ...] [--fpr 0.05]
[--evaluate ATTACK_DIR ...]``: defend an existing model post hoc, without retraining.

With ``--model``, the trained model you already have (a torchvision / timm architecture and its weights in a local
safetensors file) becomes the run folder ``RUN_DIR`` first (:func:`rcedetect.training.posthoc.import_model`). Then each
``--metric`` (default: K-density, non-ME and confidence) is fitted on the run's training features and calibrated so
that ``--fpr`` of clean held-out images (the last ``--calibration-size`` of the test split) are rejected, cached in
``RUN_DIR/detector-<metric>/`` where ``rce detect`` and ``rce adaptive`` find it. ``--evaluate`` scores ``rce attack``
folders of the run: AUC and TPR at the FPR with bootstrap intervals, written to ``RUN_DIR/detector-evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.settings import int64_arg, seed_arg
from . import add_import_options

DEFAULT_METRICS = ("kd", "non_me", "confidence")


def add_parser(sub) -> None:
    p = sub.add_parser("fit-detector", help="fit and calibrate detectors on an existing model (no retraining)",
                       description="Fit and calibrate the K-density, non-ME and confidence detectors on an existing "
                                   "model without retraining it (--model and --weights import one first); "
                                   "--evaluate scores rce attack folders with AUC and TPR intervals.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="the run folder (created from --model and --weights when it holds no run)")
    add_import_options(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="another setting of the imported model, e.g. --set mean=[0.5] --set std=[0.5]")
    p.add_argument("--metric", action="append", help="detector(s) to fit (default: kd, non_me, confidence)")
    p.add_argument("--fpr", type=float, default=0.05, help="share of clean held-out inputs to reject (default 0.05)")
    p.add_argument("--calibration-size", type=int64_arg, default=None,
                   help="clean images from the end of the test split used for the threshold (default 1000, at most "
                        "half of the split)")
    p.add_argument("--per-class", default="1000", help="K-density kernel points per class, or 'all'")
    p.add_argument("--sigma2", default=None, help="K-density bandwidth: a number or 'auto'; default: the paper's")
    p.add_argument("--evaluate", nargs="+", default=[], metavar="ATTACK_DIR",
                   help="rce attack folders of this run to score the detectors on")
    p.add_argument("--bootstrap", type=int64_arg, default=1000, help="bootstrap resamples of the intervals (default 1000)")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the K-density kernel subset and of the bootstrap resamples (default 0)")
    p.add_argument("--refit", action="store_true", help="ignore cached detectors")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _import(args) -> None:
    from ..training.config import TrainConfig, apply_overrides
    from ..training.posthoc import import_model
    from .train import absolute

    values = {"arch": args.model, "objective": args.objective, "head": args.head or "", "device": args.device,
              "weights": absolute("weights", args.weights) if args.weights else ""}
    if args.dataset or args.data_file:
        values["dataset"] = absolute("dataset", args.dataset or "npz")
    values.update(data_file=args.data_file or "", data_dir=args.data_dir or "")
    base = {**TrainConfig().to_dict(), **values}
    cfg = TrainConfig.from_dict(apply_overrides({"train": base}, [f"train.{o}" for o in args.overrides])["train"])
    import_model(args.run_dir, cfg)


def _detector_args(args, metric: str) -> argparse.Namespace:
    """The options ``rce calibrate`` takes, for one metric (the same cache, the same fit)."""
    return argparse.Namespace(run_dir=args.run_dir, metric=metric, fpr=args.fpr, calibration_size=args.calibration_size,
                              per_class=args.per_class, sigma2=args.sigma2, fit_on="fgsm", fit_eps=0.1,
                              fit_images=1000, seed=args.seed, refit=args.refit, device=args.device,
                              data_dir=None, data_file=None, quiet=args.quiet)


def run(args) -> int:
    from .. import data
    from ..core.device import resolve
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir, write_json
    from ..detectors import REGISTRY, check_metric
    from ..evaluation.calibrated import calibrated_detector, calibration_slice, checked_settings
    from ..models import checkpoint
    from ..training.posthoc import evaluate, lines
    from .detect import describe

    metrics = args.metric or list(DEFAULT_METRICS)
    for m in metrics:
        check_metric(m)
        if REGISTRY[m].needs_fit_images:
            raise ConfigError(f"{m} fits a regression on attacked images; use rce calibrate --metric {m}")
    checked_settings(_detector_args(args, metrics[0]))
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    run_dir = Path(args.run_dir)
    for path in args.evaluate:
        if not (Path(path) / "summary.json").is_file():
            raise ConfigError(f"--evaluate {path}: not an rce attack folder (no summary.json)")
    if args.model:
        check_writable_dir(run_dir, "run folder")
        _import(args)
    elif args.weights or args.head:
        raise ConfigError("--weights and --head describe a model to import: give --model as well")
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")
    detectors = {}
    for m in metrics:
        detectors[m] = calibrated_detector(_detector_args(args, m), ckpt)
        print(describe(detectors[m], run_dir / f"detector-{m}", args.sigma2))
    if not args.evaluate:
        return 0
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), model=ckpt.classifier)
    calibration = ds.test_images()[-calibration_slice(len(ds.x_test), args.calibration_size):]
    records = []
    for path in args.evaluate:
        records.append(evaluate(detectors, path, ds, calibration, n_boot=args.bootstrap, seed=args.seed))
        print("\n".join(lines(records[-1])))
    out = write_json(run_dir / "detector-evaluation.json",
                     {"run": str(run_dir), "objective": ckpt.classifier.objective, "arch": ckpt.meta["arch"],
                      "weights_sha256": ckpt.meta["weights_sha256"], "evaluations": json.loads(json.dumps(records))})
    print(f"-> {out}")
    return 0
