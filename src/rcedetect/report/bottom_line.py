"""The report's bottom line: a box right under the title that answers the run's questions with n and 95 %
intervals (numbers from :mod:`.bottom_line_numbers`, across-seed means where there are several seeds): "does RCE
help?" and "does the detector survive an attacker who knows it?" in a sentence each; CE beside RCE, the clean test
error, the lowest AUC of each paper detector over the oblivious attacks and the ε at which each detector's
worst-case SR@5 under the adaptive attacks first reaches 50 % and 90 %; which of the paper's claims (:mod:`.claims`)
and of our own adaptive claim (:func:`adaptive_claim`) hold; the sanity checks as a count, failures spelled out.
"""

from __future__ import annotations

from ..evaluation import paper_ref
from ..stats.operating_point import MIN_PAIRS
from .bottom_line_numbers import (
    Share,
    adaptive_metrics,
    aucs,
    clean_error,
    eps_reaching,
    model_by_objective,
    n_seeds,
    worst_case_curve,
)
from .claims import claim_items
from .format import DASH, detector_label, images, paper_column, sanity_checks, share
from .replication import claims_across_seeds
from .verdicts import AT_SCALE, SAID, by_direction, split, verdict_of

TITLE = "The answer at a glance"
BOX_ID = "bottom-line"
OBLIVIOUS_METRICS = ("kd", "non_me", "confidence")
LEVELS = (0.5, 0.9)
ADAPTIVE_CLAIM = "RCE + K-density is harder to fool than CE + K-density under adaptive attacks"
OBJECTIVES = ("ce", "rce")
#: RCE against CE, by (RCE's interval wholly above CE's somewhere, wholly below it somewhere): the adaptive
#: claim's verdict (SR: lower is better), the words on the oblivious AUCs (higher is better) and their sign
ADAPTIVE_VERDICT = {
    (False, True): AT_SCALE[True] + " (RCE's interval lies below CE's at ε {down}, and never above it)",
    (True, False): AT_SCALE[False] + " (RCE's interval lies above CE's at ε {up})",
    (True, True): AT_SCALE[None] + " (mixed: RCE below CE at ε {down}, above it at ε {up})",
    (False, False): AT_SCALE[None] + " (the intervals overlap at every ε)"}
OBLIVIOUS_WORDS = {(True, False): ", RCE above CE with the intervals apart under {up}",
                   (False, True): ", RCE below CE with the intervals apart under {down}",
                   (True, True): ", RCE above CE under {up} but below under {down}",
                   (False, False): ", the intervals overlapping under every attack"}
OBLIVIOUS_SIGN = {(True, False): 1, (False, True): -1}
#: "Does RCE help?" by (some answer says yes, some says no)
ANSWERS = {(True, False): "Yes, at this scale", (False, True): "No, at this scale", (True, True): "Mixed",
           (False, False): "Not resolved at this scale"}
#: the claims grouped by verdict, in this order
GROUPS = {True: "Hold", False: "Do not hold", None: "Not resolved"}


# ----------------------------------------------------------------------------------------------- formatting
def pct(s: Share | None, digits: int = 1) -> str:
    """A share in % with its interval: "1.5 [0.9, 2.4]"."""
    return DASH if s is None else share(s.value, s.interval, digits)


def _sr(results: dict) -> str:
    return f"SR@{100 * (results.get('adaptive') or {}).get('fpr', 0.05):g}"


def _seed_words(results: dict) -> str:
    s = n_seeds(results)
    return f" over {s} seeds" if s > 1 else ""


# ----------------------------------------------------------------------------------------------- the claim
def adaptive_claim(results: dict) -> str | None:
    """:data:`ADAPTIVE_CLAIM`, judged on the worst-case SR@5 of the L∞ adaptive attacks at every ε both models were
    attacked with (across-seed means where there are several seeds): it holds where RCE's 95 % interval lies wholly
    below CE's at some ε and wholly above it at none (:data:`ADAPTIVE_VERDICT`); None without a CE and an RCE model
    attacked at a common ε. The sentence opens with the claim, then its verdict (:func:`verdict_of`)."""
    objs = model_by_objective(results)
    if not set(OBJECTIVES) <= set(objs):
        return None
    ce, rce = (dict(worst_case_curve(results, objs[o], "kd")) for o in OBJECTIVES)
    common = sorted(e for e in rce if any(abs(e - f) < 1e-9 for f in ce))
    if not common:
        return None
    ce = {e: next(v for f, v in ce.items() if abs(e - f) < 1e-9) for e in common}
    worse, better = split(common, lambda e: rce[e].interval, lambda e: ce[e].interval)
    verdict = by_direction(ADAPTIVE_VERDICT, [f"{e:g}" for e in worse], [f"{e:g}" for e in better])
    sr = _sr(results)
    parts = "; ".join(f"ε {e:g}: RCE {pct(rce[e])} vs CE {pct(ce[e])} (n = {rce[e].n} / {ce[e].n})"
                      for e in common)
    return (f"{ADAPTIVE_CLAIM}: {verdict}. Worst-case {sr} (%){_seed_words(results)}, with 95 % intervals and the "
            f"clean-correct attacked images: {parts}.")


# ----------------------------------------------------------------------------------------------- the answers
def _pairs(s: Share) -> int:
    return min(int(v) for v in str(s.n).split("/"))


def _lowest(shares: dict[str, Share]) -> tuple[str, Share] | None:
    """The attack with the lowest AUC among those with at least MIN_PAIRS pairs (all of them where none has)."""
    enough = {a: s for a, s in shares.items() if _pairs(s) >= MIN_PAIRS} or shares
    return min(enough.items(), key=lambda kv: kv[1].value) if enough else None


def _pairs_text(s: Share) -> str:
    few = f" (< {MIN_PAIRS})" if _pairs(s) < MIN_PAIRS else ""
    return f"{s.n} pair{'' if str(s.n) == '1' else 's'}{few}"


def _oblivious_sign(results: dict, objs: dict) -> tuple[int | None, str]:
    """(+1 RCE's K-density AUC is above CE's, intervals apart, under some attack and below under none; −1 the
    reverse; 0 overlapping; None not measured, a sentence)."""
    ce, rce = (aucs(results, objs[o], "kd") for o in OBJECTIVES)
    both = [a for a in paper_ref.TABLE2_ATTACKS if a in ce and a in rce]
    if not both:
        return None, "the oblivious attacks were not scored on both models"
    up, down = split(both, lambda a: rce[a].interval, lambda a: ce[a].interval)
    (la, lr), (lc_a, lc) = _lowest({a: rce[a] for a in both}), _lowest({a: ce[a] for a in both})
    text = (f"K-density's lowest AUC over the {len(both)} Table 2 attacks is {pct(lr)} for RCE ({paper_ref.label(la)}) "
            f"vs {pct(lc)} for CE ({paper_ref.label(lc_a)})")
    return (OBLIVIOUS_SIGN.get((bool(up), bool(down)), 0),
            text + by_direction(OBLIVIOUS_WORDS, [paper_ref.label(a) for a in up], [paper_ref.label(a) for a in down]))


def does_rce_help(results: dict, claim: str | None) -> str:
    """One sentence: does RCE help, at this scale, against oblivious and adaptive attacks (K-density)."""
    objs = model_by_objective(results)
    if not set(OBJECTIVES) <= set(objs):
        return "Does RCE help? This run has no CE and RCE model side by side, so it cannot say."
    obl, obl_text = _oblivious_sign(results, objs)
    adp = {True: 1, False: -1, None: 0}[verdict_of(claim)] if claim else None
    signs = [s for s in (obl, adp) if s is not None]
    answer = ANSWERS[(1 in signs, -1 in signs)] if signs else "Not measured by this run"
    errs = [clean_error(results, objs[o]) for o in OBJECTIVES]
    adp_text = ""
    if claim:
        reach = [eps_reaching(worst_case_curve(results, objs[o], "kd"), 0.5) for o in OBJECTIVES]
        said = SAID[verdict_of(claim)]
        adp_text = (f"; against attacks that know the detector, RCE + K-density's worst-case {_sr(results)} "
                    f"{reach[1].phrase(0.5)} (CE + K-density: {reach[0].phrase(0.5)}), so the claim that RCE is "
                    f"harder to fool {said} at this scale")
    return (f"Does RCE help? {answer}{_seed_words(results)}: against attacks that ignore the detector, {obl_text}"
            f"{adp_text}; clean test error RCE {pct(errs[1], 2)} % vs CE {pct(errs[0], 2)} %.")


def survives(results: dict) -> str:
    """One sentence: does RCE + K-density (else the first detector attacked) survive the adaptive attacks."""
    q = "Does the detector survive an attacker who knows it?"
    metrics = adaptive_metrics(results)
    objs = model_by_objective(results)
    model = objs.get("rce") or next(iter(objs.values()), None)
    if not metrics or model is None:
        return f"{q} Not measured: this run has no adaptive evaluation."
    metric = "kd" if "kd" in metrics else metrics[0]
    curve = worst_case_curve(results, model, metric)
    if not curve:
        return f"{q} Not measured: no clean-correct image was attacked."
    who = f"{results['models'][model]['objective'].upper()} + {detector_label(metric)}"
    r50, (e_max, top), sr = eps_reaching(curve, 0.5), curve[-1], _sr(results)
    reached = [eps_reaching(worst_case_curve(results, o, m), 0.5) for m in metrics for o in objs.values()]
    fell, total = sum(1 for r in reached if r and r.eps is not None), sum(1 for r in reached if r)
    others = f" {fell} of the {total} model + detector pairs attacked reach 50 % within the grid."
    checks = sanity_checks(results)
    failed = [c for c in checks if not c[2]]
    if r50.eps is not None:
        return (f"{q} No{_seed_words(results)}: attacks that know {who} make it accept a misclassified image for "
                f"half of the attacked images at ε {r50.text()}, and at ε {e_max:g} its worst-case {sr} is "
                f"{pct(top)} % of {top.n}.{others}")
    mine = [f for f in failed if f[0] == model and f[1] in (metric, None)]
    doubt = (f" {len(mine)} sanity check(s) of the attacks on {who} failed, so this may overstate its robustness."
             if mine else " Low success at a large ε more often means a weak attack than a robust detector "
             "(Tramèr 2022)" + (f"; {len(failed)} of the {len(checks)} sanity checks failed, none on {who}." if failed
                                else f"; all {len(checks)} sanity checks passed." if checks else "."))
    return (f"{q} Within this grid, yes{_seed_words(results)}: {who}'s worst-case {sr} stays at {pct(top)} % of "
            f"{top.n} up to ε {e_max:g}.{others}{doubt}")


# ----------------------------------------------------------------------------------------------- tables
def _number_table(results: dict, objs: dict) -> list[tuple]:
    shown = [o for o in OBJECTIVES if o in objs]
    if not shown:
        return []
    rows = [["clean test error (%)", *(f"{pct(clean_error(results, objs[o]), 2)}, n = "
                                       f"{getattr(clean_error(results, objs[o]), 'n', DASH)}" for o in shown)]]
    for metric in OBLIVIOUS_METRICS:
        cells = []
        for o in shown:
            shares = aucs(results, objs[o], metric)
            low = _lowest(shares)
            if low is None:
                cells.append(DASH)
                continue
            mean = sum(s.value for s in shares.values()) / len(shares)
            cells.append(f"{pct(low[1])} ({paper_ref.label(low[0])}, {_pairs_text(low[1])}); mean of "
                         f"{len(shares)}: {100 * mean:.1f}")
        if any(c != DASH for c in cells):
            rows.append([f"{detector_label(metric)} AUC, lowest over the oblivious attacks", *cells])
    return [("table", ["", *(o.upper() for o in shown)], rows)]


def _adaptive_table(results: dict, objs: dict) -> list[tuple]:
    shown = [o for o in OBJECTIVES if o in objs]
    sr, rows = _sr(results), []
    for metric in adaptive_metrics(results):
        curves = {o: worst_case_curve(results, objs[o], metric) for o in shown}
        if not any(curves.values()):
            continue
        rows.append([detector_label(metric),
                     *(eps_reaching(curves[o], lv).text() if curves[o] else DASH for lv in LEVELS for o in shown),
                     *(f"{pct(curves[o][-1][1], 0)} at ε {curves[o][-1][0]:g}, n = {curves[o][-1][1].n}"
                       if curves[o] else DASH for o in shown)])
    if not rows:
        return []
    head = ["detector", *(f"{o.upper()}: {100 * lv:.0f} % at ε" for lv in LEVELS for o in shown),
            *(f"{o.upper()}: {sr} (%) at the largest ε" for o in shown)]
    return [("p", (f"Attacks that know the detector (L∞ ε on pixels in [0, 1]): the ε at which the worst-case "
                   f"{sr} over every adaptive attack first reaches 50 % and 90 %, linear between the grid points "
                   "(\"≤\": already at the smallest ε tried).")),
            ("table", head, rows)]


# ----------------------------------------------------------------------------------------------- claims
def _claim_verdicts(results: dict, col: str | None) -> list[tuple[str, bool | None]]:
    if n_seeds(results) > 1:  # "holds", "does not hold", "mixed" or "not resolved"
        return [(label, verdict_of(a["verdict"])) for label, a in claims_across_seeds(results, col)]
    return [(label, verdict_of(sentence)) for label, sentence in claim_items(results, col)]


def _claims_blocks(results: dict, col: str | None, claim: str | None) -> list[tuple]:
    verdicts = _claim_verdicts(results, col) + ([(ADAPTIVE_CLAIM, verdict_of(claim))] if claim else [])
    if not verdicts:
        return []
    groups = [(w, [label for label, v in verdicts if v is value]) for value, w in GROUPS.items()]
    items = [f"{w} ({len(labels)}): {'; '.join(labels)}" for w, labels in groups if labels]
    lead = (f"The paper's claims{_seed_words(results)} (a claim holds over seeds only where it holds on every seed; "
            "each with its numbers in \"The paper's claims at this scale\" below)" if col else
            "The paper gives no numbers for this dataset, so its claims are not judged; our claim on the adaptive "
            "attacks")
    return [("p", lead + ":"), ("ul", items)] + ([("p", claim)] if claim else [])


# ----------------------------------------------------------------------------------------------- the box
def sanity_sentence(results: dict) -> str | None:
    """"38 of 38 sanity checks of the adaptive attacks passed." (failed ones named), None without checks."""
    checks = sanity_checks(results)
    if not checks:
        return None
    failed = [text for _, _, passed, text in checks if not passed]
    head = f"{len(checks) - len(failed)} of {len(checks)} sanity checks of the adaptive attacks passed"
    return head + (f"; FAILED: {'; '.join(failed)}." if failed else ".")


def bottom_line_blocks(results: dict, figs: dict) -> list[tuple]:
    """The box (``("div", BOX_ID)`` … ``("end_div",)``, :mod:`.render`) that opens the report."""
    col = paper_column(results)
    objs = model_by_objective(results)
    s = n_seeds(results)
    scope = (f"Over {s} seeds ({s} trained models per objective): each number is the mean over seeds with its 95 % "
             "two-level bootstrap interval (seeds, then images) in brackets; n = images or pairs per seed." if s > 1
             else "One trained model per objective; brackets: 95 % intervals (clean error and worst-case success: "
                  "Wilson; AUC: bootstrap over the pairs); n = the images or pairs behind each number.")
    scope += (f" {_sr(results)} (attack success at {_sr(results)[3:]} % FPR): the share of attacked images, correct "
              "when clean, that end misclassified AND accepted by the detector at the threshold that rejects "
              f"{_sr(results)[3:]} % of clean held-out images.") if results.get("adaptive") else ""
    claim = adaptive_claim(results)
    out: list[tuple] = [("h", 2, TITLE), ("p", scope), ("p", does_rce_help(results, claim)), ("p", survives(results))]
    out += _number_table(results, objs) + _adaptive_table(results, objs) + images(figs, "bottom_line")
    sanity = sanity_sentence(results)
    out += _claims_blocks(results, col, claim) + ([("p", sanity)] if sanity else [])
    return [("div", BOX_ID), *out, ("end_div",)]
