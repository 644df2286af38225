"""The reproduce config: a preset (TOML) expanded with defaults and ``--set`` overrides, then typed and checked.

A reproduce preset (``configs/demo.toml``, ``paper-mnist.toml``, ...) has an ``[experiment]`` section, a
``[models.<name>]`` table per model (``preset`` = a training preset, ``role`` = "main" for Tables 1-3,
"target" for the ResNet-56 of Tables 1 and 4 or "robust" for an adversarially trained model evaluated for robust
accuracy only (:mod:`.robust_config`), optional ``[models.<name>.train]`` overrides; ``like = "<model>"`` in place
of ``preset`` trains it as that model but for its own settings, :func:`expand_like`), a ``[detector]``
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
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .. import attacks, detectors
from ..attacks.base import check_eps
from ..attacks.thirdparty import attack_norm
from ..core.errors import ConfigError
from ..core.settings import SEED_RANGE, THREADS_RANGE, check_fields, setting, typed
from ..evaluation import attack_store
from ..training.config import TrainConfig, apply_overrides, load_preset
from .preset_keys import check_cuts, check_preset
from .replicates import seed_counts
from .robust_config import ROBUST_ROLE, RobustPlan, detect_setting, robust_plan
from .robust_config import expand as expand_robust

DETECTOR_DEFAULTS = {"per_class": 1000, "attack_per_class": 100, "sigma2_ce": 0.0, "sigma2_rce": 0.0, "seed": 0,
                     # the baselines of other papers (protocol §15) and their regression's fitting split
                     "baselines": ["kd_bu", "lid", "mahalanobis"], "fit_on": "fgsm", "fit_eps": 0.0,
                     "fit_images": 1000, "settings": {}}
ATTACK_DEFAULTS = {"images": 1000, "batch": 100, "settings": {}}
#: the adaptive evaluation (``[adaptive]``): attacks that know the detector, against each metric's threshold
ADAPTIVE_DEFAULTS = {"metrics": list(detectors.paper_metrics()), "images": 100, "batch": 100, "fpr": 0.05,
                     "bootstrap": 1000, "sanity": True, "attacks": {}}
ROLES = ("main", "target", ROBUST_ROLE)
MODEL_KEYS = ("preset", "like", "role", "train", "detect", "seeds")


def resolve_config(preset: str, overrides: list[str] | None = None, device: str | None = None,
                   data_dir: str | None = None, data_file: str | None = None) -> dict:
    """The fully expanded reproduce config of ``preset`` with ``--set`` overrides, ``--device``, ``--data-dir``
    (the dataset folder of every model) and ``--data-file`` (one ``.npz`` that every model trains and is tested
    on, in place of the preset's dataset) applied, checked by :func:`plan`."""
    raw = load_preset(preset)
    if "experiment" not in raw or "models" not in raw:
        raise ConfigError(f"preset {preset!r} is not a reproduce preset (it needs [experiment] and [models.*]); "
                          "use `rce train` for training presets")
    check_preset(raw, {"experiment": EXPERIMENT_DEFAULTS, "detector": DETECTOR_DEFAULTS, "adaptive": ADAPTIVE_DEFAULTS,
                       "models": MODEL_KEYS})  # a typo in a table or key is refused, not run with the defaults
    cfg = copy.deepcopy(raw)
    cfg["experiment"] = {**EXPERIMENT_DEFAULTS, **cfg["experiment"]}
    cfg["detector"] = {**DETECTOR_DEFAULTS, **cfg.get("detector", {})}
    cfg.setdefault("cuts", {"notes": []})
    for name, m in cfg["models"].items():
        if isinstance(m, dict) and "like" in m:
            m.setdefault("seeds", 0)
            continue  # trained as another model of the preset (expand_like)
        if not isinstance(m, dict) or "preset" not in m:
            raise ConfigError(f"models.{name} needs preset = \"<training preset>\" (or like = \"<model>\")")
        base = load_preset(m["preset"]).get("train")
        if base is None:
            raise ConfigError(f"models.{name}.preset {m['preset']!r} is not a training preset")
        m["train"] = {**TrainConfig().to_dict(), **base, **m.get("train", {})}
        m.setdefault("role", "main")
        m.setdefault("seeds", 0)  # 0: as many as experiment.seeds (.replicates)
    for name, a in cfg.get("attacks", {}).items():
        cfg["attacks"][name] = {**copy.deepcopy(ATTACK_DEFAULTS), **a}
    if "adaptive" in cfg:
        ad = cfg["adaptive"] = {**copy.deepcopy(ADAPTIVE_DEFAULTS), **cfg["adaptive"]}
        for name, a in ad["attacks"].items():
            ad["attacks"][name] = {"images": ad["images"], "batch": ad["batch"], "settings": {}, **a}
    like = expand_like(cfg, TrainConfig().to_dict())
    expand_robust(cfg)
    cfg = apply_overrides(cfg, overrides)
    inherit_like(cfg, like)
    if device:
        cfg["experiment"]["device"] = device
    for m in cfg["models"].values():
        if cfg["experiment"]["device"] != "auto" or device:
            m["train"]["device"] = cfg["experiment"]["device"]
        if data_dir:
            m["train"]["data_dir"] = str(data_dir)
        if data_file:
            m["train"]["dataset"], m["train"]["data_file"] = "npz", str(data_file)
    plan(cfg)
    return cfg


def expand_like(cfg: dict, defaults: dict) -> dict[str, tuple[set, dict]]:
    """``like = "<model>"``: a model of a reproduce preset trained as another one of the same preset, but for
    its own ``[models.<name>.train]`` settings (e.g. a PGD-AT copy of the main CE model: ``like = "ce"`` with
    ``train.adversarial = {...}``). The copy follows the other model's training settings *after* the ``--set``
    overrides (:func:`inherit_like`), so that a cut of the preset (``--set models.ce.train.steps=100``,
    another dataset, another arch) cuts both and the two stay on the same backbone and schedule; a setting of
    its own table, or one ``--set`` on the copy itself, wins.

    Here, before the overrides, every ``like`` model gets its train table (in place): the other model's,
    expanded, with its own on top. Returns {name: (its own keys, the table as expanded)} for
    :func:`inherit_like`."""
    models, out = cfg["models"], {}
    for name, m in models.items():
        if "like" not in m:
            continue
        src = _source(name, m, models)
        own = m.get("train", {})
        if not isinstance(own, dict):
            raise ConfigError(f"models.{name}.train must be a table of training settings")
        m["train"] = {**defaults, **copy.deepcopy(models[src]["train"]), **own}
        m.setdefault("role", "main")
        out[name] = (set(own), copy.deepcopy(m["train"]))
    return out


def inherit_like(cfg: dict, before: dict[str, tuple[set, dict]]) -> None:
    """After the overrides: each ``like`` model takes the other's final settings but for its own keys and those
    ``--set`` on it (in place)."""
    for name, (own, expanded) in before.items():
        m = cfg["models"][name]
        src = _source(name, m, cfg["models"])  # again: --set may have changed it
        mine = own | {k for k, v in m["train"].items() if expanded.get(k) != v}
        m["train"] = {**copy.deepcopy(cfg["models"][src]["train"]), **{k: m["train"][k] for k in mine}}


def _source(name: str, m: dict, models: dict) -> str:
    src = m["like"]
    if "preset" in m:
        raise ConfigError(f"models.{name}: give preset or like, not both")
    if not isinstance(src, str) or src not in models or src == name or "like" in models[src]:
        raise ConfigError(f"models.{name}.like must name another model of the preset that has its own preset, "
                          f"got {src!r}")
    return src


@dataclass(frozen=True)
class Experiment:
    """The ``[experiment]`` section: its keys, types, ranges and defaults are these fields."""

    name: str = ""
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    device: str = "auto"
    train_feature_images: int = setting(50000, lo=1)
    tsne_images: int = setting(1000, lo=0)
    figure3_images: int = setting(8, lo=0)
    table2_eps: float = 0.16
    batch_size: int = setting(500, lo=1)
    threads: int = setting(0, lo=0, hi=THREADS_RANGE[1])
    # clean test images outside the attack pool, for the detectors' thresholds
    calibration_images: int = setting(1000, lo=1)
    channels: int = setting(0, lo=0)  # the image channels the preset expects of its data (0 = any), checked when loaded
    classes: int = setting(0, lo=0)  # the class count it expects (0 = any)
    paper_dataset: str = setting("", choices=("", "mnist", "cifar10"))  # the paper column ("" = by dataset name)
    seeds: int = setting(1, lo=1)  # replicates: each model trained this many times (its own ``seeds`` at most), :mod:`.replicates`

    def __post_init__(self):
        check_fields(self, "experiment.")


EXPERIMENT_DEFAULTS = {f.name: f.default for f in fields(Experiment)}


def sigma2_setting(d: dict, key: str) -> float | None:
    """σ² of the table: > 0, or 0 for the paper's value (TOML has no null), which is None here."""
    v = typed(d, key, "detector", "float", lo=0, hint=" (0: the paper's value)")
    return None if v == 0 else d[key]  # the value as written: cache keys hash it


@dataclass(frozen=True)
class DetectorSettings:
    """The ``[detector]`` section: K-density's settings of every model (protocol §4.2-4.4: kernel points per
    class, the attack subset, σ² per objective, seed) and the baselines of other papers (protocol §15)."""

    per_class: int | str = setting(1000, lo=1, choices=("all",))
    attack_per_class: int = setting(100, lo=1)
    # None = the paper's value (protocol §4.3); a number as written (cache keys hash it)
    sigma2_ce: float | int | None = setting(None, lo=0, lo_open=True)
    sigma2_rce: float | int | None = setting(None, lo=0, lo_open=True)
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    baselines: tuple[str, ...] = ()
    fit_on: str = "fgsm"
    fit_eps: float = 0.1  # resolved: experiment.table2_eps when the config says 0
    fit_images: int = setting(1000, lo=4)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline -> its own settings

    def __post_init__(self):
        check_fields(self, "detector.")

    def sigma2(self, objective: str) -> float | None:
        return self.sigma2_ce if objective == "ce" else self.sigma2_rce

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


def detector_settings(d: dict, table2_eps: float) -> DetectorSettings:
    baselines, own = d.get("baselines"), d.get("settings")
    if not isinstance(baselines, list) or not all(isinstance(m, str) for m in baselines):
        raise ConfigError(f"detector.baselines must be a list of detector names, got {baselines!r}")
    for m in baselines:
        detectors.check_metric(m)
        if detectors.REGISTRY[m].in_paper:
            raise ConfigError(f"detector.baselines lists {m!r}, one of the paper's detectors (always fitted)")
    if not isinstance(own, dict) or not all(isinstance(v, dict) and k in baselines for k, v in own.items()):
        raise ConfigError("detector.settings must be a table of tables, one per detector of detector.baselines")
    fit_eps = typed(d, "fit_eps", "detector", "float")
    out = DetectorSettings(d["per_class"], d["attack_per_class"], sigma2_setting(d, "sigma2_ce"),
                           sigma2_setting(d, "sigma2_rce"), d["seed"], tuple(baselines), d["fit_on"],
                           fit_eps or table2_eps, d["fit_images"], own)
    for m in baselines:  # bad settings fail now, not after training
        for objective in ("ce", "rce"):
            detectors.create(m, **out.baseline_settings(m, objective))
    return out


@dataclass(frozen=True)
class ModelPlan:
    name: str
    role: str
    train: TrainConfig
    detect: bool = True  # features, detectors and the adaptive attacks (a robust model only with detect = true)


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
    robust: RobustPlan | None = None

    @property
    def mains(self) -> list[str]:
        return [n for n, m in self.models.items() if m.role == "main"]

    @property
    def robusts(self) -> list[str]:
        """The models trained for robust accuracy alone (role "robust": no detector, no paper table)."""
        return [n for n, m in self.models.items() if m.role == ROBUST_ROLE]

    @property
    def detected(self) -> list[str]:
        """The models with features, detectors and the adaptive attacks against them: every main model and each
        robust model with ``detect = true`` (detection on an adversarially trained classifier, protocol §20)."""
        return [n for n, m in self.models.items() if m.role == "main" or (m.role == ROBUST_ROLE and m.detect)]

    @property
    def robust_evaluated(self) -> list[str]:
        """The models whose robust accuracy is evaluated: every main and robust model (with a [robust] section)."""
        return [n for n, m in self.models.items() if m.role in ("main", ROBUST_ROLE)] if self.robust else []

    @property
    def targets(self) -> list[str]:
        return [n for n, m in self.models.items() if m.role == "target"]


def plan(cfg: dict) -> Plan:
    """Type and check every setting of a resolved config; ConfigError names the first bad one."""
    experiment = Experiment(**{**cfg["experiment"], "seeds": seed_counts(cfg)[0]})  # seeds: .replicates
    check_cuts(cfg.get("cuts", {}))
    detector = detector_settings(cfg["detector"], experiment.table2_eps)
    models, datasets = {}, set()
    for name, m in cfg["models"].items():
        if m["role"] not in ROLES:
            raise ConfigError(f"models.{name}.role must be \"main\", \"target\" or \"robust\", got {m['role']!r}")
        unknown = sorted(set(m) - set(MODEL_KEYS))
        if unknown:
            raise ConfigError(f"unknown models.{name} setting(s) {unknown}; known: {', '.join(MODEL_KEYS)}")
        tc = TrainConfig.from_dict(m["train"])
        if m["role"] == ROBUST_ROLE and tc.adversarial is None:  # trained adversarially (protocol §19)
            raise ConfigError(f"models.{name}.role = \"robust\" needs adversarial training: give "
                              f"models.{name}.train.adversarial = {{eps = ..., steps = ...}} (PGD-AT; add "
                              "trades_beta for TRADES), or make it a \"main\" model")
        models[name] = ModelPlan(name, m["role"], tc, detect_setting(name, m))
        datasets.add((tc.dataset, tc.data_dir, tc.data_file))
    if not any(m.role == "main" for m in models.values()):
        raise ConfigError("a reproduce preset needs at least one model with role = \"main\"")
    if len(datasets) != 1:
        raise ConfigError(f"every model of a reproduce preset must use the same dataset, got {sorted(datasets)}")
    plans = {name: _attack_plan(name, a, f"attacks.{name}", experiment.seed)
             for name, a in cfg.get("attacks", {}).items()}
    adaptive = _adaptive_plan(cfg.get("adaptive"), experiment.seed)
    if any(m.role == ROBUST_ROLE for m in models.values()) and "robust" not in cfg:
        raise ConfigError("models with role = \"robust\" need a [robust] section (their robust accuracy)")
    return Plan(cfg, experiment, detector, models, plans, adaptive,
                robust_plan(cfg.get("robust"), adaptive, experiment.seed,
                            [m.train.adversarial.eps for m in models.values() if m.role == ROBUST_ROLE
                             and m.train.adversarial.norm == "linf"]))


def _attack_plan(name: str, a: dict, where: str, seed: int) -> AttackPlan:
    registered = a.get("attack", name)
    if not isinstance(registered, str):
        raise ConfigError(f"{where}.attack must name a registered attack, got {registered!r}")
    spec = attacks.spec(registered)
    if spec.takes_eps != ("eps" in a):
        raise ConfigError(f"{where}: {'give' if spec.takes_eps else 'drop'} an eps list")
    if not isinstance(a["settings"], dict):
        raise ConfigError(f"{where}.settings must be a table of attack settings")
    eps = None
    if "eps" in a:
        if not isinstance(a["eps"], list) or not a["eps"]:
            raise ConfigError(f"{where}.eps must be a non-empty list of numbers, got {a['eps']!r}")
        eps = tuple(a["eps"])  # as written: cache keys hash the values
        for v in eps:  # the attacks' own rule, its norm's bound included
            check_eps(v, f"{where}.eps", attack_norm(registered, a["settings"]))
    plan = AttackPlan(name, typed(a, "images", where, lo=1), typed(a, "batch", where, lo=1), eps, a["settings"],
                      attack=registered if registered != name else "")
    for v in eps or (None,):  # build each attack once: bad settings fail now, not after training
        attack_store.probe(registered, a["settings"], v, seed)
    return plan


def _adaptive_plan(ad: dict | None, seed: int) -> AdaptivePlan | None:
    if ad is None:
        return None
    metrics = ad["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"adaptive.metrics must be a non-empty list of detector names, got {metrics!r}")
    for m in metrics:
        detectors.check_metric(m)
    fpr = typed(ad, "fpr", "adaptive", "float", lo=0, hi=1, lo_open=True, hi_open=True)
    if not isinstance(ad["attacks"], dict):
        raise ConfigError("adaptive.attacks must be a table of attacks")
    plans = {}
    for name, a in ad["attacks"].items():
        only = a.get("metrics")
        if only is not None and (not isinstance(only, list) or not all(isinstance(m, str) for m in only)
                                 or not set(only) <= set(metrics)):
            raise ConfigError(f"adaptive.attacks.{name}.metrics must be a list among adaptive.metrics {metrics}")
        plan = _attack_plan(name, {k: v for k, v in a.items() if k != "metrics"}, f"adaptive.attacks.{name}", seed)
        plans[name] = replace(plan, metrics=tuple(only) if only is not None else None)
    return AdaptivePlan(tuple(metrics), fpr, typed(ad, "bootstrap", "adaptive", lo=0),
                        typed(ad, "sanity", "adaptive", "bool"), plans)
