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

import json
from pathlib import Path

from ..core.settings import int64_arg
from . import add_fit_options, add_import_options


def add_parser(sub) -> None:
    from ..detectors import paper_metrics

    p = sub.add_parser("fit-detector", help="fit and calibrate detectors on an existing model (no retraining)",
                       description="Fit and calibrate the K-density, non-ME and confidence detectors on an existing "
                                   "model without retraining it (--model and --weights import one first); "
                                   "--evaluate scores rce attack folders with AUC and TPR intervals.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="the run folder (created from --model and --weights when it holds no run)")
    add_import_options(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="another setting of the imported model, e.g. --set mean=[0.5] --set std=[0.5]")
    p.add_argument("--metric", action="append",
                   help=f"detector(s) to fit (default: {', '.join(paper_metrics())})")
    p.add_argument("--evaluate", nargs="+", default=[], metavar="ATTACK_DIR",
                   help="rce attack folders of this run to score the detectors on")
    p.add_argument("--bootstrap", type=int64_arg, default=1000, help="bootstrap resamples of the intervals (default 1000)")
    add_fit_options(p, baselines=False, data=False,
                    seed="seed of the K-density kernel subset and of the bootstrap resamples")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import data
    from ..core.device import resolve
    from ..core.errors import ConfigError
    from ..core.io import check_writable_dir, write_json
    from ..detectors import REGISTRY, check_metric, paper_metrics
    from ..evaluation.calibrated import calibrated_detector, calibration_slice
    from ..models import checkpoint
    from ..training.posthoc import evaluate, lines
    from . import fit_options, import_run
    from .detect import describe

    metrics = args.metric or list(paper_metrics())
    for m in metrics:
        if REGISTRY[check_metric(m)].needs_fit_images:
            raise ConfigError(f"{m} fits a regression on attacked images; use rce calibrate --metric {m}")
    # the run's own data: --data-dir and --data-file describe a model to import (then they are in its config)
    opts = fit_options(args, *metrics, data_dir=None, data_file=None)
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    run_dir = Path(args.run_dir)
    for path in args.evaluate:
        if not (Path(path) / "summary.json").is_file():
            raise ConfigError(f"--evaluate {path}: not an rce attack folder (no summary.json)")
    import_run(args, args.overrides)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")
    detectors = {}
    for m in metrics:
        detectors[m] = calibrated_detector(ckpt, run_dir, m, opts)
        print(describe(detectors[m], run_dir / f"detector-{m}", opts.sigma2))
    if not args.evaluate:
        return 0
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), model=ckpt.classifier)
    calibration = ds.test_images()[-calibration_slice(len(ds.x_test), opts.calibration_size):]
    records = []
    for path in args.evaluate:
        records.append(evaluate(detectors, path, ds, calibration, n_boot=args.bootstrap, seed=args.seed))
        print("\n".join(lines(records[-1])))
    out = write_json(run_dir / "detector-evaluation.json",
                     {"run": str(run_dir), "objective": ckpt.classifier.objective, "arch": ckpt.meta["arch"],
                      "weights_sha256": ckpt.meta["weights_sha256"], "evaluations": json.loads(json.dumps(records))})
    print(f"-> {out}")
    return 0
