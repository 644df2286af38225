"""The report's "Detection or robust training?" section: robust accuracy of every classifier, each detector's
robust accuracy with rejection beside it, and Tramèr's check (all from ``results.json``'s ``robust``).

- Robust accuracy (no detector; Madry et al. 2018, RobustBench's figure): the share of attacked images classified
  right clean and under every attack of the cascade at every ε' ≤ ε (:mod:`rcedetect.evaluation.robust`).
- Robust accuracy with rejection (Tramèr, "Detecting adversarial examples is (nearly) as hard as classifying
  them", ICML 2022): the clean image classified right and accepted, and no adaptive attack at any ε' ≤ ε made it
  misclassified and accepted (:mod:`rcedetect.reproduce.robust`). A classifier without a detector is the detector
  that rejects nothing, so both are one number and one column.
- Tramèr's check: a detector robust at ε implies an (inefficient) classifier robust at ε/2 with the same accuracy.
  A detector that claims more robust accuracy with rejection at ε than the best classifier we trained on the same
  backbone reaches at ε/2 claims more than robust training achieved, "a sign of a weak attack" when the Wilson
  intervals separate the two, "not resolved" when they overlap; "consistent" otherwise. The reduction builds a
  classifier that is inefficient and that we did not train, so a claim above our best classifier is a sign, not a
  proof, that the adaptive attacks were too weak.

The words (what the cascade says of each evaluation, which defence keeps the most at each ε, what detectors add
on top of robust training, Tramèr's flags) compare Wilson intervals: two numbers are "apart" only where one
interval lies wholly above the other; otherwise the words say "not resolved".
"""

from __future__ import annotations

from collections import Counter

from ..core.records import RobustRecord
from ..stats.metrics import wilson_interval
from .format import DASH, Notes, arch_label, detector_label, model_short, share, share_cell, short_label
from .verdicts import APART, HIGHER, compare

CONSISTENT, WEAK, UNRESOLVED = "consistent", "a sign of a weak attack", "not resolved"
NONE = "none"  # the "detector" of a classifier alone
#: attacks that use no gradient: an image only they break, after the gradient attacks failed on it, is a sign of
#: gradient masking (the random search of rcedetect.attacks.random_search, Square, SPSA, and foolbox's decision-based)
GRADIENT_FREE = ("random_search_detector", "torchattacks:Square", "torchattacks:SPSA", "torchattacks:OnePixel",
                 "torchattacks:Pixle", "foolbox:BoundaryAttack", "foolbox:HopSkipJumpAttack")
REL_TOL = 1e-3  # two ε closer than this (relatively) are one budget (rcedetect.reproduce.robust_config.close)


def close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-12)


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


def model_label(m: dict) -> str:
    """"ResNet-8 CE", "ResNet-8 CE, PGD-AT ε 0.3 (7 steps)" or "ResNet-8 CE, TRADES β 6, ε 0.3 (7 steps)"."""
    base, t = f"{arch_label(m.get('arch', '?'))} {str(m.get('objective', '?')).upper()}", m.get("training")
    if not t:
        return base
    budget = f"ε {t['eps']:g}{' L2' if t.get('norm') == 'l2' else ''} ({t['steps']} steps)"
    return f"{base}, TRADES β {t['beta']:g}, {budget}" if t.get("kind") == "trades" else f"{base}, PGD-AT {budget}"


def tramer_verdict(claim: tuple | None, best: tuple | None) -> str:
    """Tramèr's check of a detector's claimed robust accuracy with rejection at ε, ``claim`` = (value, lo, hi),
    against the best classifier's robust accuracy at ε/2 on the same backbone, ``best`` = (value, lo, hi):
    "consistent" where the claim is no higher, "a sign of a weak attack" where its interval lies above the
    classifier's, "not resolved" in between; "" where either is missing."""
    if claim is None or best is None or claim[0] is None or best[0] is None:
        return ""
    if claim[0] <= best[0] + 1e-12:
        return CONSISTENT
    return WEAK if apart(claim, best) else UNRESOLVED


def _triple(row: dict | None, key: str, iv: str = "interval") -> tuple | None:
    """(the value ``key`` of ``row``, and the ends of its interval ``iv``); None without the value."""
    if row is None or row.get(key) is None:
        return None
    lo, hi = row.get(iv) or (None, None)
    return (row[key], lo, hi)


def _find(rows: list[dict], eps: float, **match) -> dict | None:
    return next((r for r in rows if close(r["eps"], eps) and all(r.get(k) == v for k, v in match.items())), None)


def best_classifier(classifiers: list[dict], arch: str, eps: float) -> dict | None:
    """The classifier (no detector) with the highest robust accuracy at ``eps`` on backbone ``arch``."""
    rows = [r for r in classifiers if r.get("arch") == arch and close(r["eps"], eps)
            and r.get("robust_accuracy") is not None]
    return max(rows, key=lambda r: r["robust_accuracy"], default=None)


def _clean(results: dict, model: str) -> str:
    m = results.get("models", {}).get(model, {})
    acc, n = m.get("test_accuracy"), m.get("n_test")
    return DASH if acc is None or not n else share(acc, wilson_interval(round(acc * n), n), iv_digits=0)


def classifier_blocks(results: dict, rb: dict) -> list[tuple]:
    rows_in = rb.get("classifiers") or []
    models = list(dict.fromkeys(r["model"] for r in rows_in))
    grid, order = list(rb.get("eps") or []), [a["name"] for a in rb.get("attacks") or []]
    rows = []
    for model in models:
        mine = [r for r in rows_in if r["model"] == model]
        by = Counter(b for b in robust_record(rb, model).broken_by or [] if b not in (None, "clean"))
        broken = ", ".join(f"{a} {by[a]}" for a in order) or DASH
        rows.append([model_label(model_of(results, model, mine[0])), _clean(results, model),
                     str(mine[0].get("n_images", "")),
                     *[share_cell(_triple(_find(mine, e), "robust_accuracy")) for e in grid], broken])
    attacks = ", ".join(f"{a['name']} ({a['attack']})" for a in rb.get("attacks") or [])
    return [("h", 3, "Robust accuracy of every classifier (no detector)"),
            ("p", (f"Robust accuracy (%) under the attacks {attacks}, run one after another at each ε on the images "
                   "still classified right, true labels, on the classifier alone; an image broken at a smaller ε "
                   "counts as broken at every larger one. n attacked test images (the adaptive evaluation's); "
                   "brackets: 95 % Wilson intervals. Clean accuracy on the whole test set. The last column: how many "
                   "images each attack broke first (an attack that breaks none after the first adds nothing; one "
                   "that breaks many a sign that the earlier ones are weak).")),
            ("table", ["model", "clean acc. (test set)", "n", *[f"ε {e:g}" for e in grid], "broken first by"], rows),
            *cascade_words(results, rb, models)]


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


def detection_rows(results: dict, rb: dict) -> tuple[list[dict], Notes]:
    """One entry per (ε of the adaptive grid, model, detector or none): the section's table and its words."""
    classifiers, detectors = rb.get("classifiers") or [], rb.get("detectors") or []
    grid = list(rb.get("adaptive_eps") or []) or list(rb.get("eps") or [])
    notes, out = Notes(), []
    for eps in grid:
        for model in dict.fromkeys(r["model"] for r in classifiers):
            row = _find(classifiers, eps, model=model)
            if row is None:
                continue
            base = {"eps": eps, "model": model, "m": (m := model_of(results, model, row))}
            half = _find(classifiers, eps / 2, model=model)
            out.append({**base, "metric": NONE, "at": _triple(row, "robust_accuracy"), "n": row.get("n_images"),
                        "half": _triple(half, "robust_accuracy"), "rejected": None, "verdict": "", "best": None,
                        "half_note": "" if half else notes.mark("no robust accuracy at ε/2 in this run")})
            for metric in dict.fromkeys(d["metric"] for d in detectors if d["model"] == model):
                d = _find(detectors, eps, model=model, metric=metric)
                if d is None:
                    continue
                h = _find(detectors, eps / 2, model=model, metric=metric)
                half, half_note = _triple(h, "robust_accuracy_with_rejection"), ""
                if h is None or h.get("eps_attacked") is None:
                    half, half_note = None, notes.mark("no adaptive attack ran at or below ε/2")
                elif not close(h["eps_attacked"], eps / 2):
                    half_note = notes.mark("no adaptive attack ran at ε/2: the worst case over the grid's ε′ below "
                                           "it, an upper bound")
                claim = _triple(d, "robust_accuracy_with_rejection")
                best = best_classifier(classifiers, m.get("arch"), eps / 2)
                out.append({**base, "metric": metric, "at": claim, "half": half, "half_note": half_note,
                            "n": d.get("n_images"),
                            "rejected": _triple(d, "clean_rejection_rate", "clean_rejection_interval"),
                            "verdict": tramer_verdict(claim, _triple(best, "robust_accuracy")), "best": best})
    return out, notes


def _verdictcell(results: dict, r: dict) -> str:
    if r["metric"] == NONE:
        return DASH
    if not r["verdict"]:
        return "not checked (no classifier at ε/2)"
    b = r["best"]
    return f"{r['verdict']} (best at ε/2: {short_label(model_of(results, b['model'], b))} {100 * b['robust_accuracy']:.0f})"


def who(r: dict) -> str:
    name = short_label(r["m"])
    return name if r["metric"] == NONE else f"{name} + {detector_label(r['metric'])}"


def on_robust_words(rows: list[dict]) -> list[str]:
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
        kind = ("detection" if top["metric"] != NONE else "robust training" if top["m"].get("training")
                else "the standard classifier alone")
        line = f"At ε {eps:g}, {kind} keeps the most: {who(top)} {share_cell(top['at'])}"
        best = max(other, key=lambda r: r["at"][0], default=None)
        words.append(line + ("." if best is None else
                             f"; the best {'detector' if top['metric'] == NONE else 'classifier alone'} ({who(best)}) "
                             f"keeps {share_cell(best['at'])}, {APART[apart(top['at'], best['at'])]}."))
    words += on_robust_words(rows)
    flagged = [r for r in rows if r["verdict"] in (WEAK, UNRESOLVED)]
    checked = [r for r in rows if r["verdict"]]
    if checked:
        if flagged:
            words.append("Tramèr's check flags " + "; ".join(
                f"{who(r)} at ε {r['eps']:g} ({r['verdict']}: {share_cell(r['at'])} against "
                f"{100 * r['best']['robust_accuracy']:.0f} for {short_label(model_of(results, r['best']['model'], r['best']))}"
                " at ε/2)" for r in flagged) + ".")
        else:
            words.append(f"Tramèr's check: all {len(checked)} detector claims are consistent: no detector claims "
                         "more at ε than the best classifier trained here reaches at ε/2.")
    return words


def robust_blocks(results: dict, figure: list[tuple] = ()) -> list[tuple]:
    """The section; ``figure``: its image blocks (the robust-accuracy figure), placed after the introduction."""
    rb = results.get("robust")
    if not rb or not rb.get("classifiers"):
        return []
    fpr = 100 * (rb.get("fpr") or 0.05)
    out = [("h", 2, "Detection or robust training?"),
           ("p", ("Beyond the paper: each model as it would be deployed, alone or behind each detector fitted on it, "
                  "under the strongest attacks this run has. For a classifier alone, robust accuracy under the "
                  "robust-accuracy attacks below; for a detector, robust accuracy with rejection under the adaptive "
                  "attacks (Tramèr, ICML 2022): the clean image classified right and accepted, and no adaptive "
                  "attack at ε or below made it misclassified and accepted. Each detector's threshold rejects "
                  f"{fpr:g} % of clean held-out images; 'clean rejected' is the share of the attacked images' clean "
                  "versions it rejects, measured. All in %, brackets 95 % Wilson intervals over the n attacked "
                  "images (given the attacks and the threshold)."))]
    out += [*figure, *classifier_blocks(results, rb)]
    rows, notes = detection_rows(results, rb)
    table = [[f"{r['eps']:g}", model_label(r["m"]), detector_label(r["metric"]) if r["metric"] != NONE else NONE,
              _clean(results, r["model"]), share_cell(r["rejected"]) if r["rejected"] else DASH, str(r["n"] or ""),
              share_cell(r["at"]), share_cell(r["half"]) + r["half_note"], _verdictcell(results, r)] for r in rows]
    out += [("h", 3, "Detection or robust training, side by side"),
            ("p", ("Robust accuracy (with rejection where there is a detector) at ε and at ε/2. Tramèr's check "
                   "(ICML 2022): a detector robust at ε implies an inefficient classifier robust at ε/2, so a detector "
                   "claiming more at ε than the best classifier trained here reaches at ε/2 on the same backbone is "
                   f"'{WEAK}' (intervals apart) or '{UNRESOLVED}' (intervals overlap); '{CONSISTENT}' otherwise.")),
            ("table", ["ε", "model", "detector", "clean acc.", "clean rejected", "n", "robust acc. at ε",
                       "at ε/2", "Tramèr check"], table), *notes.blocks()]
    out += [("p", "In plain words:"), ("ul", plain_words(results, rows))]
    return out
