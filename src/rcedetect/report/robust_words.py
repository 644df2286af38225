"""The words of the report's "Detection or robust training?" section (:mod:`.robust` builds its tables): what the
robust cascade says of each model's evaluation, which defence keeps the most at each ε, what detectors add on top of
robust training, and Tramèr's flags. Every comparison is of Wilson intervals: two numbers are "apart" only where
one interval lies wholly above the other; otherwise the words say "not resolved".
"""

from __future__ import annotations

from ..core.records import RobustRecord
from .format import detector_label, model_short, share_cell, short_label
from .verdicts import APART, HIGHER, compare

CONSISTENT, WEAK, UNRESOLVED = "consistent", "a sign of a weak attack", "not resolved"
NONE = "none"  # the "detector" of a classifier alone
#: attacks that use no gradient: an image only they break, after the gradient attacks failed on it, is a sign of
#: gradient masking (the random search of rcedetect.attacks.random_search, Square, SPSA, and foolbox's decision-based)
GRADIENT_FREE = ("random_search_detector", "torchattacks:Square", "torchattacks:SPSA", "torchattacks:OnePixel",
                 "torchattacks:Pixle", "foolbox:BoundaryAttack", "foolbox:HopSkipJumpAttack")


def apart(high: tuple, low: tuple) -> bool:
    """``high`` = (value, lo, hi) lies wholly above ``low`` (:func:`.verdicts.compare` of their intervals)."""
    return compare(high[1:], low[1:]) == HIGHER


def robust_record(rb: dict, model: str) -> RobustRecord:
    """The cascade record of ``model`` in results.json's ``robust`` (an empty one where there is none)."""
    rec = (rb.get("records") or {}).get(model)
    return RobustRecord.from_dict(rec) if rec else RobustRecord()


def model_of(results: dict, model: str, row: dict) -> dict:
    """A row of the section with its model's entry of results.json (objective, training, accuracy) over it."""
    return {**row, **results.get("models", {}).get(model, {})}


def cascade_words(results: dict, rb: dict, models: list[str]) -> list[tuple]:
    """What the cascade's later attacks say of each model's evaluation: the images they broke that the first
    attack left standing (an evaluation with the first alone could overstate robust accuracy by up to that share),
    and those a gradient-free attack broke after every gradient attack (a sign of gradient masking; Athalye et al.
    2018, Carlini et al. 2019)."""
    order = [a["name"] for a in rb.get("attacks") or []]
    free = {a["name"] for a in rb.get("attacks") or [] if a["attack"] in GRADIENT_FREE}
    if len(order) < 2:
        return []
    words, clean_first = [], []
    for model in models:
        rec = robust_record(rb, model)
        by, at = rec.broken_by or [], rec.broken_at or []
        n = len(by)
        if not n:
            continue  # no record of this model's cascade
        later = [(b, e) for b, e in zip(by, at, strict=False) if b not in (None, "clean", order[0])]
        label = model_short(results, model, rec.to_dict())
        if not later:
            clean_first.append(label)
            continue
        counts = {a: sum(b == a for b, _ in later) for a in order[1:]}
        line = (f"{label}: the later attacks broke {len(later)} of the {n} images that {order[0]} left standing at "
                f"their ε (" + ", ".join(f"{a} {k}" for a, k in counts.items() if k) + f"), at ε up to "
                f"{max(e for _, e in later):g}: an evaluation by {order[0]} alone could overstate robust accuracy by "
                f"up to {100 * len(later) / n:.1f} points.")
        k_free = sum(counts.get(a, 0) for a in free)
        if k_free:
            line += (f" {k_free} of them fell only to the gradient-free "
                     + ", ".join(a for a in order if a in free and counts.get(a)) + " after every gradient attack "
                     "before it: a sign of gradient masking: the more such images, the less its gradient attacks alone can be trusted.")
        words.append(line)
    if clean_first:
        words.append(f"{', '.join(clean_first)}: every image broken was broken first by {order[0]}; the later attacks "
                     "found nothing it missed.")
    return [("p", "What the cascade says of the evaluation:"), ("ul", words)]


def who(results: dict, r: dict) -> str:
    name = short_label(r["m"])
    return name if r["metric"] == NONE else f"{name} + {detector_label(r['metric'])}"


def on_robust_words(results: dict, rows: list[dict]) -> list[str]:
    """Per robust-trained model with detectors: the most any of its detectors keeps above (or the least below) the
    model alone, over the grid: what detection adds on top of robust training."""
    words = []
    for model in dict.fromkeys(r["model"] for r in rows if r["metric"] != NONE and r["m"].get("training")):
        alone = {r["eps"]: r for r in rows if r["model"] == model and r["metric"] == NONE and r["at"] is not None}
        pairs = [(r["at"][0] - alone[r["eps"]]["at"][0], r) for r in rows if r["model"] == model
                 and r["metric"] != NONE and r["at"] is not None and r["eps"] in alone]
        if not pairs:
            continue
        gain, r = max(pairs, key=lambda p: p[0])
        base = alone[r["eps"]]
        up = apart(r["at"], base["at"])
        words.append(f"A detector on {short_label(r['m'])}: at best {100 * gain:+.1f} points over the model alone "
                     f"({detector_label(r['metric'])} at ε {r['eps']:g}: {share_cell(r['at'])} against {share_cell(base['at'])})"
                     + ("; no detector adds to robust training here (its clean rejection costs more than it catches)."
                        if gain <= 0 else f"{', ' if up else '; '}{APART[up]}."))
    return words


def plain_words(results: dict, rows: list[dict]) -> list[str]:
    """Per ε: which defence keeps the most, a classifier alone or a detector on a standard model, by how much and
    whether the intervals separate it; what the detectors on robust-trained models add to them; Tramèr's flags."""
    words = []
    for eps in dict.fromkeys(r["eps"] for r in rows):
        at = [r for r in rows if r["eps"] == eps and r["at"] is not None
              and (r["metric"] == NONE or not r["m"].get("training"))]  # the question: one or the other
        if not at:
            continue
        top = max(at, key=lambda r: r["at"][0])
        other = [r for r in at if (r["metric"] == NONE) != (top["metric"] == NONE)]
        if top["metric"] == NONE:
            kind = "robust training" if top["m"].get("training") else "the standard classifier alone"
        else:
            kind = "detection"
        line = f"At ε {eps:g}, {kind} keeps the most: {who(results, top)} {share_cell(top['at'])}"
        if other:
            best_other = max(other, key=lambda r: r["at"][0])
            line += (f"; the best {'detector' if top['metric'] == NONE else 'classifier alone'} "
                     f"({who(results, best_other)}) keeps {share_cell(best_other['at'])}, "
                     f"{APART[apart(top['at'], best_other['at'])]}.")
        else:
            line += "."
        words.append(line)
    words += on_robust_words(results, rows)
    flagged = [r for r in rows if r["verdict"] in (WEAK, UNRESOLVED)]
    checked = [r for r in rows if r["verdict"]]
    if checked:
        if flagged:
            words.append("Tramèr's check flags " + "; ".join(
                f"{who(results, r)} at ε {r['eps']:g} ({r['verdict']}: {share_cell(r['at'])} against "
                f"{100 * r['best']['robust_accuracy']:.0f} for {short_label(model_of(results, r['best']['model'], r['best']))}"
                " at ε/2)" for r in flagged) + ".")
        else:
            words.append(f"Tramèr's check: all {len(checked)} detector claims are consistent: no detector claims "
                         "more at ε than the best classifier trained here reaches at ε/2.")
    return words
