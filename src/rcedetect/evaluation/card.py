"""The result of :func:`rcedetect.evaluate_detector`: a detector card, in a versioned JSON schema and as one page of
Markdown.

The headline is the attack success rate at 5 % false positives, SR@5 (Bryniarski et al. ICLR 2022: among the
attacked images classified correctly when clean, the share that some attack turned misclassified AND accepted by
the detector at its threshold), with its Wilson interval (Wilson 1927; a worst case over attacks is not resampled),
beside the robust accuracy with rejection (Tramèr, ICML 2022: an attacked input counts right when classified right
OR rejected) and the clean accuracy and rejection that pay for it. The sanity checks (Carlini et al. 2019, "On
evaluating adversarial robustness") say whether those numbers can be trusted: a failed one means the attacks may have
been blind (gradient masking) and the numbers are upper bounds on the detector's robustness.

``format`` = :data:`FORMAT`, ``format_version`` = :data:`FORMAT_VERSION`; a reader refuses other formats and newer
versions (:meth:`DetectorCard.from_json`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import CheckpointError

FORMAT = "rcedetect-detector-card"
FORMAT_VERSION = 1


class SanityWarning(UserWarning):
    """A sanity check of an adaptive evaluation failed: the detector may be masking gradients."""


@dataclass
class DetectorCard:
    """A detector's adaptive evaluation (module docstring). The headline numbers are those at the largest ε
    (``per_eps[-1]``); ``per_eps`` holds every ε of the grid, each the worst case over every attack at any ε' ≤ ε.

    Fields: ``detector``, ``model`` (descriptions), ``norm``, ``eps`` (the grid), ``fpr``, ``threshold`` and
    ``threshold_source`` ("given", "heldout", "detector"), ``version``, ``attacks`` (run, in order), ``n_images``,
    ``n_clean_correct``, ``clean_accuracy``, ``clean_rejection`` (share of the clean attacked images the detector
    rejects), ``heldout_rejection``, ``clean_accuracy_with_rejection``, ``per_eps`` (dicts: ``eps``,
    ``attack_success_rate``, ``interval``, ``n_fooled``, ``sr_at_eps_only``, ``robust_accuracy_with_rejection``,
    ``per_attack`` {name: {attack_success_rate, n_fooled, seconds, seconds_per_image, passes_per_image}},
    ``first_found``: per image the attack that first fooled it, "clean" or None), ``sanity`` (check dicts:
    ``check``, ``passed`` True / False / None = not run, ``detail``), ``gradient`` (the score's input gradient:
    "ok", "partial", "none", "non_finite"), ``notes``, ``verdict``, ``settings``, ``seconds``, ``versions``.
    """

    detector: str
    model: str
    norm: str
    eps: list[float]
    fpr: float | None
    threshold: float
    threshold_source: str
    version: str
    attacks: list[str]
    n_images: int
    n_clean_correct: int
    clean_accuracy: float
    clean_rejection: float
    heldout_rejection: float | None
    clean_accuracy_with_rejection: float
    per_eps: list[dict[str, Any]]
    sanity: list[dict[str, Any]]
    gradient: str
    notes: list[str] = field(default_factory=list)
    #: "measured", "unreliable" (a sanity check failed: upper bounds only) or "vacuous" (the detector rejects
    #: most clean inputs: nothing is claimed)
    verdict: str = "measured"
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    # -- the headline ------------------------------------------------------------------------------------------
    @property
    def headline(self) -> dict[str, Any]:
        return self.per_eps[-1]

    @property
    def attack_success_rate(self) -> float | None:
        """SR@N at the largest ε (N = 100 · fpr): None when no attacked image is classified correctly."""
        return self.headline["attack_success_rate"]

    sr = attack_success_rate

    @property
    def interval(self) -> tuple[float | None, float | None]:
        lo, hi = self.headline["interval"]
        return lo, hi

    @property
    def robust_accuracy_with_rejection(self) -> float:
        return self.headline["robust_accuracy_with_rejection"]

    @property
    def sanity_passed(self) -> bool:
        """True when no check that ran failed."""
        return not any(c["passed"] is False for c in self.sanity)

    @property
    def failed_checks(self) -> list[str]:
        return [c["check"] for c in self.sanity if c["passed"] is False]

    @property
    def sr_label(self) -> str:
        return f"SR@{100 * self.fpr:g}" if self.fpr is not None else "SR"

    def __repr__(self) -> str:
        lo, hi = self.interval
        sr = "—" if self.sr is None else f"{100 * self.sr:.1f}%"
        band = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
        checks = "sanity ok" if self.sanity_passed else f"sanity FAILED: {', '.join(self.failed_checks)}"
        checks += "" if self.verdict == "measured" else f"; {self.verdict}"
        return (f"DetectorCard({self.detector} on {self.model}, {self.norm} ε={_g(max(self.eps))}: {self.sr_label} "
                f"{sr}{band} of {self.n_clean_correct}; robust acc. w/ rejection "
                f"{_pct(self.robust_accuracy_with_rejection)}; clean rejection {_pct(self.clean_rejection)}; {checks})")

    # -- files -------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the versioned schema (``format``, ``format_version`` first)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DetectorCard:
        """The card of :meth:`to_json`; CheckpointError for another format, a newer version or missing fields."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise CheckpointError(f"not a {FORMAT} file")
        version = obj.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{FORMAT} format_version {version!r} is not one this rcedetect reads "
                                  f"(1..{FORMAT_VERSION}); upgrade rcedetect")
        fields = dataclasses.fields(cls)
        missing = sorted(f.name for f in fields if f.name not in obj and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if missing:
            raise CheckpointError(f"the detector card lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in obj.items() if k in {f.name for f in fields}})

    def to_markdown(self) -> str:
        """One page: the headline, what it costs on clean inputs, each attack, the sanity checks, the notes."""
        lo, hi = self.interval
        h = self.headline
        lines = [f"# Detector card: {self.detector}", "",
                 (f"Model: {self.model}. Threat: {self.norm} ε = {', '.join(_g(e) for e in self.eps)}; threshold "
                 f"T = {self.threshold:.6g} ({_source(self)}); {self.n_images} attacked images, "
                 f"{self.n_clean_correct} of them classified correctly when clean; version {self.version}."), ""]
        if self.verdict == "vacuous":
            lines += [(f"> **No claim:** the detector rejects {_pct(self.clean_rejection)} of the clean attacked "
                      "images; a low success rate bought that way is not robustness."), ""]
        if not self.sanity_passed:
            lines += [(f"> **Warning: sanity checks failed ({', '.join(self.failed_checks)}).** The detector may be "
                      "masking gradients: the numbers below are upper bounds on its robustness, not measurements."), ""]
        lines += ["| | value |", "|---|---|",
                  f"| {self.sr_label} (worst case over attacks) | {_pct(self.sr)}"
                  + (f" [{_pct(lo)}, {_pct(hi)}] (Wilson 95 %)" if lo is not None else "") + " |",
                  f"| images fooled | {h['n_fooled']} of {self.n_clean_correct} |",
                  f"| robust accuracy with rejection | {_pct(h['robust_accuracy_with_rejection'])} |",
                  f"| clean accuracy | {_pct(self.clean_accuracy)} |",
                  f"| clean rejection (attacked images) | {_pct(self.clean_rejection)} |",
                  f"| clean rejection (held-out images) | {_pct(self.heldout_rejection)} |",
                  f"| clean accuracy with rejection | {_pct(self.clean_accuracy_with_rejection)} |", ""]
        if len(self.per_eps) > 1:
            lines += ["| ε | " + self.sr_label + " | 95 % interval | at this ε only | robust acc. w/ rejection |",
                      "|---|---|---|---|---|"]
            for p in self.per_eps:
                a, b = p["interval"]
                lines.append(f"| {_g(p['eps'])} | {_pct(p['attack_success_rate'])} | "
                             f"{'—' if a is None else f'[{_pct(a)}, {_pct(b)}]'} | {_pct(p['sr_at_eps_only'])} | "
                             f"{_pct(p['robust_accuracy_with_rejection'])} |")
            lines.append("")
        lines += [f"## Attacks (ε = {_g(h['eps'])})", "", f"| attack | {self.sr_label} | first to fool | s / image |",
                  "|---|---|---|---|"]
        firsts = [f for f in h.get("first_found", []) if f is not None]
        for name, a in h["per_attack"].items():
            lines.append(f"| {name} | {_pct(a['attack_success_rate'])} | {firsts.count(name)} | "
                         f"{a['seconds_per_image']:.3g} |")
        lines += ["", "## Sanity checks (Carlini et al. 2019)", "", "| check | result | detail |", "|---|---|---|"]
        for c in self.sanity:
            mark = {True: "pass", False: "**FAIL**", None: "not run"}[c["passed"]]
            lines.append(f"| {c['check']} | {mark} | {c['detail']} |")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def _g(v: float) -> str:
    return f"{v:.4g}"


def _source(card: DetectorCard) -> str:
    return {"heldout": f"rejects {_pct(card.fpr)} of the clean held-out images",
            "detector": "the detector's own calibration"}.get(card.threshold_source, "given")
