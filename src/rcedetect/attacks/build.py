"""Attacks by name, built for a run: :func:`spec` (a registered attack, or a library's ``torchattacks:NAME`` /
``foolbox:NAME``), :func:`create`, and :func:`attack_factory` (one attack per batch, each seeded batch with its
own seed, :func:`batch_seed`), :func:`probe` (built once to check its settings and estimate its cost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.errors import ConfigError
from .base import REGISTRY, AttackSpec, check_seed, warn_when_called


def spec(name: str) -> AttackSpec:
    """The registered attack ``name``, or a library's attack ``torchattacks:NAME`` / ``foolbox:NAME``
    (:mod:`.thirdparty`); unknown names raise ConfigError."""
    if isinstance(name, str) and ":" in name and name not in REGISTRY:
        from .thirdparty import thirdparty_spec

        return thirdparty_spec(name)
    if name not in REGISTRY:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def create(name: str, **settings: Any):
    """Build the attack registered as ``name`` with ``settings`` (unknown names and settings raise ConfigError).
    Calling it warns (:class:`~.base.NoSuccessWarning`) when it succeeds on none of its images."""
    return warn_when_called(spec(name).create(**settings), name)


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a seeded attack run with ``seed``."""
    return int(seed) * 1000 + int(batch)


def attack_factory(name: str, settings: dict[str, Any], eps: float | None, seed: int, detector=None
                   ) -> Callable[[int], Any]:
    """``factory(batch_index) -> attack``; bad settings fail here, before any work.

    ``eps`` is given to attacks that take one; seeded attacks get :func:`batch_seed` (from ``settings['seed']``
    if given, else ``seed``); ``detector`` (a detector term) goes to attacks with a ``detector`` field.
    """
    attack_spec = spec(name)
    kw = dict(settings)
    if eps is not None:
        kw["eps"] = eps
    if detector is not None:
        kw["detector"] = detector
    seed0 = check_seed(kw.pop("seed", seed)) if attack_spec.seeded else None

    def factory(b: int):
        return attack_spec.create(**kw, **({"seed": batch_seed(seed0, b)} if attack_spec.seeded else {}))

    factory(0)
    return factory


class _PlaceholderTerm:
    """Stands in for a detector term when an attack is built only to check its settings or estimate its cost."""

    layers = ()

    def margin(self, view, classes):  # pragma: no cover - never called
        raise NotImplementedError("a placeholder detector term cannot score")


def probe(name: str, settings: dict[str, Any], eps: float | None = None, seed: int = 0):
    """The attack ``name`` built once (with a placeholder detector term where it needs one): bad settings raise
    ConfigError here, and the object answers ``passes_per_image()``."""
    attack_spec = spec(name)
    return attack_factory(name, settings, eps, seed, detector=_PlaceholderTerm() if attack_spec.needs_detector else None)(0)
