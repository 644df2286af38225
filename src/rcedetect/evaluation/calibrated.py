"""The command line's detector of a run: fitted on the run's own training images, calibrated on clean held-out
test images (the LAST ``--calibration-size`` of the test split) and cached in ``RUN_DIR/detector-<metric>/``,
rebuilt only when the weights or the detector settings change (``rce detect``, ``rce calibrate``,
``rce fit-detector`` and ``rce serve`` use the same one)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CALIBRATION = 1000


def calibration_slice(n_test: int, requested: int | None) -> int:
    from ..core.errors import ConfigError

    if requested is not None and requested < 1:
        raise ConfigError(f"--calibration-size must be >= 1, got {requested}")
    size = min(requested or DEFAULT_CALIBRATION, max(1, n_test // 2))
    return size


def _fit(args, ckpt, run_dir: Path, key: dict, folder: Path):
    from .. import data
    from ..detectors import Detector, select_sigma2
    from ..models import features

    clf = ckpt.classifier
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), data_dir=args.data_dir, data_file=args.data_file,
                           model=clf)
    n_cal = calibration_slice(len(ds.x_test), args.calibration_size)
    det = Detector(clf, args.metric, progress=not args.quiet, **metric_settings(args, key))
    extra = {}
    if args.metric == "kd":
        bank = features.cached(clf, ds.train_images(), ds.y_train,
                               folder / f"train-features-{key['weights_sha256'][:12]}.safetensors",
                               progress=not args.quiet)
        det.fit(bank)
        auto = det.bandwidth_selection or select_sigma2(bank.features, bank.labels, clf.num_classes,
                                                         per_class=key["per_class"], seed=args.seed)
        extra["sigma2_auto"] = auto.sigma2
    elif det.scorer.needs_fit:
        det.fit(ds.train_images(), ds.y_train)
    else:
        det.fit(None)
    det.calibrate(ds.test_images()[-n_cal:], fpr=args.fpr)
    extra.update({"key": key, "dataset": ds.name, "image_shape": list(ds.image_shape),
                  "calibration": f"last {n_cal} images of the {ds.name} test split"})
    det.save(folder, extra=extra)
    det.extra = extra
    return det


def metric_settings(args, key: dict) -> dict:
    """The constructor settings of ``args.metric`` from the options."""
    from ..detectors import REGISTRY

    kd = {"per_class": key["per_class"], "sigma2": key["sigma2"], "seed": args.seed}
    if args.metric == "kd":
        return kd
    if REGISTRY[args.metric].needs_fit_images:
        fit = {"fit_on": args.fit_on, "fit_eps": args.fit_eps, "fit_images": args.fit_images, "seed": args.seed}
        return {**fit, **({"per_class": key["per_class"], "sigma2": key["sigma2"]} if args.metric == "kd_bu" else {})}
    return {}


def checked_settings(args) -> tuple:
    """(per_class, sigma2) from the options, checked before anything is loaded."""
    from ..core.errors import ConfigError

    if not 0.0 <= args.fpr < 1.0:
        raise ConfigError(f"--fpr must be in [0, 1), got {args.fpr}")
    per_class = args.per_class if args.per_class == "all" else None
    if per_class is None:
        try:
            per_class = int(args.per_class)
        except ValueError:
            raise ConfigError(f"--per-class must be a positive integer or 'all', got {args.per_class!r}") from None
    sigma2 = args.sigma2
    if sigma2 is not None and sigma2 != "auto":
        try:
            sigma2 = float(sigma2)
        except ValueError:
            raise ConfigError(f"--sigma2 must be a number or 'auto', got {args.sigma2!r}") from None
    return per_class, sigma2


def calibrated_detector(args, ckpt):
    """The run's detector for ``args.metric``, fitted and calibrated at ``args.fpr`` on clean held-out test
    images, loaded from ``RUN/detector-<metric>/`` when its settings and the weights match, else (re)built."""
    from ..core.errors import RceError
    from ..detectors import REGISTRY, Detector, create

    per_class, sigma2 = checked_settings(args)
    run_dir = Path(args.run_dir)
    key = {"weights_sha256": ckpt.meta["weights_sha256"], "metric": args.metric, "fpr": args.fpr,
           "calibration_size": args.calibration_size, "per_class": per_class, "sigma2": sigma2,
           "seed": args.seed, "dataset": ckpt.config.get("dataset", ckpt.meta.get("dataset"))}
    if REGISTRY[args.metric].needs_fit_images:
        key.update(fit_on=args.fit_on, fit_eps=args.fit_eps, fit_images=args.fit_images)
    if getattr(args, "data_file", None):  # other data: another detector (only then in the key: old caches stay valid)
        key.update(dataset="npz", data_file=str(Path(args.data_file).resolve()))
    create(args.metric, **metric_settings(args, key))  # bad settings fail here, before any work
    folder = run_dir / f"detector-{args.metric}"
    if not args.refit and (folder / "detector.json").is_file():
        try:
            det = Detector.load(folder, ckpt.classifier)
            if det.extra.get("key") == key and det.calibrated:
                return det
        except RceError:
            pass  # a stale or broken cache is rebuilt
    return _fit(args, ckpt, run_dir, key, folder)
