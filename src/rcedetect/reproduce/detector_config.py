"""The ``[detector]`` section of a reproduce config: K-density's settings and the baselines of other papers
(protocol §4.2-4.4, §15), typed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.settings import SEED_RANGE, check_fields, setting, typed


def sigma2_setting(d: dict, key: str) -> float | None:
    """σ² of the table: > 0, or 0 for the paper's value (TOML has no null), which is None here."""
    v = typed(d, key, "detector", "float", lo=0, hint=" (0: the paper's value)")
    return None if v == 0 else d[key]  # the value as written: cache keys hash it


@dataclass(frozen=True)
class DetectorSettings:
    """K-density settings of every model: kernel points per class, the attack subset, σ² per objective, seed."""

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

    def settings_of(self, metric: str, objective: str) -> dict[str, Any]:
        """The constructor settings of any fitted metric (``kd`` or a baseline)."""
        return self.kd_settings(objective) if metric == "kd" else self.baseline_settings(metric, objective)


def detector_settings(d: dict, table2_eps: float) -> DetectorSettings:
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
    fit_eps = typed(d, "fit_eps", "detector", "float")
    out = DetectorSettings(d["per_class"], d["attack_per_class"], sigma2_setting(d, "sigma2_ce"),
                           sigma2_setting(d, "sigma2_rce"), d["seed"], tuple(baselines), d["fit_on"],
                           fit_eps or table2_eps, d["fit_images"], own)
    for m in baselines:  # bad settings fail now, not after training
        for objective in ("ce", "rce"):
            detectors.create(m, **out.baseline_settings(m, objective))
    return out
