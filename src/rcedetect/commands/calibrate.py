"""``rce calibrate RUN_DIR --metric kd [--fpr 0.05]``: fit a run's detector and choose its threshold.

The threshold T rejects the share ``--fpr`` of clean held-out images (the last ``--calibration-size`` of the test
split, protocol §4.5); the detector is cached in ``RUN_DIR/detector-<metric>/``, where ``rce detect`` and
``rce adaptive`` find it.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from .detect import add_detector_options

    p = sub.add_parser("calibrate", help="fit a run's detector and choose its threshold on clean held-out data",
                       description="Fit a detector on a trained run's training features and choose its threshold "
                                   "so that --fpr of clean held-out images are rejected; the detector is saved in "
                                   "RUN_DIR/detector-<metric>/, where rce detect and rce adaptive find it.")
    add_detector_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.device import resolve
    from ..core.io import check_writable_dir
    from ..evaluation.calibrated import calibrated_detector
    from ..models import checkpoint
    from . import fit_options
    from .detect import describe

    opts, run_dir = fit_options(args, args.metric), Path(args.run_dir)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")  # what this command writes goes there: fail before the work
    det = calibrated_detector(ckpt, run_dir, args.metric, opts)
    print(describe(det, run_dir / f"detector-{args.metric}", opts.sigma2))
    return 0
