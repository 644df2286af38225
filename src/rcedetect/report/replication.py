"""The section "Across seeds": what holds over several trained models per objective (protocol §21).

Reads ``results.json``'s ``replication`` (:mod:`rcedetect.reproduce.replication`): Table 1, the detectors' AUCs
at the Table 2 ε, the adaptive worst-case SR@5 and the transfer rates as the mean over seeds with the two-level
interval (seeds, then images) and each seed's own value; then each of the paper's claims judged on every seed
(:mod:`.claims`), with how many seeds agree. A claim holds only where it holds on every seed.
"""

from __future__ import annotations

from ..evaluation import paper_ref
from .claims import claim_items
from .format import DASH, detector_label, paper_column, share
from .verdicts import verdict_of

SHOWN_METRICS = ("kd", "non_me", "confidence")
SIDES = ["CE mean [95 %]", "CE per seed", "CE n", "RCE mean [95 %]", "RCE per seed", "RCE n"]


def _cells(row: dict) -> list[str]:
    """An across-seed row as its mean with the 95 % interval, each seed's value, and the n per seed (all in %)."""
    ns = row.get("n") or []
    return [share(row.get("mean"), (row.get("low"), row.get("high"))),
            ", ".join(share(v) for v in row.get("per_seed", [])),
            str(ns[0]) if len(set(ns)) == 1 else ", ".join(map(str, ns))]


def _seed_results(results: dict, s: dict) -> dict:
    """One replicate's numbers in the shape the claims read."""
    return {**{k: results.get(k) for k in ("table2_eps", "paper_dataset", "dataset")},
            "models": s["models"], "attacks": s["attacks"], "transfer": s["transfer"]}


def claims_across_seeds(results: dict, col: str | None) -> list[tuple[str, dict]]:
    """[(claim label, agreement)] for every claim the report judges, over the replicates of ``results``."""
    from ..stats.replication import agreement

    rep = results.get("replication") or {}
    per_claim: dict[str, list] = {}
    for s in rep.get("per_seed", []):
        for label, sentence in claim_items(_seed_results(results, s), col):
            per_claim.setdefault(label, []).append(verdict_of(sentence))
    n = len(rep.get("per_seed", []))
    return [(label, agreement(v + [None] * (n - len(v)))) for label, v in per_claim.items()]


def agreement_text(a: dict) -> str:
    parts = [f"{a[k]} {w}" for k, w in (("holds", "hold"), ("fails", "fail"), ("unresolved", "not resolved"))
             if a[k]]
    return f"{a['verdict']} across {a['n_seeds']} seeds ({', '.join(parts)})"


def _side_by_side(rows: list[dict], key) -> list[list[str]]:
    """One table row per ``key(row)``: its CE cell and per-seed values, then its RCE ones."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault(key(r), {})[r["objective"]] = r
    return [[*k, *(c for o in ("ce", "rce") for c in (_cells(by[o]) if o in by else [DASH] * 3))]
            for k, by in groups.items()]


def replication_blocks(results: dict) -> list[tuple]:
    rep = results.get("replication")
    if not rep:
        return []
    across = rep.get("across", {})
    seeds = "; ".join(f"{m}: {', '.join(map(str, v))}" for m, v in rep.get("model_seeds", {}).items())
    b: list[tuple] = [("h", 2, f"Across seeds ({rep['seeds']} trained models per objective)"),
                      ("p", (f"Each main model trained {rep['seeds']} times with different seeds (training seeds "
                             f"{seeds}), every other setting and the attacked images the same. A cell is the mean "
                             "over seeds with its 95 % two-level bootstrap interval "
                             f"({rep.get('n_boot')} resamples: seeds, then images), then each seed's own value; n "
                             "is the images (or pairs) per seed."))]
    tables = [("Test error (%)", ["model", "objective", "mean [95 %]", "per seed", "n"],
               [[r["model"], r["objective"].upper(), *_cells(r)] for r in across.get("table1", [])]),
              (f"Detection AUC (%) at ε {results.get('table2_eps')}, oblivious attacks (n = pairs)",
               ["attack", "detector", *SIDES],
               _side_by_side([r for r in across.get("table2", []) if r["metric"] in SHOWN_METRICS],
                             lambda r: (paper_ref.label(r["attack"]), detector_label(r["metric"])))),
              ("Adaptive worst-case SR@5 (%), every attack that knows the detector (n = clean-correct images)",
               ["detector", "norm", "ε", *SIDES], _side_by_side(
                   across.get("adaptive", []), lambda r: (detector_label(r["metric"]), r["norm"], f"{r['eps']:g}"))),
              ("Transfer rate of C&W-wb (%)", ["substitute", "target", "mean [95 %]", "per seed", "substitute successes"],
               [[r["substitute"], r["target"], *_cells(r)] for r in across.get("transfer", [])])]
    b += [blk for title, head, rows in tables if rows for blk in (("h", 3, title), ("table", head, rows))]
    claims = claims_across_seeds(results, paper_column(results))
    if claims:
        b += [("h", 3, "The paper's claims, seed by seed"),
              ("ul", [f"{label}: {agreement_text(a)}." for label, a in claims])]
    return b
