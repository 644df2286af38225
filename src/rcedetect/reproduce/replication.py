"""``results.json``'s ``replication``: every replicate's own numbers and their means with two-level intervals.

With ``[experiment] seeds = S`` > 1 (:mod:`.replicates`), ``replication`` holds

- ``seeds`` (S), ``model_seeds`` ({model: training seeds});
- ``per_seed``: for each replicate, its models (Table 1), its records at the Table 2 ε and those of the attacks
  without an ε (C&W, C&W-hc, C&W-wb)
  (detection without ROC points), its transfer records and its adaptive worst case: what the report's claims read,
  so that each claim can be judged on every seed;
- ``across``: the mean over seeds and the 95 % two-level bootstrap interval (seeds, then images:
  :mod:`rcedetect.stats.replication`) of the test error (``table1``), each detector's AUC at the Table 2 ε
  (``table2``), its oblivious SR@5 and robust accuracy with rejection there (``operating``), the adaptive
  worst-case SR@5 (``adaptive``) and the transfer rate (``transfer``), each with its per-seed values and n.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.records import AttackRecord
from ..evaluation import paper_ref
from ..stats import replication as rep
from .inputs import Inputs
from .results import attack_records

N_BOOT = 1000


def _compact_record(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("figure3", "log_kd_adv", "settings")}
    out["detection"] = {m: {k: v for k, v in d.items() if k not in ("roc", "pair_scores")}
                        for m, d in rec.get("detection", {}).items()}
    return out


def per_seed(inp: Inputs, results: dict, r: int, records: list[AttackRecord]) -> dict:
    """The numbers of one replicate that the claims and the across-seed table read (``records``: its records
    at the Table 2 ε and of the attacks without one, :func:`.results.attack_records`)."""
    return {"replicate": r, "train_seeds": {n: m.train.seed for n, m in inp.plan.models.items()},
            "models": results["models"], "attacks": [_compact_record(x.to_dict()) for x in records],
            "transfer": [_compact_record(t) for t in results.get("transfer", [])],
            "adaptive_worst_case": (results.get("adaptive") or {}).get("worst_case", [])}


def _share_row(keys: dict, ks: list[int], ns: list[int], seed: int) -> dict:
    return {**keys, **rep.two_level_share(ks, ns, n_boot=N_BOOT, seed=seed), "n": ns}


def _rate_row(keys: dict, items: list[dict | None], rate: str, n: str, seed: int) -> dict | None:
    """The two-level share of the rate ``rate`` of ``items`` (one per seed, each of its own ``n`` images), as
    statistic ``rate``; None when an item lacks it."""
    if not all(i and i.get(rate) is not None for i in items):
        return None
    ns = [i[n] for i in items]
    return _share_row({**keys, "statistic": rate}, [round(i[rate] * k) for i, k in zip(items, ns)], ns, seed)


def _table1(seeds: list[dict], model_seeds: dict[str, list[int]], seed: int) -> list[dict]:
    """Test error per model over ITS replicates (a model with one seed is one model, not S copies of it)."""
    rows = []
    for name, m in seeds[0]["models"].items():
        got = [s["models"][name] for s in seeds[: len(model_seeds[name])]]
        if any(g.get("test_accuracy") is None for g in got):
            continue
        ns = [int(g["n_test"]) for g in got]
        ks = [round((1 - g["test_accuracy"]) * n) for g, n in zip(got, ns)]
        rows.append(_share_row({"model": name, "objective": m["objective"], "role": m["role"],
                                "statistic": "test_error"}, ks, ns, seed))
    return rows


def _by_key(seeds: list[dict], field: str, key) -> dict[tuple, list]:
    """{key(item): [the item of each seed]} over the items of ``field`` found in every seed."""
    groups: dict[tuple, list] = {}
    for s in seeds:
        for item in s[field]:
            groups.setdefault(key(item), []).append(item)
    return {k: v for k, v in groups.items() if len(v) == len(seeds)}


def _table2(seeds: list[dict], raw: list[list[AttackRecord]], seed: int) -> tuple[list[dict], list[dict]]:
    """AUCs (from the pair scores) and the oblivious operating point at 5 % FPR, per model × attack × detector."""
    aucs, ops = [], []
    full = _by_key([{"attacks": x} for x in raw], "attacks", lambda r: (r.model, r.attack, r.eps))
    for (model, attack, eps), recs in sorted(full.items(), key=lambda kv: str(kv[0])):
        if attack == paper_ref.WHITEBOX_ATTACK and eps is None:
            continue
        head = {"model": model, "objective": recs[0].objective, "attack": attack, "eps": eps}
        for metric in recs[0].detection:
            ds = [r.detector(metric) for r in recs]
            if all("pair_scores" in d for d in ds):
                aucs.append({**head, "metric": metric, "statistic": "auc",
                             **rep.two_level_auc([d["pair_scores"]["clean"] for d in ds],
                                                 [d["pair_scores"]["adv"] for d in ds], n_boot=N_BOOT, seed=seed),
                             "n": [len(d["pair_scores"]["clean"]) for d in ds]})
            points = [(d.get("operating_points") or {}).get("fpr_5") for d in ds]
            for rate, n in (("attack_success_rate", "n_clean_correct"),
                            ("robust_accuracy_with_rejection", "n_images")):
                ops.append(_rate_row({**head, "metric": metric}, points, rate, n, seed))
    return aucs, [row for row in ops if row]


def _adaptive(seeds: list[dict], seed: int) -> list[dict]:
    groups = _by_key(seeds, "adaptive_worst_case", lambda w: (w["model"], w["metric"], w["norm"], w["eps"]))
    return [_share_row({"model": model, "objective": ws[0]["objective"], "metric": metric, "norm": norm,
                        "eps": eps, "statistic": "attack_success_rate"}, [w["n_fooled"] for w in ws],
                       [w["n_clean_correct"] for w in ws], seed)
            for (model, metric, norm, eps), ws in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def _transfer(seeds: list[dict], seed: int) -> list[dict]:
    groups = _by_key(seeds, "transfer", lambda t: (t["substitute"], t["target"]))
    rows = [_rate_row({"substitute": sub, "target": tgt}, ts, "transfer_rate", "n_substitute_success", seed)
            for (sub, tgt), ts in sorted(groups.items())]
    return [row for row in rows if row]


def summary(replicates: list[tuple[Inputs, dict]], model_seeds: dict[str, list[int]], seed: int = 0) -> dict[str, Any]:
    """The ``replication`` entry of ``results.json`` from each replicate's (inputs, assembled results)."""
    raw = [attack_records(inp, table2_only=True) for inp, _ in replicates]
    seeds = [per_seed(inp, res, r, recs) for r, ((inp, res), recs) in enumerate(zip(replicates, raw))]
    aucs, ops = _table2(seeds, raw, seed)
    across = {"table1": _table1(seeds, model_seeds, seed), "table2": aucs, "operating": ops, "adaptive": _adaptive(seeds, seed),
              "transfer": _transfer(seeds, seed)}
    return {"seeds": len(replicates), "model_seeds": model_seeds, "n_boot": N_BOOT, "per_seed": seeds,
            "across": _json_ready(across)}


def _json_ready(v):
    """Floats to 6 digits and NaN to None, recursively (results.json holds no NaN)."""
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_ready(x) for x in v]
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    return v
