"""The report's sections beyond the paper: detectors at an operating point, and the adaptive evaluation.

Operating point (all from ``results.json``): the threshold is chosen on clean held-out images alone at 5 % FPR;
TPR over the pairs, SR@5 (attacked, clean-correct images that end misclassified AND accepted), robust accuracy
with rejection (Tramèr, ICML 2022) and bootstrap 95 % intervals. Cells with fewer than 30 pairs say so.
"""

from __future__ import annotations

from .. import detectors
from ..evaluation.paper_ref import label
from ..stats.operating_point import MIN_PAIRS
from .bottom_line_numbers import eps_reaching as reach
from .format import (
    FEW_PAIRS,
    NO_PAIRS,
    NOT_RECORDED,
    Notes,
    adaptive_records,
    detector_label,
    images,
    interval,
    model_short,
    operating_point,
    pct,
    sanity_checks,
    span,
    table2_cells,
    worst_cases,
)

TARGET_LEVELS = (0.5, 0.9)
PAPER_METRICS = tuple(m for m in detectors.names() if detectors.REGISTRY[m].in_paper)


def operating_blocks(results: dict, figs: dict) -> list[tuple]:
    rows, notes = [], Notes()
    for attack, _, _, rec in table2_cells(results):
        for metric, d in rec.detection.items():
            op = operating_point(rec, metric)
            if metric not in PAPER_METRICS or not op:
                continue  # the baselines of other papers: the "Detectors compared" section
            n = op.get("n_pairs", 0)
            why = NO_PAIRS if n == 0 else NOT_RECORDED
            vals = [(d.get("auc_strict"), "auc"), (op.get("tpr_success"), "tpr_success"),
                    (op.get("attack_success_rate"), "attack_success_rate"),
                    (op.get("robust_accuracy_with_rejection"), None), (op.get("clean_rejection_rate"), None)]
            cells = [notes.value(pct(v), why if stat in ("auc", "tpr_success") else NOT_RECORDED)
                     + (span(interval(rec, metric, stat)) if stat else "") for v, stat in vals]
            cells[0] += notes.mark(FEW_PAIRS) if 0 < n < MIN_PAIRS else ""
            rows.append([label(attack), rec.objective.upper(), detector_label(metric), *cells, str(n)])
    if not rows:
        return []
    return [("h", 2, "Detection at an operating point (5 % FPR on clean held-out images)"),
           ("p", ("The threshold of each detector is chosen on clean test images that no attack touches, so that 5 % "
                  "of them are rejected; it never sees the attack evaluated. TPR: adversarial images rejected among "
                  "the pairs. SR@5: attacked images, correct when clean, that end misclassified AND accepted. Robust "
                  "accuracy with rejection (Tramèr 2022): an attacked image counts correct if classified right or "
                  "rejected. Clean rejected: the attacked images' clean versions the threshold rejects. All in %; "
                  "brackets: bootstrap 95 % intervals.")),
           ("table", ["attack", "objective", "detector", "AUC", "TPR@5%", "SR@5", "robust acc. w/ rejection",
                      "clean rejected", "pairs"], rows), *notes.blocks(), *images(figs, "roc")]


def eps_reaching(points: list[tuple[float, float]], level: float) -> str:
    """The ε where a success-rate curve first reaches ``level`` (linear between grid points), in words."""
    r = reach(sorted(points), level)
    return "–" if r is None else f"> {r.eps_max:g}" if r.eps is None else r.text()


def adaptive_blocks(results: dict, figs: dict) -> list[tuple]:
    ad, records, worst = results.get("adaptive"), adaptive_records(results), worst_cases(results)
    if not records:
        return []
    fpr = 100 * ad.get("fpr", 0.05)
    out = [("h", 2, "Adaptive evaluation: attacks that know the detector"),
           ("p", (f"Every attack below targets the classifier and the detector together, against each detector's "
                  f"threshold at {fpr:g} % FPR on clean held-out images. SR@{fpr:g} = the share of attacked images, "
                  "correct when clean, that end misclassified AND accepted; the worst case counts an image as lost if "
                  "any attack at that ε or a smaller one fooled both (Carlini & Wagner 2017; Bryniarski et al. "
                  "2022).")), *images(figs, "adaptive")]
    rows, verdicts, notes = [], [], Notes()
    for w in worst:
        norm = w.norm or "linf"
        recs = [r for r in records if r.model == w.model and r.metric == w.metric and r.eps == w.eps
                and (r.norm or "linf") == norm]
        robust = min((r.operating_point.get("robust_accuracy_with_rejection") for r in recs), default=None,
                     key=lambda v: 2.0 if v is None else v)
        none_correct = "no attacked image is correctly classified when clean, so there is no rate"
        per = ", ".join(f"{label(r.attack)} " + notes.value(pct(r.operating_point.get("attack_success_rate")),
                                                             none_correct, 0) for r in recs)
        worst_sr = notes.value(pct(w.attack_success_rate), none_correct) + span(w.interval, 0, 100)
        rows.append([model_short(results, w.model, {"objective": w.objective}), detector_label(w.metric),
                     f"{w.eps:g}" + (" (L2)" if norm == "l2" else ""), worst_sr, per,
                     notes.value(pct(robust), none_correct), f"{w.n_fooled} / {w.n_clean_correct}"])
    out += [("p", (f"Worst case with its 95 % Wilson interval (given the threshold); per-attack SR@{fpr:g} with "
                   "bootstrap intervals are in results.json (adaptive.records[*].operating_point).")),
            ("table", ["model", "detector", "ε", f"worst-case SR@{fpr:g}", f"SR@{fpr:g} per attack",
                       "robust acc. w/ rejection (worst attack)", "fooled / clean-correct"], rows), *notes.blocks()]
    curves: dict[tuple, list] = {}
    for w in worst_cases(results, "linf"):
        if w.attack_success_rate is not None:
            curves.setdefault((w.model, w.objective, w.metric), []).append((w.eps, w.attack_success_rate))
    checks = sanity_checks(results)
    failed = {(m, metric or "kd") for m, metric, passed, _ in checks if not passed}
    for (model, obj, metric), pts in sorted(curves.items(), key=lambda kv: (kv[0][1] != "ce", kv[0][2] != "kd")):
        reach = ", ".join(f"{100 * lv:.0f} % at ε {eps_reaching(pts, lv)}" for lv in TARGET_LEVELS)
        top = max(pts)
        verdict = "falls to" if top[1] >= 0.5 else "holds against"
        doubt = (" A sanity check failed for this detector on this model: the attacks may be too weak to support "
                 "that." if (model, metric) in failed and top[1] < 0.5 else "")
        verdicts.append(f"{model_short(results, model, {'objective': obj})} + {detector_label(metric)} {verdict} the "
                        f"adaptive attacks within the grid: worst-case SR@{fpr:g} reaches {reach}; at ε {top[0]:g} "
                        f"it is {100 * top[1]:.0f} %.{doubt}")
    out += [("p", "In plain words:"), ("ul", verdicts),
            ("p", ("Tramèr (ICML 2022) shows that a detector robust at distance ε yields an (inefficient) classifier "
                   "robust at ε/2. A detector that kept SR low at ε would therefore imply a robust classifier at ε/2 "
                   "that the network alone is not (its robust accuracy, where this run measures it: \"Detection or "
                   "robust training?\"); low SR at large ε is a reason to suspect a weak attack "
                   "(see the sanity checks), not a proof of robustness."))]
    warnings = [text for _, _, passed, text in checks if not passed]
    if ad.get("sanity"):  # passed checks are a count (their details: results.json, adaptive.sanity); failures in full
        out += [("h", 3, "Sanity checks"),
                ("p", f"{len(checks) - len(warnings)} of {len(checks)} sanity checks passed."
                      + ("" if warnings else " Each one's detail is in results.json (adaptive.sanity)."))]
        if warnings:
            out += [("p", "WARNING: these checks failed; the numbers above may overstate robustness:"),
                    ("ul", warnings)]
    return out
