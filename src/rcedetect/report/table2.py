"""Table 2 of the report (detection AUC of the paper's detectors on the main models), what an AUC below 50 means,
and the list of cells where ours parts from the paper.

An AUC below 50 is explained from the stored records alone: 1 − AUC is the share of (clean, adversarial)
comparisons in which the adversarial input scores as more normal; for the confidence detector the operating point
says what share of the adversarial examples clears the confidence that 95 % of clean held-out images clear; the
ε grid says where the AUC crosses 50. A record that carries ``detection.<metric>.score_summary`` (mean and median
score of the clean inputs and of the adversarial examples over the pairs) adds the mean confidences.
"""

from __future__ import annotations

import itertools

from .. import detectors
from ..core.records import AttackRecord
from ..evaluation import paper_ref
from ..stats.operating_point import MIN_PAIRS
from .format import (
    Notes,
    attack_records,
    auc_cell,
    auc_of,
    ce_beside_rce,
    enough_pairs,
    images,
    missing,
    num,
    pct,
    table2_cells,
    why_missing,
)

METRICS = tuple(m for m in detectors.names() if detectors.REGISTRY[m].in_paper)
LABELS = tuple(detectors.REGISTRY[m].label for m in METRICS)
DISAGREE_AUC = 5.0  # AUC points (x100) beyond which a Table 2 cell is listed as a disagreement
LOW_AUC_TITLE = "Confidence AUCs below 50"


def table2(results: dict, col: str | None, figs: dict) -> list[tuple]:
    eps, notes = results.get("table2_eps"), Notes()
    rows = []
    for attack, _, obj, rec in table2_cells(results):
        cells = [auc_cell(rec, m, paper_ref.auc(attack, obj, m, col), notes) for m in METRICS]
        tpr = rec.detector("kd").get("tpr_at_5fpr")
        rows.append([paper_ref.label(attack), obj.upper(), *cells, notes.value(pct(tpr), why_missing(rec, "kd")),
                     str(rec.n_pairs)])
    paper = (f"Each detector cell reads ours (paper, Δ = ours − paper), the paper's values being its ResNet-32 on "
             f"{'MNIST' if col == 'mnist' else 'CIFAR-10'}." if col else
             "The paper has no values for this dataset: each detector cell is ours alone.")
    out = [("h", 2, "Table 2: detection AUC (×10⁻²) on the main models"),
           ("p", (f"FGSM, BIM, ILCM and JSMA at ε = {eps} (the released script's default; the paper does not "
                  "state it); C&W and C&W-hc at their one budget. Pairs: clean image correctly classified and its "
                  "adversarial version misclassified. AUC with ties counted as failures (as the original AUC.m), in "
                  f"percent; 50 is chance. {paper} TPR@5%FPR (KD): the K-density detector's point of this ROC "
                  "curve, its threshold set on the clean images of the pairs themselves; the operating-point "
                  "section below sets it on held-out clean images instead, so its TPR differs a little.")),
           ("table", ["attack", "objective", *LABELS, "TPR@5%FPR (KD)", "pairs"], rows), *notes.blocks()]
    return out + _ties(results) + images(figs, "auc_vs_eps") + low_auc_blocks(results, "auc_vs_eps" in figs)


def _ties(results: dict) -> list[tuple]:
    """The ½-tie AUCs: one sentence when they match the strict ones, else the cells that differ."""
    rows = []
    for attack, _, _, rec in table2_cells(results):
        pairs = [(auc_of(rec, m), auc_of(rec, m, "auc_half")) for m in METRICS]
        if any(not missing(s) and not missing(h) and abs(h - s) >= 0.05 for s, h in pairs):
            rows.append([paper_ref.label(attack), rec.objective.upper(), *[f"{num(s)} → {num(h)}" for s, h in pairs]])
    if not rows:
        return [("p", "With ties counted ½ (sklearn's convention) every AUC above is the same to 0.1.")]
    return [("p", ("The AUCs that change when ties count ½ (sklearn's convention), strict → ½; every other cell is "
                   "the same to 0.1:")), ("table", ["attack", "objective", *LABELS], rows)]


def _crossing(results: dict, model: str, attack: str, metric: str) -> str:
    """Where the AUC over the ε grid falls below 50, in words ('' without a grid)."""
    pts = sorted((r.eps, auc_of(r, metric)) for r in attack_records(results)
                 if r.model == model and r.attack == attack and r.eps is not None and not missing(auc_of(r, metric)))
    if len(pts) < 2:
        return ""
    if pts[0][1] < 50:
        return f" It is below 50 at every ε of the grid, from ε {pts[0][0]:g} ({pts[0][1]:.1f})."
    for (e0, a0), (e1, a1) in itertools.pairwise(pts):
        if a0 >= 50 > a1:
            return f" Over the ε grid it falls below 50 between ε {e0:g} ({a0:.1f}) and ε {e1:g} ({a1:.1f})."
    return ""


def _low_auc_item(results: dict, attack: str, model: str, obj: str, rec: AttackRecord) -> str:
    d = rec.detection["confidence"]
    strict, half = d.get("auc_strict"), d.get("auc_half")
    eps = f" at ε {rec.eps:g}" if rec.eps is not None else ""
    above = 1 - 2 * half + strict if not missing(half) else 1 - strict
    text = (f"{paper_ref.label(attack)} on {obj.upper()}{eps} ({rec.n_pairs} pairs): AUC {100 * strict:.1f}, so in "
            f"{100 * above:.0f} % of (clean, adversarial) comparisons the adversarial example is the more confident.")
    summary = d.get("score_summary") or {}
    clean, adv = (summary.get(k, {}).get("mean") for k in ("clean", "adversarial"))
    if not missing(clean) and not missing(adv):  # scores are −confidence
        text += f" Mean confidence: {-adv:.3f} on the adversarial examples, {-clean:.3f} on their clean images."
    op = (d.get("operating_points") or {}).get("fpr_5") or {}
    if not missing(op.get("threshold")) and not missing(op.get("tpr_success")):
        kept = 100 * (1 - op["tpr_success"])
        text += (f" The threshold that rejects {100 * op.get('fpr', 0.05):g} % of clean held-out images (confidence "
                 f"below {-op['threshold']:.3f}) rejects only {100 * op['tpr_success']:.1f} % of the adversarial "
                 f"examples: {kept:.1f} % are at least that confident.")
    if attack == "cw_hc":
        text += " C&W-hc asks for a logit margin κ = 10: confident mistakes by construction."
    return text + _crossing(results, model, attack, "confidence")


def low_cells(results: dict, metric: str = "confidence") -> list[tuple[str, str, str, AttackRecord]]:
    """(attack, model, objective, record) of the Table 2 cells of ``metric`` below 50 with at least MIN_PAIRS
    pairs."""
    return [c for c in table2_cells(results)
            if enough_pairs(c[3]) and not missing(auc := auc_of(c[3], metric)) and auc < 50]


def low_auc_blocks(results: dict, has_figure: bool) -> list[tuple]:
    """What a confidence AUC below 50 means, with the measured numbers of each such cell; [] without one."""
    cells = low_cells(results)
    if not cells:
        return []
    others = [f"{detectors.REGISTRY[m].label} on {paper_ref.label(a)} {obj.upper()}"
              for m in METRICS if m != "confidence" for a, _, obj, _ in low_cells(results, m)]
    fig = " ({fig:auc_vs_eps} shows the three AUCs over ε)" if has_figure else ""
    return [("h", 3, LOW_AUC_TITLE),
            ("p", ("An AUC below 50 is not a sign error. The AUC is the chance that a clean input scores as more "
                   "normal than a successful adversarial example; the confidence detector rejects inputs whose "
                   "maximal softmax probability is low, so a confidence AUC below 50 means the adversarial examples "
                   "are MORE confident than the clean inputs: large-ε FGSM and BIM steps on these small models make "
                   f"confident mistakes, which a confidence threshold cannot catch{fig}. Measured on the same "
                   "records:")),
            ("ul", [_low_auc_item(results, *c) for c in cells])] + (
        [("p", "The same reading holds for the other detectors' AUCs below 50 (" + "; ".join(others) + "): their "
               "score ranks the adversarial examples as more normal than the clean inputs.")] if others else [])


def disagreements(results: dict, col: str | None) -> list[tuple]:
    """Plain statements of where our numbers part from the paper's."""
    if col is None:
        return []
    low = {c[:2] for c in low_cells(results)}
    items = []
    for attack, model, obj, rec in table2_cells(results):
        if not enough_pairs(rec):
            continue  # too few pairs to disagree with anything
        for m in METRICS:
            ours, paper = auc_of(rec, m), paper_ref.auc(attack, obj, m, col)
            if not missing(ours) and paper is not None and abs(ours - paper) > DISAGREE_AUC:
                why = (f" Below 50: see “{LOW_AUC_TITLE}” under Table 2."
                       if m == "confidence" and (attack, model) in low else "")
                items.append(f"Table 2 {paper_ref.label(attack)} {obj.upper()} {detectors.REGISTRY[m].label}: "
                             f"ours {ours:.1f}, paper {paper:.1f} ({ours - paper:+.1f}; {rec.n_pairs} pairs).{why}")
    # the paper's central claim: RCE + K-density beats CE + K-density
    for attack, *recs in ce_beside_rce(results):
        ce, rce = (auc_of(r, "kd") for r in recs)
        if not missing(ce) and not missing(rce) and rce < ce:
            items.append(f"K-density AUC under {paper_ref.label(attack)} is lower for RCE ({rce:.1f}) "
                         f"than for CE ({ce:.1f}); the paper has RCE ≥ CE for every attack.")
    text = (f"Cells more than {DISAGREE_AUC:.0f} AUC points from the paper, and reversals of the paper's claims "
            f"(cells with fewer than {MIN_PAIRS} pairs are never counted):"
            if items else f"No Table 2 cell with at least {MIN_PAIRS} pairs is more than {DISAGREE_AUC:.0f} AUC points "
            "from the paper, and no claim is reversed.")
    return [("h", 2, "Where ours disagrees with the paper"), ("p", text)] + ([("ul", items)] if items else [])
