"""The report's "Detectors compared" section: the paper's detectors beside the baselines of other papers (LID,
Mahalanobis, KD+BU; protocol §15) on the same backbones, the same attacked images and the same thresholds.

From ``results.json`` alone: per detector × objective × attack (its Table-2 run), the AUC over the pairs and the
TPR at 5 % FPR (threshold from clean held-out images), each with its bootstrap 95 % interval; under the adaptive
evaluation, the worst-case SR@5 per ε with its Wilson interval. The attack the baselines' regression was fit on
is marked; every other column is an attack they never saw.
"""

from __future__ import annotations

from .. import detectors
from ..core.records import AttackRecord
from ..evaluation.paper_ref import TABLE2_ATTACKS, label
from ..stats.operating_point import MIN_PAIRS
from .format import (
    Notes,
    attack_records,
    detector_label,
    interval,
    main_models,
    missing,
    num,
    operating_point,
    pct,
    share,
    span,
    table2_record,
    why_missing,
    worst_cases,
)
from .verdicts import HIGHER, compare

#: the best detector against the runner-up, by :func:`.verdicts.compare` of their AUC intervals
BEATS = {HIGHER: "beats"}


def _cell(rec: AttackRecord | None, metric: str, stat: str, notes: Notes) -> str:
    op = operating_point(rec, metric)
    if not op or missing(op.get(stat)):
        return notes.empty(why_missing(rec, metric))
    text = num(pct(op[stat]), 0) + span(interval(rec, metric, stat))
    n = op.get("n_pairs", 0)
    return text + (f" ({n} pairs)" if n < MIN_PAIRS else "")


def fit_attacks(results: dict) -> dict[str, dict]:
    """{baseline: its fitting split record} of the first main model that has it."""
    out: dict[str, dict] = {}
    for model in main_models(results):
        for metric, b in (results.get("detectors", {}).get(model, {}).get("baselines") or {}).items():
            out.setdefault(metric, b.get("fit_split") or {})
    return out


def compared_metrics(results: dict) -> list[str]:
    """Every detector scored in the records, in the registry's order."""
    seen = {m for r in attack_records(results) for m in r.detection}
    return [m for m in detectors.names() if m in seen]


def best_by_attack(results: dict, metrics: list[str], attacks: list[str]) -> list[str]:
    """Plain sentences: per objective and attack, the detector with the highest AUC and whether its bootstrap
    interval clears the runner-up's (a win) or overlaps it (a tie within the intervals)."""
    out = []
    for model, obj in main_models(results).items():
        for attack in attacks:
            rec = table2_record(results, model, attack)
            ops = {m: operating_point(rec, m) for m in metrics}
            scored = [(pct(op.get("auc")), m) for m, op in ops.items()
                      if op.get("auc") is not None and op.get("n_pairs", 0) >= MIN_PAIRS]
            if len(scored) < 2:
                continue
            (a1, m1), (a2, m2) = sorted(scored, reverse=True)[:2]
            verb = BEATS.get(compare(interval(rec, m1, "auc"), interval(rec, m2, "auc")), "ties within the intervals with")
            out.append(f"{obj.upper()}, {label(attack)} ({ops[m1].get('n_pairs')} pairs): {detector_label(m1)} "
                       f"{a1:.1f} {verb} {detector_label(m2)} {a2:.1f}.")
    return out


def compare_blocks(results: dict) -> list[tuple]:
    fits = fit_attacks(results)
    if not fits:
        return []
    metrics = compared_metrics(results)
    attacks = [a for a in TABLE2_ATTACKS if any(r.attack == a for r in attack_records(results))]
    fit_names = {s.get("attack") for s in fits.values()}
    head = [f"{label(a)}{' (fit)' if a in fit_names else ''}" for a in attacks]
    fit_text = "; ".join(
        f"{detector_label(m)}: {label(s.get('attack', ''))} at ε {s.get('eps')} on {s.get('n_images')} training images "
        f"({s.get('n_clean')} clean-correct, {s.get('n_adversarial')} adversarial)" for m, s in fits.items())
    out = [("h", 2, "Detectors compared: the paper's and other papers' detectors on the same backbone"),
           ("p", ("LID (Ma et al. 2018), Mahalanobis (Lee et al. 2018) and KD+BU (Feinman et al. 2017) each combine "
                  "their per-layer (or KD and BU) features with a logistic regression. The original scripts fit it on "
                  "the attack they then report; here it is fit on a split of training images that no evaluation "
                  f"touches — {fit_text}. The column marked (fit) is that attack on other images; every other "
                  "column is an attack the regression never saw. The paper's detectors fit nothing on attacks. "
                  "Thresholds: 5 % FPR on the same clean held-out images for every detector. Brackets: bootstrap "
                  f"95 % intervals over images; cells with fewer than {MIN_PAIRS} pairs say how many."))]
    for stat, title in (("auc", "AUC over the pairs (%)"), ("tpr_success", "TPR at 5 % FPR (%)")):
        notes = Notes()
        rows = [[detector_label(m), obj.upper(), *[_cell(table2_record(results, model, a), m, stat, notes)
                                                   for a in attacks]]
                for model, obj in main_models(results).items() for m in metrics]
        out += [("h", 3, title), ("table", ["detector", "objective", *head], rows), *notes.blocks()]
    out += _adaptive_table(results, metrics)
    words = best_by_attack(results, metrics, attacks)
    if words:
        out += [("p", "Who wins where (highest AUC; a win only when its interval clears the runner-up's):"),
                ("ul", words)]
    return out


def _adaptive_table(results: dict, metrics: list[str]) -> list[tuple]:
    ad = results.get("adaptive") or {}
    worst = worst_cases(results, "linf")
    if not worst:
        return []
    eps = sorted({w.eps for w in worst})
    fpr = 100 * ad.get("fpr", 0.05)
    rows, notes = [], Notes()
    for model, obj in main_models(results).items():
        for m in metrics:
            ws = {w.eps: w for w in worst if w.model == model and w.metric == m}
            if not ws:
                continue
            cells = [notes.empty("this detector was not attacked at this ε") if ws.get(e) is None else
                     notes.empty("no attacked image is correctly classified when clean, so no rate")
                     if missing(ws[e].attack_success_rate) else share(ws[e].attack_success_rate, ws[e].interval, 0)
                     for e in eps]
            attacks = sorted({a for w in ws.values() for a in w.attacks})
            n = next(iter(ws.values())).n_clean_correct
            failed = [c["check"] for c in (ad.get("sanity") or {}).get(model, [])
                      if c.get("metric") == m and not c["passed"]]
            rows.append([detector_label(m), obj.upper(), ", ".join(label(a) for a in attacks), str(n), *cells,
                         "failed: " + ", ".join(failed) if failed else "passed"])
    return [("h", 3, f"Worst-case SR@{fpr:g} under the adaptive attacks (%, lower is better)"),
            ("p", (f"The share of attacked, clean-correct images that some adaptive attack at that L∞ ε turned into a "
                   f"misclassified image the detector accepts at its {fpr:g} %-FPR threshold; 95 % Wilson intervals. "
                   "Each detector is attacked through its own differentiable score; an image fooled at a smaller ε "
                   "counts at every larger ε. Sanity: the checks of the adaptive section for that detector (a failed "
                   "one means the attacks, not the detector, may be what holds).")),
            ("table", ["detector", "objective", "attacks", "images", *[f"ε {e:g}" for e in eps], "sanity"], rows),
            *notes.blocks()]
