"""``like = "<model>"``: a model of a reproduce preset trained as another one of the same preset, but for its own
``[models.<name>.train]`` settings (e.g. a PGD-AT copy of the main CE model: ``like = "ce"`` with
``train.adversarial = {...}``).

The copy follows the other model's training settings *after* the ``--set`` overrides, so that a cut of the preset
(``--set models.ce.train.steps=100``, another dataset, another arch) cuts both and the two stay on the same backbone
and schedule; a setting of its own table, or one ``--set`` on the copy itself, wins.
"""

from __future__ import annotations

import copy

from ..core.errors import ConfigError


def expand_like(cfg: dict, defaults: dict) -> dict[str, tuple[set, dict]]:
    """Give every ``like`` model its train table before the overrides (in place): the other model's, expanded,
    with its own on top. Returns {name: (its own keys, the table as expanded)} for :func:`inherit_like`."""
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
