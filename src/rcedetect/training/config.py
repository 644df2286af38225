"""Presets (TOML files in ``configs/``), ``key=value`` overrides, and the frozen training config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.settings import SEED_RANGE, Rule, check_fields, check_keys, did_you_mean, load, setting
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
    """Construct dataclass ``cls`` from ``values`` (:func:`rcedetect.core.settings.load`): unknown keys and values
    of the wrong type or range are refused."""
    return load(cls, values, where)


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


#: on 100 classes ×99 stayed below CE even with a warm-up, ×50 with one matched CE (protocol §22)
MAX_AUTO_RCE_LR_SCALE = 50
#: the automatic scale of the paper's 10 classes: up to it no warm-up is needed (protocol §22)
NO_WARMUP_UP_TO = 9


#: the attacks that can craft the training batches of adversarial training (``adversarial.attack``)
TRAINING_ATTACKS = ("pgd",)
ADVERSARIAL_NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AdversarialSettings:
    """The ``train.adversarial`` table (protocol §19): the attack that crafts each step's training batch, PGD
    with a random start (PGD-AT, Madry et al. 2018) or, with ``trades_beta``, TRADES' KL-ascending PGD (Zhang et
    al. 2019). ``eps`` on the [0, 1] image scale (0 < ε ≤ 1 for L∞, ε > 0 for L2), ``steps`` ≥ 1, ``step_size``
    α > 0 or None for 2.5·ε/steps (Madry et al.'s rule, as the registry's PGD)."""

    eps: float = setting(lo=0, lo_open=True)
    attack: str = setting("pgd", choices=TRAINING_ATTACKS, hint=" (a training attack)")
    norm: str = setting("linf", choices=ADVERSARIAL_NORMS)
    steps: int = setting(10, lo=1)
    step_size: float | None = setting(None, lo=0, lo_open=True, hint=" (or left out: 2.5*eps/steps)")

    def __post_init__(self):
        check_fields(self, "adversarial.")
        if self.norm == "linf" and self.eps > 1:
            raise ConfigError(f"adversarial.eps must be <= 1 for linf (the [0, 1] image scale), got {self.eps!r}")

    @classmethod
    def from_table(cls, table: Any) -> AdversarialSettings:
        """The settings of a ``{eps = ..., steps = ..., ...}`` table; unknown and missing keys raise ConfigError."""
        if isinstance(table, cls):
            return table
        if not isinstance(table, dict):
            raise ConfigError(f"adversarial must be a table {{attack = \"pgd\", eps = ..., steps = ..., step_size = ...,"
                              f" norm = \"linf\"}}, got {table!r}")
        if "eps" not in table:
            raise ConfigError("adversarial needs eps (the attack's budget), e.g. --set train.adversarial.eps=0.3")
        return load(cls, table, "adversarial")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (protocol §3). Defaults are the paper's MNIST ResNet-32."""

    dataset: str = "mnist"
    data_dir: str = ""
    data_file: str = ""
    arch: str = "resnet32"
    objective: str = "ce"
    steps: int = setting(20000, lo=1)
    batch_size: int = setting(128, lo=1)
    lr_boundaries: tuple = setting((10000, 15000, 20000), each=Rule(lo=1, kind="int"), hint=" (strictly increasing)")
    lr_values: tuple = setting((0.1, 0.01, 0.001, 0.0001), each=Rule(lo=0, lo_open=True, kind="float"))
    lr_warmup: int = setting(0, lo=0)  # steps of linear warm-up to the first learning rate (Goyal et al. 2017); 0 = none (paper)
    # RCE's learning rates are lr_values × this (protocol §22): 0 = auto (L - 1 for L classes, capped: RCE then
    # trains as fast as CE), 1 = the paper's schedule as written; CE ignores it
    rce_lr_scale: float = setting(0.0, lo=0, hi=1000, hint=" (0: auto, L - 1 for L classes; 1: the paper's rates)")
    # RCE only: the first rce_ce_steps steps train the reversed logits -Z with cross-entropy at CE's rates (the
    # same prediction, argmax of -Z), the rest with RCE (protocol §22); 0 = RCE from the start (the paper)
    rce_ce_steps: int = setting(0, lo=0)
    momentum: float = setting(0.9, lo=0, hi=1, hi_open=True)
    weight_decay: float = setting(2e-4, lo=0)
    augment: bool = False
    pad: int = setting(2, lo=0, hi=1024)
    seed: int = setting(0, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    eval_every: int = setting(500, lo=1)
    checkpoint_every: int = setting(1000, lo=1)
    amp: bool = False  # bf16 autocast of the forward pass (CUDA, and CPUs with bf16 units); the loss in float32
    channels_last: bool = False  # the network and its inputs in NHWC memory order (faster convolutions)
    compile: bool = False  # torch.compile the network (compiles on the first steps; needs a C++ compiler on CPU)
    dropout: float = setting(0.0, lo=0, hi=1, hi_open=True)  # the dropout variant: dropout on z before the final layer (KD+BU, protocol §15); 0 = paper
    device: str = "auto"
    # your own model (arch = "torchvision:NAME" / "timm:NAME"): the final linear layer's module name ("" = found),
    # the input normalisation (empty = ImageNet's for torchvision, the model's own for timm), a local safetensors
    # file of initial weights; and, for any arch, init = a run folder whose checkpoint training starts from
    head: str = ""
    mean: tuple = setting((), each=Rule(kind="float"), hint=" of 1 or 3 (empty: the model's default)")
    std: tuple = setting((), each=Rule(lo=0, lo_open=True, kind="float"), hint=" of 1 or 3 (empty: the model's default)")
    weights: str = ""
    init: str = ""
    # adversarial training (protocol §19): None = standard training; a table {attack = "pgd", eps, steps, step_size,
    # norm} trains on each batch's PGD examples (PGD-AT), with trades_beta = β on TRADES' loss instead
    adversarial: AdversarialSettings | None = None
    trades_beta: float | None = setting(None, lo=0)

    def __post_init__(self):
        from ..models import check_arch
        from ..models.losses import check_objective

        check_fields(self)
        check_objective(self.objective)
        check_arch(self.arch)
        if len(self.lr_values) != len(self.lr_boundaries) + 1:
            raise ConfigError("lr_values must have exactly one more entry than lr_boundaries")
        if any(a >= b for a, b in zip(self.lr_boundaries, self.lr_boundaries[1:])):
            raise ConfigError(f"lr_boundaries must be strictly increasing step numbers, got {list(self.lr_boundaries)}")
        if self.rce_ce_steps >= max(1, self.steps):
            raise ConfigError(f"rce_ce_steps must be an integer from 0 to steps - 1 ({self.steps - 1}), "
                              f"got {self.rce_ce_steps!r}")
        if self.lr_warmup > self.steps:
            raise ConfigError(f"lr_warmup must be an integer from 0 to steps ({self.steps}), got {self.lr_warmup!r}")
        if len(self.mean) not in (0, 1, 3) or len(self.std) not in (0, 1, 3):
            raise ConfigError(f"mean and std must be lists of 1 or 3 finite numbers (empty: the model's default), "
                              f"got {list(self.mean)} and {list(self.std)}")
        if ":" not in self.arch and (self.head or self.mean or self.std or self.weights):
            raise ConfigError(f"head, mean, std and weights apply to torchvision:NAME / timm:NAME models, not to "
                              f"{self.arch} (it subtracts 0.5 itself; start it from a run with init=RUN_DIR)")
        if self.adversarial is not None:
            object.__setattr__(self, "adversarial", AdversarialSettings.from_table(self.adversarial))
        if self.trades_beta is not None and self.adversarial is None:
            raise ConfigError("trades_beta needs the adversarial table for TRADES' attack (eps, steps, "
                              "step_size), e.g. --set train.adversarial.eps=0.3")

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

    def warmup_steps(self, num_classes: int) -> int:
        """``lr_warmup``, or at least a quarter of the steps where the automatic RCE scale is above the paper's 10
        classes' (on 100 classes ×50 reached 84 % without it, 98 % with it; protocol §22)."""
        auto = self.objective == "rce" and self.rce_lr_scale == 0
        if auto and auto_rce_lr_scale(num_classes) > NO_WARMUP_UP_TO:
            return max(self.lr_warmup, self.steps // 4)
        return self.lr_warmup

    def learning_rate(self, step: int, num_classes: int = 10) -> float:
        """The piecewise-constant schedule of protocol §3.1 times :meth:`lr_scale`, indexed by the global step
        before the update, after :meth:`warmup_steps` steps rising linearly to the first rate: (step + 1)/w of it."""
        scale = self.lr_scale(num_classes) if step >= self.rce_ce_steps else 1.0
        warmup = self.warmup_steps(num_classes)
        if step < warmup:
            return scale * float(self.lr_values[0]) * (step + 1) / warmup
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
