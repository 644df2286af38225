"""The records between the pipeline (:mod:`rcedetect.reproduce`) and the report (:mod:`rcedetect.report`), one
dataclass per kind in ``results.json``: written by ``to_dict()``, read by ``from_dict()`` after the check of its
schema in :mod:`.schemas`. Fields keep the files' order; keys beyond them (another version's) are kept in ``other``;
a field of ``OPTIONAL`` is written only when set (keys that some records of a kind lack)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from . import schemas

if TYPE_CHECKING:
    from typing import Self


@dataclass(kw_only=True)
class Record:
    SCHEMA: ClassVar[dict] = {}
    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "other"]

    @classmethod
    def from_dict(cls, d: Any, where: str = "results.json") -> Self:
        schemas.check(d, cls.SCHEMA, where, f"{cls.__name__} of")
        names = cls.names()
        return cls(**{k: v for k, v in d.items() if k in names}, other={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        out = {n: getattr(self, n) for n in self.names()}
        return {**{k: v for k, v in out.items() if v is not None or k not in self.OPTIONAL}, **self.other}


@dataclass(kw_only=True)
class Scored(Record):
    """A scored run: its images, its pairs (clean correct AND adversarial misclassified), ``detection``."""

    n_images: int | None = None
    n_pairs: int | None = None

    def detector(self, metric: str) -> dict:
        return self.detection.get(metric) or {}

    def operating_point(self, metric: str, key: str = "fpr_5") -> dict:
        """``metric``'s operating point at the threshold of ``key`` ({} where there is none)."""
        return (self.detector(metric).get("operating_points") or {}).get(key) or {}


@dataclass(kw_only=True)
class AttackRecord(Scored):
    """One attack × ε on one main model, scored by every detector (Tables 2, 3, 5; Figures 2-6)."""

    SCHEMA: ClassVar[dict] = schemas.RESULTS_ATTACK
    OPTIONAL: ClassVar[tuple[str, ...]] = ("target_rate", "log_kd_adv", "cw", "wb", "figure3")
    accuracy: float | None = None
    clean_accuracy: float | None = None
    success_rate: float | None = None
    mean_l2: float | None = None
    detection: dict[str, dict] = field(default_factory=dict)
    target_rate: float | None = None
    log_kd_adv: list[float] | None = None
    cw: dict | None = None
    wb: dict | None = None
    figure3: dict | None = None
    model: str
    objective: str | None = None
    attack: str
    eps: float | None = None
    settings: dict | None = None
    config_hash: str | None = None
    attack_seconds: float | None = None
    seconds_per_example: float | None = None


@dataclass(kw_only=True)
class TransferRecord(Scored):
    """A substitute's adversarial images scored on a target model (Table 4)."""

    SCHEMA: ClassVar[dict] = schemas.RESULTS_TRANSFER
    n_substitute_success: int | None = None
    transfer_rate: float | None = None
    detection: dict[str, dict] = field(default_factory=dict)
    substitute: str | None = None
    substitute_arch: str | None = None
    substitute_objective: str | None = None
    target: str | None = None
    target_arch: str | None = None
    target_objective: str | None = None


@dataclass(kw_only=True)
class AdaptiveRecord(Record):
    """An attack that knows the detector, at one ε, against its threshold; ``fooled``: per image."""

    SCHEMA: ClassVar[dict] = schemas.RESULTS_ADAPTIVE
    threshold: float | None = None
    operating_point: dict = field(default_factory=dict)
    fooled: list[bool] = field(default_factory=list)
    robust_accuracy: float | None = None
    model: str
    objective: str | None = None
    metric: str
    attack: str
    eps: float | None = None
    norm: str | None = None
    settings: dict | None = None
    registered: str | None = None
    config_hash: str | None = None
    n_images: int | None = None
    attack_success_rate_own: float | None = None
    mean_l2_fooled: float | None = None
    attack_seconds: float | None = None
    seconds_per_example: float | None = None


@dataclass(kw_only=True)
class WorstCase(Record):
    """Per model × detector × norm × ε: SR@N of ANY adaptive attack at any ε' ≤ ε, its Wilson ``interval``."""

    SCHEMA: ClassVar[dict] = schemas.RESULTS_WORST_CASE
    model: str
    objective: str | None = None
    metric: str
    norm: str = "linf"
    eps: float
    attacks: list[str] = field(default_factory=list)
    n_fooled: int | None = None
    n_clean_correct: int | None = None
    attack_success_rate: float | None = None
    sr_at_eps_only: float | None = None
    interval: list | None = None


@dataclass(kw_only=True)
class RobustRecord(Record):
    """A classifier under the cascade of ``[robust]`` attacks (:func:`rcedetect.evaluation.robust.cascade`)."""

    SCHEMA: ClassVar[dict] = schemas.RESULTS_ROBUST
    OPTIONAL: ClassVar[tuple[str, ...]] = ("training",)
    n_images: int | None = None
    eps: list[float] = field(default_factory=list)
    attacks: list[str] = field(default_factory=list)
    clean_correct: list[bool] = field(default_factory=list)
    broken_at: list[float | None] = field(default_factory=list)
    broken_by: list[str | None] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    robust: list[dict] = field(default_factory=list)
    model: str | None = None
    role: str | None = None
    arch: str | None = None
    objective: str | None = None
    training: dict | None = None
    indices: list[int] | None = None
    config_hash: str | None = None
    attack_settings: dict | None = None
    attack_seconds: float | None = None
