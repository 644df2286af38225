"""Presets (TOML files in ``configs/``), ``key=value`` overrides, and the frozen training config."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.settings import COUNT_RANGE, check_keys, check_seed, did_you_mean, int_in_range
from ..core.textfiles import is_toml_error, loads_toml

PRESET_DIR = Path(__file__).parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The preset ``name`` as a nested dict; a path to a ``.toml`` file is accepted as well."""
    path = Path(name)
    if not (path.suffix == ".toml" and path.is_file()):
        path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())} or a .toml file")
    return loads_toml(path.read_bytes(), f"preset {path}")


def parse_value(text: str) -> Any:
    """Parse the value of ``--set key=value`` as TOML (numbers, booleans, lists, quoted strings), else a string."""
    try:
        return loads_toml(f"v = {text}", f"--set value {text[:40]!r}")["v"]
    except ConfigError as e:
        if is_toml_error(e):
            return text
        raise


#: settings that are a table or absent (None): ``--set train.adversarial.eps=0.3`` starts the table; its keys are
#: checked where the table is read (:class:`AdversarialSettings`)
OPTIONAL_TABLES = ("adversarial",)


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``config`` with each ``a.b=value`` applied; unknown keys raise :class:`ConfigError`."""
    import copy

    out = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if p in OPTIONAL_TABLES and p in node and node[p] is None:
                node[p] = {}  # an absent optional table, started by its first key
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown setting {key!r}: no section {p!r}{did_you_mean(p, node)}; known: "
                                  f"{', '.join(sorted(node))}")
            node = node[p]
        # an attack's `settings` table is open (the attack itself refuses unknown names when it is built), and so
        # is an optional table (its dataclass refuses unknown keys)
        if parts[-1] not in node and not (len(parts) > 1 and parts[-2] in ("settings", *OPTIONAL_TABLES)):
            raise ConfigError(f"unknown setting {key!r}{did_you_mean(parts[-1], node)}; known keys here: "
                              f"{', '.join(sorted(node))}")
        value, old = parse_value(text.strip()), node.get(parts[-1])
        if isinstance(old, dict) and old and not (isinstance(value, dict) and set(old) <= set(value)):
            raise ConfigError(f"{key} is a table of settings ({', '.join(sorted(old))}); set them one at a time, "
                              f"e.g. --set {key}.{min(old)}=...")
        node[parts[-1]] = value
    return out


def build(cls, values: dict[str, Any], where: str):
    """Construct dataclass ``cls`` from ``values``, refusing unknown keys and values of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        first = min(unknown)
        raise ConfigError(f"unknown {where} setting(s) {sorted(unknown)}{did_you_mean(first, fields)}; known: "
                          f"{', '.join(sorted(fields))}")
    clean = {}
    for k, v in values.items():
        default = getattr(cls, k, None) if not isinstance(fields[k].default, dataclasses._MISSING_TYPE) else None
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(default, tuple) and not isinstance(v, tuple):
            raise ConfigError(f"{where}.{k} must be a list, got {v!r}")
        if isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"{where}.{k} must be a string, got {v!r}")
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ConfigError(f"{where}.{k} must be true or false, got {v!r}")
        if isinstance(default, int) and not isinstance(default, bool) and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{where}.{k} must be an integer, got {v!r}")
        if isinstance(default, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"{where}.{k} must be a number, got {v!r}")
        if isinstance(default, float):
            v = float(v)
        clean[k] = v
    try:
        obj = cls(**clean)
    except TypeError as e:
        raise ConfigError(f"bad {where} settings: {e}") from e
    return obj


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: settings that only one objective reads, left out of the other's configs where they are compared or hashed
OBJECTIVE_ONLY = {"rce_lr_scale": "rce", "rce_ce_steps": "rce"}


def objective_settings(train: dict) -> dict:
    """``train`` (a :meth:`TrainConfig.to_dict`) without the settings its objective does not read
    (:data:`OBJECTIVE_ONLY`): a CE model's config and hash do not move with the RCE recipe's settings."""
    return {k: v for k, v in train.items() if OBJECTIVE_ONLY.get(k, train.get("objective")) == train.get("objective")}


def same_training(saved, cfg: TrainConfig) -> bool:
    """Whether the config saved with a checkpoint trains the same model as ``cfg`` (resume, cached stages). The saved
    config is read back through :class:`TrainConfig`, so one written before a setting existed compares at its default."""
    try:
        back = TrainConfig.from_dict(saved).to_dict()
    except (ConfigError, TypeError, AttributeError):
        return False
    return objective_settings(back) == objective_settings(cfg.to_dict())


def auto_rce_lr_scale(num_classes: int) -> float:
    """The factor on an RCE model's learning rates that ``rce_lr_scale = 0`` (the default) stands for: L - 1 for
    L classes (protocol §22: RCE's gradient at the start is 1/(L - 1) of CE's), at most MAX_AUTO_RCE_LR_SCALE."""
    return float(min(max(1, num_classes - 1), MAX_AUTO_RCE_LR_SCALE))


#: beyond about 33× the paper's rate RCE diverged on 100 classes even with a warm-up (protocol §22)
MAX_AUTO_RCE_LR_SCALE = 33


#: the attacks that can craft the training batches of adversarial training (``adversarial.attack``)
TRAINING_ATTACKS = ("pgd",)
ADVERSARIAL_NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AdversarialSettings:
    """The ``train.adversarial`` table (protocol §19): the attack that crafts each step's training batch, PGD
    with a random start (PGD-AT, Madry et al. 2018) or, with ``trades_beta``, TRADES' KL-ascending PGD (Zhang et
    al. 2019). ``eps`` on the [0, 1] image scale (0 < ε ≤ 1 for L∞, ε > 0 for L2), ``steps`` ≥ 1, ``step_size``
    α > 0 or None for 2.5·ε/steps (Madry et al.'s rule, as the registry's PGD)."""

    eps: float
    attack: str = "pgd"
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self):
        if not isinstance(self.attack, str) or self.attack not in TRAINING_ATTACKS:
            raise ConfigError(f"adversarial.attack must be a training attack ({', '.join(TRAINING_ATTACKS)}), "
                              f"got {self.attack!r}")
        if not isinstance(self.norm, str) or self.norm not in ADVERSARIAL_NORMS:
            raise ConfigError(f"adversarial.norm must be one of {', '.join(ADVERSARIAL_NORMS)}, got {self.norm!r}")
        if not (_finite(self.eps) and self.eps > 0 and (self.norm == "l2" or self.eps <= 1)):
            bound = "0 < eps <= 1 for linf (the [0, 1] image scale)" if self.norm == "linf" else "eps > 0 for l2"
            raise ConfigError(f"adversarial.eps must be a finite number with {bound}, got {self.eps!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"adversarial.steps must be an integer >= 1, got {self.steps!r}")
        if self.step_size is not None and not (_finite(self.step_size) and self.step_size > 0):
            raise ConfigError(f"adversarial.step_size must be a finite number > 0 (or left out: 2.5*eps/steps), "
                              f"got {self.step_size!r}")
        object.__setattr__(self, "eps", float(self.eps))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", float(self.step_size))

    @classmethod
    def from_table(cls, table: Any) -> AdversarialSettings:
        """The settings of a ``{eps = ..., steps = ..., ...}`` table; unknown and missing keys raise ConfigError."""
        if isinstance(table, cls):
            return table
        known = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(table, dict):
            raise ConfigError(f"adversarial must be a table {{attack = \"pgd\", eps = ..., steps = ..., step_size = ...,"
                              f" norm = \"linf\"}}, got {table!r}")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"unknown adversarial setting(s) {unknown}; known: {', '.join(sorted(known))}")
        if "eps" not in table:
            raise ConfigError("adversarial needs eps (the attack's budget), e.g. --set train.adversarial.eps=0.3")
        return cls(**table)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (protocol §3). Defaults are the paper's MNIST ResNet-32."""

    dataset: str = "mnist"
    data_dir: str = ""
    data_file: str = ""
    arch: str = "resnet32"
    objective: str = "ce"
    steps: int = 20000
    batch_size: int = 128
    lr_boundaries: tuple = (10000, 15000, 20000)
    lr_values: tuple = (0.1, 0.01, 0.001, 0.0001)
    lr_warmup: int = 0  # steps of linear warm-up to the first learning rate (Goyal et al. 2017); 0 = none (paper)
    # RCE's learning rates are lr_values × this (protocol §22): 0 = auto (L - 1 for L classes, capped: RCE then
    # trains as fast as CE), 1 = the paper's schedule as written; CE ignores it
    rce_lr_scale: float = 0.0
    # RCE only: the first rce_ce_steps steps train the reversed logits -Z with cross-entropy at CE's rates (the
    # same prediction, argmax of -Z), the rest with RCE (protocol §22); 0 = RCE from the start (the paper)
    rce_ce_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 2e-4
    augment: bool = False
    pad: int = 2
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 1000
    amp: bool = False  # bf16 autocast of the forward pass (CUDA, and CPUs with bf16 units); the loss in float32
    channels_last: bool = False  # the network and its inputs in NHWC memory order (faster convolutions)
    compile: bool = False  # torch.compile the network (compiles on the first steps; needs a C++ compiler on CPU)
    dropout: float = 0.0  # the dropout variant: dropout on z before the final layer (KD+BU, protocol §15); 0 = paper
    device: str = "auto"
    # your own model (arch = "torchvision:NAME" / "timm:NAME"): the final linear layer's module name ("" = found),
    # the input normalisation (empty = ImageNet's for torchvision, the model's own for timm), a local safetensors
    # file of initial weights; and, for any arch, init = a run folder whose checkpoint training starts from
    head: str = ""
    mean: tuple = ()
    std: tuple = ()
    weights: str = ""
    init: str = ""
    # adversarial training (protocol §19): None = standard training; a table {attack = "pgd", eps, steps, step_size,
    # norm} trains on each batch's PGD examples (PGD-AT), with trades_beta = β on TRADES' loss instead
    adversarial: AdversarialSettings | None = None
    trades_beta: float | None = None

    def __post_init__(self):
        from ..models import check_arch
        from ..models.losses import check_objective

        check_objective(self.objective)
        if not isinstance(self.arch, str):
            raise ConfigError(f"arch must be a string, got {self.arch!r}")
        check_arch(self.arch)
        self._check_own_model()
        if len(self.lr_values) != len(self.lr_boundaries) + 1:
            raise ConfigError("lr_values must have exactly one more entry than lr_boundaries")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
            int_in_range(getattr(self, name), name, 1, COUNT_RANGE[1])
        if not (_finite(self.rce_lr_scale) and 0 <= self.rce_lr_scale <= 1000):
            raise ConfigError(f"rce_lr_scale must be a number from 0 (auto: L - 1 for L classes) to 1000 "
                              f"(1 = the paper's rates), got {self.rce_lr_scale!r}")
        if isinstance(self.rce_ce_steps, bool) or not isinstance(self.rce_ce_steps, int) or \
                not 0 <= self.rce_ce_steps < max(1, self.steps):
            raise ConfigError(f"rce_ce_steps must be an integer from 0 to steps - 1 ({self.steps - 1}), "
                              f"got {self.rce_ce_steps!r}")
        if isinstance(self.lr_warmup, bool) or not isinstance(self.lr_warmup, int) or \
                not 0 <= self.lr_warmup <= self.steps:
            raise ConfigError(f"lr_warmup must be an integer from 0 to steps ({self.steps}), got {self.lr_warmup!r}")
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.lr_boundaries) or \
                any(a >= b for a, b in zip(self.lr_boundaries, self.lr_boundaries[1:])):
            raise ConfigError(f"lr_boundaries must be strictly increasing positive step numbers, got {list(self.lr_boundaries)}")
        if not all(_finite(v) and v > 0 for v in self.lr_values):
            raise ConfigError(f"lr_values must be finite numbers > 0, got {list(self.lr_values)}")
        if not (_finite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        check_seed(self.seed, "seed")
        for name in ("dataset", "data_dir", "data_file", "device"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("augment", "amp", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        int_in_range(self.pad, "pad", 0, 1024)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self._check_adversarial()

    def _check_adversarial(self) -> None:
        if self.adversarial is not None:
            object.__setattr__(self, "adversarial", AdversarialSettings.from_table(self.adversarial))
        if self.trades_beta is not None:
            if not (_finite(self.trades_beta) and self.trades_beta >= 0):
                raise ConfigError(f"trades_beta must be a finite number >= 0, got {self.trades_beta!r}")
            if self.adversarial is None:
                raise ConfigError("trades_beta needs the adversarial table for TRADES' attack (eps, steps, "
                                  "step_size), e.g. --set train.adversarial.eps=0.3")
            object.__setattr__(self, "trades_beta", float(self.trades_beta))

    def _check_own_model(self) -> None:
        for name in ("head", "weights", "init"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not all(_finite(v) for v in values) or len(values) not in (0, 1, 3):
                raise ConfigError(f"{name} must be a list of 1 or 3 finite numbers (empty: the model's default), "
                                  f"got {values!r}")
        if any(v <= 0 for v in self.std):
            raise ConfigError(f"std values must be > 0, got {list(self.std)}")
        if ":" not in self.arch and (self.head or self.mean or self.std or self.weights):
            raise ConfigError(f"head, mean, std and weights apply to torchvision:NAME / timm:NAME models, not to "
                              f"{self.arch} (it subtracts 0.5 itself; start it from a run with init=RUN_DIR)")

    def step_objective(self, step: int) -> str:
        """The loss of ``step``: "rce" or "ce" for the objective's own; "ce_reversed" (CE on -Z) for the first
        ``rce_ce_steps`` steps of an RCE model."""
        return "ce_reversed" if self.objective == "rce" and step < self.rce_ce_steps else self.objective

    def lr_scale(self, num_classes: int) -> float:
        """The factor on ``lr_values`` for ``num_classes`` classes: 1 for CE, ``rce_lr_scale`` (0: auto,
        :func:`auto_rce_lr_scale`) for RCE."""
        if self.objective != "rce":
            return 1.0
        return float(self.rce_lr_scale) if self.rce_lr_scale > 0 else auto_rce_lr_scale(num_classes)

    def learning_rate(self, step: int, num_classes: int = 10) -> float:
        """The piecewise-constant schedule of protocol §3.1 times :meth:`lr_scale`, indexed by the global step
        before the update, after ``lr_warmup`` steps rising linearly to the first rate: (step + 1)/lr_warmup of it."""
        scale = self.lr_scale(num_classes) if step >= self.rce_ce_steps else 1.0
        if step < self.lr_warmup:
            return scale * float(self.lr_values[0]) * (step + 1) / self.lr_warmup
        for boundary, lr in zip(self.lr_boundaries, self.lr_values):
            if step < boundary:
                return scale * float(lr)
        return scale * float(self.lr_values[-1])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_boundaries"] = list(self.lr_boundaries)
        d["lr_values"] = list(self.lr_values)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return build(cls, values, "train")


def train_config_from_preset(name: str, overrides: list[str] | None = None) -> TrainConfig:
    """The ``[train]`` section of preset ``name`` with ``--set`` overrides (keys may omit the ``train.``)."""
    preset = load_preset(name)
    if "train" not in preset:
        raise ConfigError(f"preset {name!r} has no [train] section; it is not a training preset")
    fixed = [o if o.startswith("train.") else f"train.{o}" for o in (overrides or [])]
    check_keys(preset, ("train",), "")  # a training preset holds its [train] table alone
    check_keys(preset["train"], TrainConfig().to_dict(), "train")
    preset["train"] = {**TrainConfig().to_dict(), **preset["train"]}  # every field can be --set
    resolved = apply_overrides(preset, fixed)
    return TrainConfig.from_dict(resolved["train"])
