"""What the report's sections share: number formatting, record lookups in a results dict, and footnotes that
say why a cell is empty.

Blocks (rendered by :mod:`.render`): ``("h", level, text)``, ``("p", text)``, ``("ul", items)``,
``("table", head, rows)``, ``("notes", items)`` (the footnotes of the table above) and ``("img", key, file,
caption)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from .. import detectors
from ..core.records import AdaptiveRecord, AttackRecord, Scored, TransferRecord, WorstCase
from ..evaluation import paper_ref
from ..evaluation.paper_ref import TABLE2_ATTACKS
from ..stats.operating_point import MIN_PAIRS, too_few_pairs
from .render import to_html, to_markdown  # noqa: F401  (the renderings, re-exported)

DASH = "—"
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")

#: why a cell or a point is empty, in the words of its footnote
NO_PAIRS = ("0 pairs: the attack turned no correctly classified image into a misclassified one at this budget, "
            "so there is nothing to score")
NOT_RUN = "not run in this preset"
NOT_SCORED = "this detector was not scored on this attack's images"
NOT_RECORDED = "results.json holds no value here"
FEW_PAIRS = (f"too few pairs (fewer than {MIN_PAIRS}; see the pairs column): shown with its bootstrap 95 % interval "
             "in brackets, never compared with the paper")


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v: float | None, digits: int = 1) -> str:
    return DASH if missing(v) else f"{v:.{digits}f}"


def cell(ours: float | None, paper: float | None, digits: int = 1) -> str:
    """``ours (paper, Δ)``; just ``ours`` where the paper has no value."""
    if paper is None:
        return num(ours, digits)
    if missing(ours):
        return f"{DASH} ({num(paper, digits)})"
    return f"{num(ours, digits)} ({num(paper, digits)}, {ours - paper:+.{digits}f})"


def seconds(v: float | None) -> str:
    """A duration in the unit that reads best: ``29 s``, ``4.1 ms``, ``670 µs``."""
    if missing(v):
        return DASH
    scale, unit = next((s, u) for s, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")) if v >= s or u == "µs")
    return f"{v / scale:.2g} {unit}" if v / scale < 9.95 else f"{v / scale:.0f} {unit}"


def pct(v: float | None) -> float | None:
    return None if missing(v) else 100.0 * v


class Notes:
    """The footnotes of one table: ``mark(text)`` gives the superscript of ``text`` (one number per distinct text)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return str(self.texts.index(text) + 1).translate(SUPERSCRIPT)

    def empty(self, why: str) -> str:
        """An empty cell that says why: ``—¹``."""
        return DASH + self.mark(why)

    def value(self, v: float | None, why: str, digits: int = 1) -> str:
        """``v`` formatted, or an empty cell with its reason."""
        return self.empty(why) if missing(v) else num(v, digits)

    def blocks(self) -> list[tuple]:
        return [("notes", [f"{str(i).translate(SUPERSCRIPT)} {t}" for i, t in enumerate(self.texts, 1)])] \
            if self.texts else []


def why_missing(rec: Scored | None, metric: str | None = None) -> str:
    """The reason a value of ``rec`` (for ``metric``) is absent, from what the record says."""
    if rec is None:
        return NOT_RUN
    if rec.n_pairs == 0:
        return NO_PAIRS
    if metric is not None and metric not in rec.detection:
        return NOT_SCORED
    return NOT_RECORDED


# ----------------------------------------------------------------------------------------------- lookups
def attack_records(results: dict) -> list[AttackRecord]:
    return [AttackRecord.from_dict(r) for r in results.get("attacks", [])]


def transfer_records(results: dict) -> list[TransferRecord]:
    return [TransferRecord.from_dict(t) for t in results.get("transfer") or []]


def adaptive_records(results: dict) -> list[AdaptiveRecord]:
    return [AdaptiveRecord.from_dict(r) for r in (results.get("adaptive") or {}).get("records", [])]


def worst_cases(results: dict, norm: str | None = None) -> list[WorstCase]:
    """The adaptive worst case of every model × detector × ε (of one ``norm`` where given)."""
    out = [WorstCase.from_dict(w) for w in (results.get("adaptive") or {}).get("worst_case", [])]
    return [w for w in out if norm is None or (w.norm or "linf") == norm]


def paper_column(results: dict) -> str | None:
    """The paper's column of values for this run's dataset ("mnist", "cifar10"), None where it has none."""
    return paper_ref.column(results.get("paper_dataset") or results.get("dataset"))


def main_models(results: dict) -> dict[str, str]:
    """{model name: objective} of the main models, in results.json's order."""
    return {m: r["objective"] for m, r in results.get("models", {}).items() if r.get("role") == "main"}


def by_objective(results: dict) -> dict[str, str]:
    """{objective: model name} of the main models (the last of each objective)."""
    return {o: m for m, o in main_models(results).items()}


def arch_label(arch: str) -> str:
    """resnet32 -> ResNet-32."""
    return f"ResNet-{arch[6:]}" if arch.startswith("resnet") and arch[6:].isdigit() else arch


def detector_label(metric: str) -> str:
    """A detector's display name: its registry label ("K-density", "non-ME"), else the name as given."""
    cls = detectors.REGISTRY.get(metric)
    return cls.label if cls else metric


def span(iv, digits: int = 0, scale: float = 1.0) -> str:
    """An interval (lo, hi) times ``scale`` as " [lo, hi]"; "" where there is none."""
    lo, hi = iv or (None, None)
    return "" if lo is None or hi is None else f" [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def share(v: float | None, iv=None, digits: int = 1, iv_digits: int | None = None) -> str:
    """A share (a fraction) in % with its interval ``iv`` = (lo, hi): "1.5 [0.9, 2.4]"; "—" for None."""
    return DASH if v is None else f"{100 * v:.{digits}f}" + span(iv, digits if iv_digits is None else iv_digits, 100)


def share_cell(t: tuple | None) -> str:
    """(value, lo, hi) of shares as "value [lo, hi]" in % (one decimal, the interval rounded), "—" for None."""
    return DASH if t is None else share(t[0], t[1:], iv_digits=0)


def short_label(m: dict) -> str:
    """What a table or a sentence calls a model: its objective and its robust training, "CE", "RCE", "CE PGD-AT",
    "RCE TRADES" (``m``: a model of results.json, or a record with ``objective`` and ``training``)."""
    kind = {"pgd-at": " PGD-AT", "trades": " TRADES"}.get((m.get("training") or {}).get("kind"), "")
    return f"{str(m.get('objective', '?')).upper()}{kind}"


def model_short(results: dict, model: str, record: dict | None = None) -> str:
    """:func:`short_label` of the model named ``model`` in results.json (else of ``record``)."""
    return short_label(results.get("models", {}).get(model) or record or {})


def record(results: dict, model: str, attack: str, eps: float | None = None) -> AttackRecord | None:
    return next((r for r in attack_records(results) if r.model == model and r.attack == attack
                 and (eps is None or (r.eps is not None and abs(r.eps - eps) < 1e-9))), None)


def table2_record(results: dict, model: str, attack: str) -> AttackRecord | None:
    """The record of ``attack`` on ``model`` behind Table 2: its run at table2_eps when it has an ε grid."""
    has_grid = any(r.attack == attack and r.eps is not None for r in attack_records(results))
    return record(results, model, attack, results.get("table2_eps") if has_grid else None)


def enough_pairs(rec: Scored | None) -> bool:
    """A cell is read as a result only with at least MIN_PAIRS pairs (else it is shown, but never compared)."""
    return rec is not None and not too_few_pairs(rec.n_pairs or 0)


def operating_point(rec: Scored | None, metric: str) -> dict:
    """``metric``'s operating point at 5 % FPR in a record ({} where there is none)."""
    return rec.operating_point(metric) if rec is not None else {}


def interval(rec: Scored | None, metric: str, stat: str) -> tuple | None:
    """The bootstrap 95 % interval (×100) of ``stat`` of ``metric`` in a record, if it has one."""
    lo, hi = (operating_point(rec, metric).get("bootstrap") or {}).get(stat) or (None, None)
    return None if lo is None or hi is None else (100 * lo, 100 * hi)


def auc_cell(rec: AttackRecord, metric: str, paper: float | None, notes: Notes) -> str:
    """``ours (paper, Δ)``; below MIN_PAIRS pairs ``ours [interval]`` with a footnote; an empty cell says why."""
    ours = auc_of(rec, metric)
    if missing(ours):
        return notes.empty(why_missing(rec, metric)) + (f" ({num(paper)})" if paper is not None else "")
    if enough_pairs(rec):
        return cell(ours, paper)
    return num(ours) + span(interval(rec, metric, "auc")) + notes.mark(FEW_PAIRS)


def auc_of(rec: Scored | None, metric: str, key: str = "auc_strict") -> float | None:
    return None if rec is None else pct(rec.detector(metric).get(key))


def table2_cells(results: dict) -> Iterator[tuple[str, str, str, AttackRecord]]:
    """(attack, model, objective, record) of every Table 2 cell that has a record, attack by attack."""
    for attack in TABLE2_ATTACKS:
        for model, obj in main_models(results).items():
            rec = table2_record(results, model, attack)
            if rec is not None:
                yield attack, model, obj, rec


def ce_beside_rce(results: dict) -> Iterator[tuple[str, AttackRecord, AttackRecord]]:
    """(attack, CE record, RCE record) of each Table 2 attack with at least MIN_PAIRS pairs on both main models."""
    objs = by_objective(results)
    for attack in TABLE2_ATTACKS if {"ce", "rce"} <= set(objs) else ():
        ce, rce = (table2_record(results, objs[o], attack) for o in ("ce", "rce"))
        if enough_pairs(ce) and enough_pairs(rce):
            yield attack, ce, rce


def images(figs: dict, *keys: str) -> list[tuple]:
    """The figure blocks of those ``keys`` that were drawn (``figs`` = {key: (file, caption)})."""
    return [("img", k, *figs[k]) for k in keys if k in figs]


def sanity_checks(results: dict) -> list[tuple[str, str | None, bool, str]]:
    """(model, metric, passed, "model, detector: check: detail") of each sanity check of the adaptive attacks."""
    out = []
    for model, cs in ((results.get("adaptive") or {}).get("sanity") or {}).items():
        for c in cs:
            who = f"{model}, {detector_label(c['metric'])}" if c.get("metric") else model
            text = f"{who}: {c['check']}: {c.get('detail', '')}"
            out.append((model, c.get("metric"), bool(c.get("passed")), text))
    return out
