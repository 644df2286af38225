"""The ``[robust]`` section of a reproduce config and the ``role = "robust"`` of a model, typed and checked.

Robust accuracy without a detector (protocol §20, :mod:`rcedetect.evaluation.robust`) of every main model and every
model with ``role = "robust"``: an adversarially trained classifier (PGD-AT, TRADES; protocol §19) that is
trained and evaluated for robust accuracy, with no paper table, and with no detector unless ``detect = true``
(then it gets features, the detectors and the adaptive attacks against them, as a main model does). ::

    [robust]
    images = 0     # attacked pool images (0: as many as [adaptive] attacks, else 100)
    batch = 0      # images per attack call (0: [adaptive] batch, else 100)
    eps = []       # the L∞ grid ([]: every L∞ ε of the [adaptive] attacks and its half, for Tramèr's check, and
                   # the L∞ ε each robust model was trained at)
    [robust.attacks.pgd_ce]          # run in this order at each ε, each on the images still standing
    attack = "pgd"                   # a registered attack or torchattacks:NAME / foolbox:NAME (the table name
    settings = { steps = 100, restarts = 5, loss = "ce" }   # by default); settings as for any attack

Without an ``[robust.attacks]`` table, PGD with 5 restarts of 100 steps on CE and on the margin loss (the
registry's ``pgd``). Every attack runs with the TRUE labels (``label = "true"`` for the package's own, the
library's convention for the others) on the classifier alone (a library attack with ``on = "defended"`` is
refused: robust accuracy here has no detector), must take an ε and measure it in L∞.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .. import attacks
from ..attacks.base import check_eps
from ..attacks.thirdparty import attack_norm, is_thirdparty
from ..core.errors import ConfigError
from ..core.settings import typed
from ..evaluation import attack_store

ROBUST_ROLE = "robust"
#: the attacks of a [robust] section without its own table: PGD with restarts on CE and on the margin loss
DEFAULT_ATTACKS = {"pgd_ce": {"attack": "pgd", "settings": {"steps": 100, "restarts": 5, "loss": "ce"}},
                   "pgd_margin": {"attack": "pgd", "settings": {"steps": 100, "restarts": 5, "loss": "margin"}}}
ROBUST_DEFAULTS = {"images": 0, "batch": 0, "eps": [], "attacks": {}}
ATTACK_KEYS = ("attack", "settings")
#: two ε of the grids closer than this (relatively) are one: 8/255 written as 0.03137 halves to 0.015685, which is
#: the grid's 0.01569
REL_TOL = 1e-3


@dataclass(frozen=True)
class RobustAttack:
    name: str
    registered: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class RobustPlan:
    """The robust-accuracy evaluation: ``attacks`` in cascade order at every ε of ``eps`` (ascending), on the
    first ``images`` pool images in batches of ``batch``; ``adaptive_eps`` is the adaptive L∞ grid."""

    images: int
    batch: int
    eps: tuple[float, ...]
    attacks: tuple[RobustAttack, ...]
    adaptive_eps: tuple[float, ...] = ()


def close(a: float | None, b: float | None) -> bool:
    """Two ε of the grids are the same budget (within :data:`REL_TOL`)."""
    return a is not None and b is not None and abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-12)


def merged_grid(values) -> tuple[float, ...]:
    """``values`` ascending, with budgets that are :func:`close` kept once (the first written wins)."""
    out: list[float] = []
    for v in values:
        if not any(close(v, u) for u in out):
            out.append(float(v))
    return tuple(sorted(out))


def expand(cfg: dict) -> None:
    """Fill in the ``[robust]`` section's defaults (in place), when the preset has one or a robust model."""
    roles = [m.get("role", "main") for m in cfg["models"].values()]
    if "robust" not in cfg and ROBUST_ROLE not in roles:
        return
    r = cfg["robust"] = {**copy.deepcopy(ROBUST_DEFAULTS), **cfg.get("robust", {})}
    if not isinstance(r["attacks"], dict):
        raise ConfigError("robust.attacks must be a table of attacks ([robust.attacks.NAME])")
    if not r["attacks"]:
        r["attacks"] = copy.deepcopy(DEFAULT_ATTACKS)
    for name, a in r["attacks"].items():
        if not isinstance(a, dict):
            raise ConfigError(f"robust.attacks.{name} must be a table (attack = ..., settings = {{...}})")
        r["attacks"][name] = {"attack": name, "settings": {}, **a}


def detect_setting(name: str, m: dict) -> bool:
    """``detect`` of a model table: a robust model gets the detectors and their adaptive attacks only with
    ``detect = true`` (detection on an adversarially trained classifier); a main model always has them and a
    target never does, so there the key is refused."""
    if "detect" not in m:
        return m["role"] != "target" and m["role"] != ROBUST_ROLE
    if not isinstance(m["detect"], bool):
        raise ConfigError(f"models.{name}.detect must be true or false, got {m['detect']!r}")
    if m["role"] != ROBUST_ROLE:
        raise ConfigError(f"models.{name}.detect: only a model with role = \"robust\" takes detect (a \"main\" "
                          "model always has its detectors, a \"target\" none)")
    return m["detect"]


def robust_plan(section: dict | None, adaptive, seed: int, trained_eps=()) -> RobustPlan | None:
    """Type and check a ``[robust]`` section (as :func:`expand` leaves it); ``adaptive``: the AdaptivePlan or None;
    ``trained_eps``: the L∞ ε of the robust models' adversarial training (in the default grid)."""
    if section is None:
        return None
    unknown = sorted(set(section) - set(ROBUST_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown robust setting(s) {unknown}; known: {', '.join(sorted(ROBUST_DEFAULTS))}")
    attacks = adaptive.attacks.values() if adaptive else ()
    images, batch = (typed(section, k, "robust", lo=0) or max((getattr(a, k) for a in attacks), default=100)
                     for k in ("images", "batch"))
    ad_grid = merged_grid(e for a in attacks if a.eps and attack_norm(a.registered, a.settings) == "linf"
                          for e in a.eps)  # every L∞ ε of the adaptive attacks
    eps = section["eps"]
    if not isinstance(eps, list):
        raise ConfigError(f"robust.eps must be a list of L∞ budgets (or [] for the adaptive grid and its halves), "
                          f"got {eps!r}")
    for v in eps:  # the attacks' rule of an L∞ budget, and not 0 (no attack)
        try:
            ok = check_eps(v, "robust.eps") > 0
        except ConfigError:
            ok = False
        if not ok:
            raise ConfigError(f"robust.eps values must be in (0, 1] (L∞ on the [0, 1] image scale), got {v!r}")
    grid = merged_grid(eps) if eps else merged_grid([*ad_grid, *(e / 2 for e in ad_grid), *trained_eps])
    if not grid:
        raise ConfigError("robust.eps is empty and there is no adaptive L∞ grid to take it from; give robust.eps")
    attacks = tuple(_attack(name, a, grid, seed) for name, a in section["attacks"].items())
    if not attacks:
        raise ConfigError("robust.attacks is empty; give at least one attack")
    return RobustPlan(images, batch, grid, attacks, ad_grid)


def _attack(name: str, a: dict, grid: tuple[float, ...], seed: int) -> RobustAttack:
    where = f"robust.attacks.{name}"
    unknown = sorted(set(a) - set(ATTACK_KEYS))
    if unknown:
        raise ConfigError(f"unknown {where} setting(s) {unknown}; an attack table has attack and settings "
                          "(its ε is the robust grid)")
    registered, settings = a["attack"], a["settings"]
    if not isinstance(registered, str) or not isinstance(settings, dict):
        raise ConfigError(f"{where}: attack must name an attack and settings be a table")
    spec = attacks.spec(registered)
    if not spec.takes_eps:
        raise ConfigError(f"{where}: {registered!r} takes no ε budget; robust accuracy needs a fixed-budget attack")
    if spec.needs_detector or (is_thirdparty(registered) and settings.get("on", "classifier") != "classifier"):
        raise ConfigError(f"{where}: robust accuracy attacks the classifier alone; {registered!r} with these "
                          "settings attacks a detector (drop on = \"defended\" / use the adaptive evaluation)")
    if "eps" in settings:
        raise ConfigError(f"{where}.settings: drop eps (the attack runs at every ε of robust.eps)")
    if attack_norm(registered, settings) != "linf":
        raise ConfigError(f"{where}: robust accuracy is evaluated in L∞; {registered!r} here measures "
                          f"{attack_norm(registered, settings)}")
    if not is_thirdparty(registered) and "label" in spec.fields:
        settings = {"label": "true", **settings}  # robust accuracy is about the true label
    for eps in grid:
        attack_store.probe(registered, settings, eps, seed)  # bad settings fail now, not after training
    return RobustAttack(name, registered, settings)
