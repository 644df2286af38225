"""Every table and key of a reproduce preset checked against what the code reads, before defaults fill it in.

A user's copy of a preset with a typo (``[experiment] threds = 1``, ``[attacks.fgsm] imagse = 4``, a ``[detectr]``
table, ``[adaptive] metircs = [...]``) is refused with the closest valid name, as the same typo in ``--set`` is,
instead of running with the defaults. The known keys are the defaults' keys of :mod:`.config` (passed in
by it) and :mod:`.robust_config`, one list each, so a setting added there is known here.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from ..core.settings import check_keys
from ..training.config import TrainConfig
from . import robust_config

#: the tables of a reproduce preset
TABLES = ("experiment", "models", "detector", "attacks", "adaptive", "robust", "cuts")
#: the keys of an ``[attacks.NAME]`` table (an ``[adaptive.attacks.NAME]`` one adds ``metrics``)
ATTACK_KEYS = ("images", "batch", "eps", "settings", "attack")
CUTS_KEYS = ("notes",)


def check_preset(raw: dict, known: dict) -> dict:
    """``raw`` (a reproduce preset as read) when every table and key is one the code reads; else ConfigError.
    ``known``: the keys of ``experiment``, ``detector``, ``adaptive`` and of a model table ``models`` (the defaults
    of :mod:`.config`, which calls this)."""
    check_keys(raw, TABLES, "")
    check_keys(raw["experiment"], known["experiment"], "experiment")
    models = check_keys(raw["models"], raw["models"], "models")
    train_keys = TrainConfig().to_dict()
    for name, m in models.items():
        check_keys(m, known["models"], f"models.{name}")
        if "train" in m:
            check_keys(m["train"], train_keys, f"models.{name}.train")
    if "detector" in raw:
        check_keys(raw["detector"], known["detector"], "detector")
    for name, a in check_keys(raw.get("attacks", {}), raw.get("attacks", {}), "attacks").items():
        check_keys(a, ATTACK_KEYS, f"attacks.{name}")
    if "adaptive" in raw:
        ad = check_keys(raw["adaptive"], known["adaptive"], "adaptive")
        for name, a in check_keys(ad.get("attacks", {}), ad.get("attacks", {}), "adaptive.attacks").items():
            check_keys(a, (*ATTACK_KEYS, "metrics"), f"adaptive.attacks.{name}")
    if "robust" in raw:
        r = check_keys(raw["robust"], robust_config.ROBUST_DEFAULTS, "robust")
        for name, a in check_keys(r.get("attacks", {}), r.get("attacks", {}), "robust.attacks").items():
            check_keys(a, robust_config.ATTACK_KEYS, f"robust.attacks.{name}")
    if "cuts" in raw:
        check_cuts(check_keys(raw["cuts"], CUTS_KEYS, "cuts"))
    return raw


def check_cuts(cuts: dict) -> None:
    """``[cuts] notes``: a list of strings (the report's words on what a preset leaves out)."""
    notes = cuts.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"cuts.notes must be a list of strings (the report's notes), got {str(notes)[:40]!r}")
