"""The numbers behind the report's bottom line (:mod:`.bottom_line`), read from ``results.json`` alone.

Every number is a :class:`Share`: a value with its 95 % interval and the n behind it, as fractions (an AUC of 0.93,
not 93). Where ``results.json`` has ``replication`` (several trained models per objective, protocol §21) the
numbers are the across-seed means with their two-level bootstrap intervals (``replication.across``); otherwise the
run's own: clean error with a Wilson interval, AUC with its percentile-bootstrap interval, the adaptive worst case
with its Wilson interval (given the threshold). Where a worst-case SR@N curve first reaches a level is
interpolated linearly between grid points, and nothing is assumed below or beyond the grid (:class:`Reach`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .. import detectors
from ..evaluation import paper_ref
from ..stats.metrics import wilson_interval
from .format import main_models, missing, operating_point, table2_record, worst_cases

TOL = 1e-9
PAPER_FIRST = ("kd", "non_me", "confidence")


@dataclass(frozen=True)
class Share:
    """A value with its 95 % interval (``lo``, ``hi``; None where there is none) and the n behind it."""

    value: float
    lo: float | None
    hi: float | None
    n: int | str

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return self.lo, self.hi


@dataclass(frozen=True)
class Reach:
    """Where a curve first reaches a level: ``eps`` (None: not reached), ``at_or_below`` (reached already at the
    smallest ε of the grid, so only an upper bound is known), ``eps_max`` (the largest ε tried)."""

    eps: float | None
    at_or_below: bool
    eps_max: float

    def text(self) -> str:
        """A table cell: "0.041", "≤ 0.01", "not reached up to 0.3"."""
        if self.eps is None:
            return f"not reached up to {self.eps_max:g}"
        return f"≤ {self.eps:g}" if self.at_or_below else f"{self.eps:.3g}"

    def phrase(self, level: float) -> str:
        """In a sentence: "reaches 50 % at ε 0.041", "… at ε ≤ 0.01", "stays below 50 % up to ε 0.3"."""
        if self.eps is None:
            return f"stays below {100 * level:.0f} % up to ε {self.eps_max:g}"
        return f"reaches {100 * level:.0f} % at ε {self.text()}"


def n_seeds(results: dict) -> int:
    """How many trained models per objective the numbers are averaged over (1 without ``replication``)."""
    rep = results.get("replication") or {}
    return int(rep.get("seeds") or 1) if rep.get("across") else 1


def _across(results: dict, table: str) -> list[dict] | None:
    return results["replication"]["across"].get(table) if n_seeds(results) > 1 else None  # > 1: across is there


def _from_row(row: dict | None) -> Share | None:
    """An across-seed row of ``replication.across`` as a Share (n: "200/180" where the seeds' n differ)."""
    if row is None or missing(row.get("mean")):
        return None
    ns = row.get("n") or []
    n = ns[0] if len(set(ns)) == 1 else "/".join(map(str, ns))
    return Share(row["mean"], row.get("low"), row.get("high"), n)


def model_by_objective(results: dict) -> dict[str, str]:
    """{"ce": model, "rce": model}: the first main model of each objective without robust training."""
    out: dict[str, str] = {}
    for m in main_models(results):
        r = results["models"][m]
        if not r.get("training"):
            out.setdefault(r["objective"], m)
    return out


def clean_error(results: dict, model: str) -> Share | None:
    """The test error of ``model`` (fraction) over its n test images."""
    rows = _across(results, "table1")
    if rows is not None:
        return _from_row(next((r for r in rows if r["model"] == model), None))
    m = results.get("models", {}).get(model) or {}
    err, n = m.get("test_error_percent"), m.get("n_test")
    if missing(err) or not n:
        return None
    k = round(err * n / 100)
    lo, hi = wilson_interval(k, n)
    return Share(err / 100, lo, hi, n)


def aucs(results: dict, model: str, metric: str) -> dict[str, Share]:
    """{attack: AUC (strict ties) of ``metric``} over the Table 2 attacks at the Table 2 ε, n = pairs."""
    rows = _across(results, "table2")
    out: dict[str, Share] = {}
    for attack in paper_ref.TABLE2_ATTACKS:
        if rows is not None:
            cands = [r for r in rows if r["model"] == model and r["metric"] == metric and r["attack"] == attack
                     and r.get("statistic", "auc") == "auc"]
            at_t2 = [r for r in cands if r.get("eps") is not None and abs(r["eps"] - (results.get("table2_eps") or 0)) < TOL]
            share = _from_row((at_t2 or cands or [None])[0])
        else:
            share = _record_auc(table2_record(results, model, attack), metric)
        if share is not None:
            out[attack] = share
    return out


def _record_auc(rec, metric: str) -> Share | None:
    if rec is None or missing(rec.detector(metric).get("auc_strict")) or not rec.n_pairs:
        return None
    lo, hi = (operating_point(rec, metric).get("bootstrap") or {}).get("auc") or (None, None)
    return Share(rec.detector(metric)["auc_strict"], lo, hi, rec.n_pairs)


def adaptive_metrics(results: dict) -> list[str]:
    """The detectors the adaptive evaluation attacked: the paper's (K-density, non-ME, confidence), then the
    others in the registry's order."""
    found = {w.metric for w in worst_cases(results)}
    order = {m: i for i, m in enumerate(PAPER_FIRST + tuple(m for m in detectors.names() if m not in PAPER_FIRST))}
    return sorted(found, key=lambda m: (order.get(m, len(order)), m))


def worst_case_curve(results: dict, model: str, metric: str) -> list[tuple[float, Share]]:
    """[(ε, worst-case SR@N)] under the L∞ adaptive attacks, ε ascending; n = clean-correct attacked images."""
    rows = _across(results, "adaptive")
    if rows is not None:
        out = [(r["eps"], _from_row(r)) for r in rows if r["model"] == model and r["metric"] == metric
               and (r.get("norm") or "linf") == "linf"
               and r.get("statistic", "attack_success_rate") == "attack_success_rate"]
    else:
        out = [(w.eps, Share(w.attack_success_rate, *(w.interval or (None, None)), w.n_clean_correct))
               for w in worst_cases(results, "linf")
               if w.model == model and w.metric == metric and w.attack_success_rate is not None]
    return sorted((p for p in out if p[1] is not None), key=lambda p: p[0])


def eps_reaching(curve: list[tuple[float, Share | float]], level: float) -> Reach | None:
    """Where the curve's value (a Share's, or a number) first reaches ``level``, linear between grid points,
    ε ascending (None for an empty curve)."""
    if not curve:
        return None
    pts = [(e, getattr(s, "value", s)) for e, s in curve]
    if pts[0][1] >= level:
        return Reach(pts[0][0], True, pts[-1][0])
    for (e0, s0), (e1, s1) in itertools.pairwise(pts):
        if s1 >= level:
            return Reach(e0 + (level - s0) * (e1 - e0) / (s1 - s0), False, pts[-1][0])
    return Reach(None, False, pts[-1][0])
