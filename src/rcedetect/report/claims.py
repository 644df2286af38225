"""The paper's claims, checked one by one against a run: a plain sentence each, "holds" or "does not hold at this
scale", with the n behind it and 95 % intervals (report section "The paper's claims at this scale").

The claims (Pang et al. 2018, §4.3-4.5 and Table 4's text):

1. RCE + K-density detects at least as well as CE + K-density, on every attack of Table 2 (AUC, RCE ≥ CE);
2. RCE raises non-ME: the non-ME detector's AUC is higher with RCE on every attack, and clean images of the RCE
   model have the higher non-ME;
3. C&W-wb needs larger distortions on RCE than on CE (Table 3);
4. few C&W-wb examples transfer from the substitute to the target: < 15 % on CIFAR-10, < 50 % on MNIST (§4.5);
5. MNIST only: the target's K-density AUC on the transferred examples exceeds 95 for all four pairs.

A verdict says "does not hold" only where the run resolves it: the two sides' intervals apart (or a share's whole
interval past the paper's bound); a reversal inside the intervals is "not resolved", and a share whose interval
reaches the bound is said to hold only within the uncertainty of its n. AUC
intervals are the records' percentile-bootstrap intervals (held-out threshold images resampled too); shares have
Wilson intervals; the C&W-wb distortion has a percentile-bootstrap interval of its mean. Nothing here loads a model.
"""

from __future__ import annotations

from ..core.records import Scored, TransferRecord
from ..evaluation import paper_ref
from ..stats.metrics import wilson_interval
from .format import (
    auc_of,
    by_objective,
    ce_beside_rce,
    enough_pairs,
    interval,
    missing,
    record,
    span,
    table2_record,
    transfer_records,
)
from .verdicts import AT_SCALE, OVERLAP, by_direction, compare

#: the transfer-rate bounds the paper's text gives (Table 4's text, §4.5)
TRANSFER_BOUND = {"cifar10": 0.15, "mnist": 0.50}
#: the MNIST claim on the black-box AUCs (Table 4's text)
MNIST_TRANSFER_AUC = 95.0
#: "RCE ≥ CE", by (RCE below CE with the intervals apart under some attack, RCE below CE only within them)
AUC_VERDICT = {(True, True): AT_SCALE[False] + " (RCE < CE, the intervals apart, under {up})",
               (True, False): AT_SCALE[False] + " (RCE < CE, the intervals apart, under {up})",
               (False, True): AT_SCALE[None] + ": RCE is below CE under {down}, by less than the intervals resolve, "
                                               "and not below it elsewhere",
               (False, False): AT_SCALE[True]}
#: "C&W-wb needs larger distortions on RCE", by (RCE's mean above CE's, the intervals overlapping)
DISTORTION_VERDICT = {(True, False): AT_SCALE[True], (True, True): AT_SCALE[True] + "; the intervals overlap",
                      (False, True): AT_SCALE[None] + " (RCE not above CE, inside the intervals)",
                      (False, False): AT_SCALE[False]}


def _auc_text(rec: Scored, metric: str) -> tuple[float | None, tuple | None, str]:
    ours, iv = auc_of(rec, metric), interval(rec, metric, "auc")
    if missing(ours):
        return None, None, "—"
    return ours, iv, f"{ours:.1f}{span(iv, 1)} ({rec.n_pairs or 0} pairs)"


def _auc_claim(results: dict, metric: str, label: str) -> str | None:
    """RCE ≥ CE for ``metric``'s AUC on every Table 2 attack with enough pairs on both sides."""
    parts, fails, below = [], [], []
    for attack, *recs in ce_beside_rce(results):
        (ce, ce_iv, ce_t), (rce, rce_iv, rce_t) = (_auc_text(r, metric) for r in recs)
        if ce is None or rce is None:
            continue
        name = paper_ref.label(attack)
        parts.append(f"{name}: RCE {rce_t} vs CE {ce_t}")
        if rce < ce:
            (below if compare(ce_iv, rce_iv) == OVERLAP else fails).append(name)
    if not parts:
        return None
    return f"{label}: {by_direction(AUC_VERDICT, fails, below)}. " + "; ".join(parts) + "."


def _non_me_clean(results: dict) -> str:
    """The mean non-ME of the clean images behind Table 2's FGSM row, CE against RCE (the score is −non-ME)."""
    objs, out = by_objective(results), []
    for o in ("ce", "rce"):
        rec = table2_record(results, objs[o], "fgsm") if o in objs else None
        mean = ((rec.detector("non_me").get("score_summary") if rec else None) or {}).get("clean", {})
        if rec is None or mean.get("mean") is None:
            return ""
        out.append(f"{o.upper()} {-mean['mean']:.3f}")
    return f" Mean non-ME of the clean images (max log 9 ≈ 2.197 for 10 classes): {', '.join(out)}."


def _distortion_claim(results: dict) -> str | None:
    objs = by_objective(results)
    recs = {o: record(results, objs[o], paper_ref.WHITEBOX_ATTACK) for o in ("ce", "rce") if o in objs}
    wbs = {o: r.wb if r else None for o, r in recs.items()}
    if set(wbs) != {"ce", "rce"} or not all(wbs.values()):
        return None
    d = {o: wb.get("mean_distortion") for o, wb in wbs.items()}
    texts = {o: (f"{d[o]:.2f}{span(wbs[o].get('distortion_interval'), 2)} over "
                 f"{wbs[o].get('n_efficient', 0)} images" if not missing(d[o]) else "none (no image fooled both)")
             for o in ("ce", "rce")}
    body = f"RCE {texts['rce']} vs CE {texts['ce']} (‖x − x*‖₂/√d on [0, 255])"
    if missing(d["ce"]) or missing(d["rce"]):
        return f"C&W-wb needs larger distortions on RCE: not decided at this scale. {body}."
    overlap = compare(wbs["ce"].get("distortion_interval"), wbs["rce"].get("distortion_interval")) == OVERLAP
    return f"C&W-wb needs larger distortions on RCE: {DISTORTION_VERDICT[(d['rce'] > d['ce'], overlap)]}. {body}."


def _pair(t: TransferRecord) -> str:
    return f"{t.substitute_objective.upper()} {t.substitute_arch} → {t.target_objective.upper()} {t.target_arch}"


def _transfer_claims(results: dict, col: str) -> list[str]:
    transfers = transfer_records(results)
    if not transfers:
        return []
    bound, parts, over, at, straddle = TRANSFER_BOUND[col], [], [], [], []
    for t in transfers:
        n, rate = t.n_substitute_success or 0, t.transfer_rate
        if missing(rate) or not n:
            parts.append(f"{_pair(t)}: no substitute success to transfer")
            continue
        lo, hi = wilson_interval(round(rate * n), n)
        parts.append(f"{_pair(t)}: {100 * rate:.1f} %{span((lo, hi), 1, 100)} of {n}")
        (over if lo >= bound else at if rate >= bound else straddle if hi >= bound else []).append(_pair(t))
    decided = [p for p in parts if "no substitute" not in p]
    verdict = ("not decided (nothing transferred)" if not decided else
               f"{AT_SCALE[False]} ({', '.join(over)}: the whole interval at or above the bound)" if over
               else f"{AT_SCALE[None]} ({', '.join(at)} at or above the bound, its interval reaching below it)"
               if at else AT_SCALE[True])
    tie = (f"; the interval reaches the bound for {', '.join(straddle)}, so there it holds only within the "
           "uncertainty of this n" if straddle else "")
    out = [f"Fewer than {100 * bound:.0f} % of C&W-wb examples transfer (substitute success that also fools the "
           f"target): {verdict}{tie}. " + "; ".join(parts) + "."]
    if col == "mnist":
        aucs, low, unsure = [], [], []
        for t in transfers:
            ours, _, text = _auc_text(t, "kd")
            if ours is None:
                continue
            aucs.append(f"{_pair(t)}: {text}")
            if ours <= MNIST_TRANSFER_AUC:
                (low if enough_pairs(t) else unsure).append(_pair(t))
        if aucs:
            v = (f"{AT_SCALE[False]} ({', '.join(low)})" if low else
                 f"{AT_SCALE[None]} ({', '.join(unsure)} at or below {MNIST_TRANSFER_AUC:.0f} on fewer than 30 "
                 "pairs)" if unsure else AT_SCALE[True])
            out.append(f"The target's K-density AUC on transferred examples exceeds {MNIST_TRANSFER_AUC:.0f} for all "
                       f"four pairs: {v}. " + "; ".join(aucs) + ".")
    return out


def claim_items(results: dict, col: str | None) -> list[tuple[str, str]]:
    """[(claim, sentence)]: each claim the report judges on ``results`` (none without a paper column); the
    sentence opens with the claim, then its verdict (:func:`.verdicts.verdict_of`)."""
    if col not in TRANSFER_BOUND:
        return []
    items = [_auc_claim(results, "kd", "RCE ≥ CE for K-density on every attack (Table 2)"),
             _auc_claim(results, "non_me", "RCE raises non-ME (its AUC is higher with RCE on every attack, Table 2)"),
             _distortion_claim(results), *_transfer_claims(results, col)]
    if items[1] is not None:
        items[1] += _non_me_clean(results)
    return [(i.split(": ", 1)[0], i) for i in items if i]


def claims_blocks(results: dict, col: str | None, seed_by_seed: dict[str, str] | None = None) -> list[tuple]:
    """The section "The paper's claims at this scale" (empty without a paper column); ``seed_by_seed``
    ({claim: how many seeds agree}, :mod:`.replication`) is added to each claim it names."""
    pairs = claim_items(results, col)
    if not pairs:
        return []
    seed_by_seed = seed_by_seed or {}
    items = [f"{s} Seed by seed: {seed_by_seed[label]}." if label in seed_by_seed else s for label, s in pairs]
    return [("h", 2, "The paper's claims at this scale"),
            ("p", ("Each claim is read off our point estimates with 95 % intervals (AUC: bootstrap; shares: Wilson; "
                   "distortion: bootstrap of the mean) and the n behind them. Where the intervals overlap the run "
                   "cannot tell the two sides apart, whatever the verdict.")),
            ("ul", items)]
