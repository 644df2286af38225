"""The reproduce config: a preset (TOML) expanded with defaults and ``--set`` overrides, then typed and checked.

A reproduce preset (``configs/demo.toml``, ``paper-mnist.toml``, ...) has an ``[experiment]`` section, a
``[models.<name>]`` table per model (``preset`` = a training preset, ``role`` = "main" for Tables 1-3 or
"target" for the ResNet-56 of Tables 1 and 4, optional ``[models.<name>.train]`` overrides), a ``[detector]``
section and an ``[attacks.<name>]`` table per attack (``images``, ``batch``, an ``eps`` grid for attacks that take
one, ``settings`` for the attack's dataclass). Each model's training preset is expanded into
``models.<name>.train`` before ``--set`` overrides apply, so ``--set models.ce.train.steps=100`` works.

:func:`resolve_config` returns the expanded dict (saved as ``config.json`` and inside ``results.json``);
:func:`plan` types it and checks every setting before any stage runs. In TOML a σ² of 0 means "the paper's value"
(TOML has no null); the typed config turns it into ``None``, the package's one paper-default marker
(:func:`rcedetect.detectors.resolve_sigma2`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from .. import attack_store, attacks
from ..config import TrainConfig, apply_overrides, load_preset
from ..errors import ConfigError

EXPERIMENT_DEFAULTS = {"name": "", "seed": 0, "device": "auto", "train_feature_images": 50000,
                       "tsne_images": 1000, "figure3_images": 8, "table2_eps": 0.16, "batch_size": 500, "threads": 0,
                       "calibration_images": 1000}
DETECTOR_DEFAULTS = {"per_class": 1000, "attack_per_class": 100, "sigma2_ce": 0.0, "sigma2_rce": 0.0, "seed": 0,
                     # the baselines of other papers (protocol §15) and their regression's fitting split
                     "baselines": ["kd_bu", "lid", "mahalanobis"], "fit_on": "fgsm", "fit_eps": 0.0,
                     "fit_images": 1000, "settings": {}}
ATTACK_DEFAULTS = {"images": 1000, "batch": 100, "settings": {}}
#: the adaptive evaluation (``[adaptive]``): attacks that know the detector, against each metric's threshold
ADAPTIVE_DEFAULTS = {"metrics": ["kd", "non_me", "confidence"], "images": 100, "batch": 100, "fpr": 0.05,
                     "bootstrap": 1000, "sanity": True, "attacks": {}}
ROLES = ("main", "target")


def resolve_config(preset: str, overrides: list[str] | None = None, device: str | None = None,
                   data_dir: str | None = None) -> dict:
    """The fully expanded reproduce config of ``preset`` with ``--set`` overrides, ``--device`` and ``--data-dir``
    (the dataset folder of every model) applied, checked by :func:`plan`."""
    raw = load_preset(preset)
    if "experiment" not in raw or "models" not in raw:
        raise ConfigError(f"preset {preset!r} is not a reproduce preset (it needs [experiment] and [models.*]); "
                          "use `rce train` for training presets")
    cfg = copy.deepcopy(raw)
    cfg["experiment"] = {**EXPERIMENT_DEFAULTS, **cfg["experiment"]}
    cfg["detector"] = {**DETECTOR_DEFAULTS, **cfg.get("detector", {})}
    cfg.setdefault("cuts", {"notes": []})
    for name, m in cfg["models"].items():
        if not isinstance(m, dict) or "preset" not in m:
            raise ConfigError(f"models.{name} needs preset = \"<training preset>\"")
        base = load_preset(m["preset"]).get("train")
        if base is None:
            raise ConfigError(f"models.{name}.preset {m['preset']!r} is not a training preset")
        m["train"] = {**TrainConfig().to_dict(), **base, **m.get("train", {})}
        m.setdefault("role", "main")
    for name, a in cfg.get("attacks", {}).items():
        cfg["attacks"][name] = {**copy.deepcopy(ATTACK_DEFAULTS), **a}
    if "adaptive" in cfg:
        ad = cfg["adaptive"] = {**copy.deepcopy(ADAPTIVE_DEFAULTS), **cfg["adaptive"]}
        for name, a in ad["attacks"].items():
            ad["attacks"][name] = {"images": ad["images"], "batch": ad["batch"], "settings": {}, **a}
    cfg = apply_overrides(cfg, overrides)
    if device:
        cfg["experiment"]["device"] = device
    for m in cfg["models"].values():
        if cfg["experiment"]["device"] != "auto" or device:
            m["train"]["device"] = cfg["experiment"]["device"]
        if data_dir:
            m["train"]["data_dir"] = str(data_dir)
    plan(cfg)
    return cfg


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    device: str
    train_feature_images: int
    tsne_images: int
    figure3_images: int
    table2_eps: float
    batch_size: int
    threads: int
    calibration_images: int  # clean test images outside the attack pool, for the detectors' thresholds


@dataclass(frozen=True)
class DetectorSettings:
    """K-density settings of every model: kernel points per class, the attack subset, σ² per objective, seed."""

    per_class: int | str
    attack_per_class: int
    sigma2_ce: float | None  # None = the paper's value (protocol §4.3)
    sigma2_rce: float | None
    seed: int

    def sigma2(self, objective: str) -> float | None:
        return self.sigma2_ce if objective == "ce" else self.sigma2_rce

    baselines: tuple[str, ...] = ()
    fit_on: str = "fgsm"
    fit_eps: float = 0.1  # resolved: experiment.table2_eps when the config says 0
    fit_images: int = 1000
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline -> its own settings

    def kd_settings(self, objective: str) -> dict[str, Any]:
        """The settings of the ``kd`` metric for a model of ``objective`` (also the detector's cache key)."""
        return {"per_class": self.per_class, "attack_per_class": self.attack_per_class, "seed": self.seed,
                "sigma2": self.sigma2(objective)}

    def baseline_settings(self, metric: str, objective: str) -> dict[str, Any]:
        """The settings of baseline ``metric`` (protocol §15): the shared fitting split, KD+BU's kernel as the
        ``kd`` detector's, then the metric's own ``detector.settings.<metric>``."""
        out: dict[str, Any] = {"fit_on": self.fit_on, "fit_eps": self.fit_eps, "fit_images": self.fit_images,
                               "seed": self.seed}
        if metric == "kd_bu":
            out.update(per_class=self.per_class, sigma2=self.sigma2(objective))
        return {**out, **self.settings.get(metric, {})}

    def settings_of(self, metric: str, objective: str) -> dict[str, Any]:
        """The constructor settings of any fitted metric (``kd`` or a baseline)."""
        return self.kd_settings(objective) if metric == "kd" else self.baseline_settings(metric, objective)


@dataclass(frozen=True)
class ModelPlan:
    name: str
    role: str
    train: TrainConfig


@dataclass(frozen=True)
class AttackPlan:
    name: str
    images: int
    batch: int
    eps: tuple[float, ...] | None
    settings: dict[str, Any]
    metrics: tuple[str, ...] | None = None  # adaptive attacks: the detectors it is run against (default: all)
    attack: str = ""  # the registered attack, when the table's name is another (e.g. pgd_detector_l2)

    @property
    def registered(self) -> str:
        return self.attack or self.name

    @property
    def spec(self) -> attacks.AttackSpec:
        return attacks.spec(self.registered)


@dataclass(frozen=True)
class AdaptivePlan:
    """The adaptive evaluation: every attack against each metric's detector, thresholded at ``fpr`` on clean
    held-out images; ``bootstrap`` resamples for the intervals; ``sanity`` runs the checks of :mod:`.sanity`."""

    metrics: tuple[str, ...]
    fpr: float
    bootstrap: int
    sanity: bool
    attacks: dict[str, AttackPlan]


@dataclass(frozen=True)
class Plan:
    """The typed view of a resolved config dict (``raw``, kept as it is for hashes and results.json)."""

    raw: dict
    experiment: Experiment
    detector: DetectorSettings
    models: dict[str, ModelPlan]
    attacks: dict[str, AttackPlan]
    adaptive: AdaptivePlan | None = None

    @property
    def mains(self) -> list[str]:
        return [n for n, m in self.models.items() if m.role == "main"]

    @property
    def targets(self) -> list[str]:
        return [n for n, m in self.models.items() if m.role == "target"]


def _int(section: dict, key: str, where: str, low: int = 0) -> int:
    v = section.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where}.{key} must be an integer >= {low}, got {v!r}")
    return v


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def _sigma2(v, where: str) -> float | None:
    if _number(v, where) < 0:
        raise ConfigError(f"{where} must be > 0, or 0 for the paper's value, got {v!r}")
    return None if v == 0 else v  # the value as written: cache keys hash it


def plan(cfg: dict) -> Plan:
    """Type and check every setting of a resolved config; ConfigError names the first bad one."""
    e = cfg["experiment"]
    if not isinstance(e.get("name"), str) or not isinstance(e.get("device"), str):
        raise ConfigError("experiment.name and experiment.device must be strings")
    experiment = Experiment(e["name"], _int(e, "seed", "experiment"), e["device"],
                            _int(e, "train_feature_images", "experiment", 1), _int(e, "tsne_images", "experiment"),
                            _int(e, "figure3_images", "experiment"), _number(e["table2_eps"], "experiment.table2_eps"),
                            _int(e, "batch_size", "experiment", 1), _int(e, "threads", "experiment"),
                            _int(e, "calibration_images", "experiment", 1))
    d = cfg["detector"]
    per_class = d.get("per_class")
    if per_class != "all":
        per_class = _int(d, "per_class", "detector", 1)
    detector = _detector_settings(d, per_class, experiment)
    models, datasets = {}, set()
    for name, m in cfg["models"].items():
        if m["role"] not in ROLES:
            raise ConfigError(f"models.{name}.role must be \"main\" or \"target\", got {m['role']!r}")
        tc = TrainConfig.from_dict(m["train"])
        models[name] = ModelPlan(name, m["role"], tc)
        datasets.add((tc.dataset, tc.data_dir, tc.data_file))
    if not any(m.role == "main" for m in models.values()):
        raise ConfigError("a reproduce preset needs at least one model with role = \"main\"")
    if len(datasets) != 1:
        raise ConfigError(f"every model of a reproduce preset must use the same dataset, got {sorted(datasets)}")
    plans = {name: _attack_plan(name, a, f"attacks.{name}", experiment.seed)
             for name, a in cfg.get("attacks", {}).items()}
    return Plan(cfg, experiment, detector, models, plans, _adaptive_plan(cfg.get("adaptive"), experiment.seed))


def _detector_settings(d: dict, per_class, experiment: Experiment) -> DetectorSettings:
    from .. import detectors

    baselines, own = d.get("baselines"), d.get("settings")
    if not isinstance(baselines, list) or not all(isinstance(m, str) for m in baselines):
        raise ConfigError(f"detector.baselines must be a list of detector names, got {baselines!r}")
    for m in baselines:
        detectors.check_metric(m)
        if detectors.REGISTRY[m].in_paper:
            raise ConfigError(f"detector.baselines lists {m!r}, one of the paper's detectors (always fitted)")
    if not isinstance(own, dict) or not all(isinstance(v, dict) and k in baselines for k, v in own.items()):
        raise ConfigError("detector.settings must be a table of tables, one per detector of detector.baselines")
    fit_eps = _number(d.get("fit_eps"), "detector.fit_eps")
    if not isinstance(d.get("fit_on"), str):
        raise ConfigError(f"detector.fit_on must name an attack, got {d.get('fit_on')!r}")
    out = DetectorSettings(per_class, _int(d, "attack_per_class", "detector", 1),
                           _sigma2(d.get("sigma2_ce"), "detector.sigma2_ce"),
                           _sigma2(d.get("sigma2_rce"), "detector.sigma2_rce"), _int(d, "seed", "detector"),
                           tuple(baselines), d["fit_on"], fit_eps or experiment.table2_eps,
                           _int(d, "fit_images", "detector", 4), own)
    for m in baselines:  # bad settings fail now, not after training
        for objective in ("ce", "rce"):
            detectors.create(m, **out.baseline_settings(m, objective))
    return out


def _attack_plan(name: str, a: dict, where: str, seed: int) -> AttackPlan:
    registered = a.get("attack", name)
    if not isinstance(registered, str):
        raise ConfigError(f"{where}.attack must name a registered attack, got {registered!r}")
    spec = attacks.spec(registered)
    if spec.takes_eps != ("eps" in a):
        raise ConfigError(f"{where}: {'give' if spec.takes_eps else 'drop'} an eps list")
    eps = None
    if "eps" in a:
        if not isinstance(a["eps"], list) or not a["eps"]:
            raise ConfigError(f"{where}.eps must be a non-empty list of numbers, got {a['eps']!r}")
        eps = tuple(a["eps"])  # as written: cache keys hash the values
        for v in eps:
            if _number(v, f"{where}.eps") < 0:
                raise ConfigError(f"{where}.eps values must be >= 0, got {v!r}")
    if not isinstance(a["settings"], dict):
        raise ConfigError(f"{where}.settings must be a table of attack settings")
    plan = AttackPlan(name, _int(a, "images", where, 1), _int(a, "batch", where, 1), eps, a["settings"],
                      attack=registered if registered != name else "")
    for v in eps or (None,):  # build each attack once: bad settings fail now, not after training
        attack_store.probe(registered, a["settings"], v, seed)
    return plan


def _adaptive_plan(ad: dict | None, seed: int) -> AdaptivePlan | None:
    if ad is None:
        return None
    from ..detectors import check_metric

    metrics = ad["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"adaptive.metrics must be a non-empty list of detector names, got {metrics!r}")
    for m in metrics:
        check_metric(m)
    fpr = _number(ad["fpr"], "adaptive.fpr")
    if not 0 < fpr < 1:
        raise ConfigError(f"adaptive.fpr must be in (0, 1), got {fpr!r}")
    if not isinstance(ad["sanity"], bool) or not isinstance(ad["attacks"], dict):
        raise ConfigError("adaptive.sanity must be true or false and adaptive.attacks a table of attacks")
    plans = {}
    for name, a in ad["attacks"].items():
        only = a.get("metrics")
        if only is not None and (not isinstance(only, list) or not set(only) <= set(metrics)):
            raise ConfigError(f"adaptive.attacks.{name}.metrics must be a list among adaptive.metrics {metrics}")
        plan = _attack_plan(name, {k: v for k, v in a.items() if k != "metrics"}, f"adaptive.attacks.{name}", seed)
        plans[name] = AttackPlan(plan.name, plan.images, plan.batch, plan.eps, plan.settings,
                                 tuple(only) if only is not None else None, plan.attack)
    return AdaptivePlan(tuple(metrics), fpr, _int(ad, "bootstrap", "adaptive"), ad["sanity"], plans)
