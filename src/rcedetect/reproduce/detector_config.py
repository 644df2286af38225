"""The ``[detector]`` section of a reproduce config: K-density's settings and the baselines of other papers
(protocol §4.2-4.4, §15), typed and checked; and the number checks every section of the config uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.settings import COUNT_RANGE, SEED_RANGE, THREADS_RANGE, int_in_range

#: the largest value of an integer setting by its key (the rest are counts)
HIGHEST = {"seed": SEED_RANGE[1], "threads": THREADS_RANGE[1]}


def int_setting(section: dict, key: str, where: str, low: int = 0) -> int:
    """The integer ``section[key]``, at least ``low`` and at most its key's :data:`HIGHEST` (else a count's)."""
    v = section.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where}.{key} must be an integer >= {low}, got {str(v)[:40]!r}")
    return int_in_range(v, f"{where}.{key}", low, HIGHEST.get(key, COUNT_RANGE[1]))


def number_setting(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def sigma2_setting(v, where: str) -> float | None:
    if number_setting(v, where) < 0:
        raise ConfigError(f"{where} must be > 0, or 0 for the paper's value, got {v!r}")
    return None if v == 0 else v  # the value as written: cache keys hash it


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


def detector_settings(d: dict, per_class, table2_eps: float) -> DetectorSettings:
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
    fit_eps = number_setting(d.get("fit_eps"), "detector.fit_eps")
    if not isinstance(d.get("fit_on"), str):
        raise ConfigError(f"detector.fit_on must name an attack, got {d.get('fit_on')!r}")
    out = DetectorSettings(per_class, int_setting(d, "attack_per_class", "detector", 1),
                           sigma2_setting(d.get("sigma2_ce"), "detector.sigma2_ce"),
                           sigma2_setting(d.get("sigma2_rce"), "detector.sigma2_rce"), int_setting(d, "seed", "detector"),
                           tuple(baselines), d["fit_on"], fit_eps or table2_eps,
                           int_setting(d, "fit_images", "detector", 4), own)
    for m in baselines:  # bad settings fail now, not after training
        for objective in ("ce", "rce"):
            detectors.create(m, **out.baseline_settings(m, objective))
    return out
