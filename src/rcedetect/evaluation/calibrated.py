"""The command line's detector of a run: fitted on the run's own training images, calibrated on clean held-out
test images (the LAST ``--calibration-size`` of the test split) and cached in ``RUN_DIR/detector-<metric>/``,
rebuilt only when the weights or the detector settings change (``rce detect``, ``rce calibrate``,
``rce fit-detector``, ``rce evaluate-detector`` and ``rce serve`` use the same one, with the same
:class:`FitOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.settings import SEED_RANGE, check_fields, setting

DEFAULT_CALIBRATION = 1000


@dataclass(frozen=True)
class FitOptions:
    """How the command line fits and calibrates a run's detectors: each option's type, range and default, declared
    once (``commands.add_fit_options`` reads the defaults here) and checked when built, before anything loads.
    A metric's own settings (per_class's and σ²'s ranges, the fitting attack) are checked by the metric
    (:func:`rcedetect.detectors.create` with :meth:`settings`)."""

    fpr: float = setting(0.05, lo=0, hi=1, hi_open=True)  # the share of clean held-out images rejected
    calibration_size: int | None = setting(None, lo=1)  # None: DEFAULT_CALIBRATION (at most half the test split)
    per_class: int | str = setting(1000, lo=1, choices=("all",))  # K-density kernel points per class, or "all"
    sigma2: float | str | None = setting(None, choices=("auto",))  # K-density bandwidth: None = the paper's
    fit_on: str = "fgsm"  # LID / Mahalanobis / KD+BU: the attack of their regression's fitting split
    fit_eps: float = 0.1  # its ε
    fit_images: int = setting(1000, lo=1)  # training images of the fitting split
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])  # the kernel subset and the fitting split
    refit: bool = False  # ignore a cached detector
    quiet: bool = False  # no progress bars
    data_dir: str | None = None  # the run's dataset elsewhere
    data_file: str | None = None  # another .npz dataset (then part of the cache key)

    def __post_init__(self) -> None:
        for name, parse in (("per_class", int), ("sigma2", float)):  # a command line's text
            value = getattr(self, name)
            if isinstance(value, str) and value not in ("all", "auto"):
                try:
                    object.__setattr__(self, name, parse(value))
                except ValueError:
                    pass  # refused below, as the string it is
        check_fields(self, name=lambda n: "--" + n.replace("_", "-"))

    def settings(self, metric: str) -> dict:
        """The constructor settings of ``metric`` (:func:`rcedetect.detectors.create`) from these options."""
        from ..detectors import REGISTRY, check_metric

        kd = {"per_class": self.per_class, "sigma2": self.sigma2, "seed": self.seed}
        if metric == "kd":
            return kd
        if not REGISTRY[check_metric(metric)].needs_fit_images:
            return {}
        fit = {"fit_on": self.fit_on, "fit_eps": self.fit_eps, "fit_images": self.fit_images, "seed": self.seed}
        return {**fit, **kd} if metric == "kd_bu" else fit

    def key(self, metric: str, ckpt) -> dict:
        """What the cached detector of ``metric`` was built from (compared with the one saved beside it)."""
        from ..detectors import REGISTRY

        key = {"weights_sha256": ckpt.meta["weights_sha256"], "metric": metric, "fpr": self.fpr,
               "calibration_size": self.calibration_size, "per_class": self.per_class, "sigma2": self.sigma2,
               "seed": self.seed, "dataset": ckpt.config.get("dataset", ckpt.meta.get("dataset"))}
        if REGISTRY[metric].needs_fit_images:
            key.update(fit_on=self.fit_on, fit_eps=self.fit_eps, fit_images=self.fit_images)
        if self.data_file:  # other data: another detector (only then in the key: old caches stay valid)
            key.update(dataset="npz", data_file=str(Path(self.data_file).resolve()))
        return key


def calibration_slice(n_test: int, requested: int | None) -> int:
    """How many images at the end of a test split of ``n_test`` calibrate (``requested`` checked by FitOptions)."""
    return min(requested or DEFAULT_CALIBRATION, max(1, n_test // 2))


def calibrated_detector(ckpt, run_dir: str | Path, metric: str, opts: FitOptions):
    """The run's detector for ``metric``, fitted and calibrated at ``opts.fpr`` on clean held-out test images,
    loaded from ``RUN/detector-<metric>/`` when its settings and the weights match, else (re)built."""
    from ..core.errors import RceError
    from ..detectors import Detector

    key, folder = opts.key(metric, ckpt), Path(run_dir) / f"detector-{metric}"
    if not opts.refit and (folder / "detector.json").is_file():
        try:
            det = Detector.load(folder, ckpt.classifier)
            if det.extra.get("key") == key and det.calibrated:
                return det
        except RceError:
            pass  # a stale or broken cache is rebuilt
    return _fit(ckpt, metric, opts, key, folder)


def _fit(ckpt, metric: str, opts: FitOptions, key: dict, folder: Path):
    from .. import data
    from ..detectors import Detector, select_sigma2
    from ..models import features

    clf = ckpt.classifier
    ds = data.load_for_run(ckpt.config, ckpt.meta.get("dataset"), data_dir=opts.data_dir, data_file=opts.data_file,
                           model=clf)
    n_cal = calibration_slice(len(ds.x_test), opts.calibration_size)
    det = Detector(clf, metric, progress=not opts.quiet, **opts.settings(metric))
    extra = {}
    if metric == "kd":
        bank = features.cached(clf, ds.train_images(), ds.y_train,
                               folder / f"train-features-{key['weights_sha256'][:12]}.safetensors",
                               progress=not opts.quiet)
        det.fit(bank)
        auto = det.bandwidth_selection or select_sigma2(bank.features, bank.labels, clf.num_classes,
                                                         per_class=opts.per_class, seed=opts.seed)
        extra["sigma2_auto"] = auto.sigma2
    elif det.scorer.needs_fit:
        det.fit(ds.train_images(), ds.y_train)
    else:
        det.fit(None)
    det.calibrate(ds.test_images()[-n_cal:], fpr=opts.fpr)
    extra.update({"key": key, "dataset": ds.name, "image_shape": list(ds.image_shape),
                  "calibration": f"last {n_cal} images of the {ds.name} test split"})
    det.save(folder, extra=extra)
    det.extra = extra
    return det
