"""Collect the artifacts of a finished reproduce run into ``results.json`` (the schema :mod:`rcedetect.report` reads).

Top-level keys: ``format``, ``format_version``, ``preset``, ``dataset``, ``seed``, ``config_hash``, ``config``,
``device``, ``versions``, ``table2_eps``, ``cuts``, ``timings``, ``models`` (name → role, arch, objective,
steps, n_test, test_accuracy, test_error_percent, train_seconds, config_hash), ``detectors`` (name → σ²,
kernel sizes, η), ``attacks``, ``transfer``, ``adaptive`` and ``robust`` (the records of
:mod:`rcedetect.core.records`), ``tsne``, ``figure3``, ``noise`` and ``log_kd_normal``. Nothing here loads a model
except to read the clean K-density of the attacked images.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..core import schemas
from ..core.io import config_hash, read_json, versions
from ..core.records import AttackRecord, TransferRecord
from ..detectors import KDensity, score_features
from ..evaluation import paper_ref
from ..models import checkpoint
from . import adaptive, robust
from .inputs import Inputs


def _models_and_detectors(inp: Inputs) -> tuple[dict, dict]:
    models, dets = {}, {}
    for name, m in inp.plan.models.items():
        met = checkpoint.read_meta(inp.layout.model_dir(name)).get("metrics", {})
        tc = m.train
        acc = met.get("test_accuracy")
        models[name] = {"role": m.role, "arch": tc.arch, "objective": tc.objective, "steps": tc.steps,
                        "dataset": tc.dataset, "n_test": len(inp.dataset().x_test), "test_accuracy": acc,
                        "test_error_percent": None if acc is None else round(100 * (1 - acc), 4),
                        "train_seconds": met.get("train_seconds"), "config_hash": inp.layout.model_hash(name),
                        **robust.training_fields(tc)}
        if name not in inp.plan.detected and m.role != "target":
            continue  # no detector: robust accuracy alone (:mod:`.robust`)
        info = _detector_record(inp.layout.detector_dir(name, "kd"))
        s, state = info["settings"], info["state"]
        dets[name] = {"sigma2": state["sigma2"], "per_class": s["per_class"], "attack_per_class": s["attack_per_class"],
                      "eta": state["eta"], "seed": s["seed"]}
        baselines = {}
        for metric in inp.baselines(name):
            b = _detector_record(inp.layout.detector_dir(name, metric))
            baselines[metric] = {"settings": b["settings"], "fit_split": b["state"].get("fit_split"),
                                 "features": b["state"].get("features"), "weights": b["state"].get("weights"),
                                 **{k: b["state"][k] for k in ("noise", "noise_selection", "dropout_rate")
                                    if k in b["state"]}, **b.get("extra", {})}
        if baselines:
            dets[name]["baselines"] = baselines
    return models, dets


def _detector_record(directory: Path) -> dict:
    return schemas.check(read_json(directory / "detector.json", "detector record"), schemas.DETECTOR,
                         directory / "detector.json", "detector record")


def attack_records(inp: Inputs, table2_only: bool = False) -> list[AttackRecord]:
    """The scored record of every attack run on every main model; with ``table2_only``, those at the Table 2 ε
    and of the attacks without one (C&W, C&W-hc, C&W-wb), as the seeds' intervals read them."""
    t2 = inp.plan.experiment.table2_eps
    runs = [r for name in inp.plan.mains for a in inp.plan.attacks for r in inp.layout.attack_runs(name, a)]
    return [AttackRecord.from_dict(read_json(r.record, "attack record"), str(r.record)) for r in runs
            if not table2_only or r.eps is None or abs(r.eps - t2) < 1e-9]


def _attack_records(inp: Inputs) -> tuple[list, dict, dict]:
    records, figure3, noise = [], {}, {}
    for rec in attack_records(inp):
        for d in rec.detection.values():
            d.pop("pair_scores", None)  # what the seeds' intervals resample (.replication), not a result
        if rec.figure3 is not None:
            figure3[rec.model], rec.figure3 = rec.figure3, None
        if rec.attack == paper_ref.NOISE_ATTACK:
            noise[rec.model] = {"eps": rec.eps, "n": rec.n_images,
                                "clean_error_percent": round(100 * (1 - rec.clean_accuracy), 4),
                                "noisy_error_percent": round(100 * (1 - rec.accuracy), 4),
                                "log_kd_noisy": rec.log_kd_adv or []}
            rec.log_kd_adv = None
        records.append(rec.to_dict())
    return records, figure3, noise


def _log_kd_normal(inp: Inputs) -> dict:
    """log K-density of the clean attacked images the classifier gets right (Figures 5/6)."""
    out = {}
    for name in inp.plan.mains:
        if inp.layout.feature_path(name, "pool").is_file():
            bank = inp.bank(name, "pool")
            s = KDensity.log_kd(score_features(inp.detectors(name)["kd"], inp.classifier(name), bank.features))
            ok = bank.predictions == bank.labels
            out[name] = [round(float(v), 4) for v in s[ok]]
    return out


def _without_device(cfg: dict) -> dict:
    c = copy.deepcopy(cfg)
    c["experiment"].pop("device", None)
    for m in c["models"].values():
        m["train"].pop("device", None)
    return c


def assemble(inp: Inputs, total_seconds: float, stage_seconds: dict[str, float], threads: int | None,
             measured_now: int | None = None) -> dict[str, Any]:
    """``total_seconds``: this invocation's wall time; ``stage_seconds``: every stage's measured seconds, from this
    invocation or an earlier one that ran it (``measured_now`` of them ran now); their sum is what the run cost."""
    plan, layout = inp.plan, inp.layout
    cfg, exp = plan.raw, plan.experiment
    models, dets = _models_and_detectors(inp)
    records, figure3, noise = _attack_records(inp)
    wb = paper_ref.WHITEBOX_ATTACK
    transfer = [TransferRecord.from_dict(read_json(path, "transfer record"), str(path)).to_dict()
                for path in (layout.transfer_path(wb, sub, tgt) for sub in plan.mains for tgt in plan.targets)
                ] if wb in plan.attacks else []
    tsne = {n: read_json(layout.tsne_path(n), "t-SNE") for n in plan.mains if exp.tsne_images > 0}
    first = next(iter(cfg["models"].values()))["train"]
    return {
        "format": "rcedetect-results", "format_version": 1,
        "preset": cfg["experiment"]["name"], "dataset": first["dataset"], "seed": exp.seed,
        "paper_dataset": exp.paper_dataset or paper_ref.column(first["dataset"]),
        "config_hash": config_hash(_without_device(cfg)), "config": cfg, "device": str(inp.device),
        "cpu_threads": threads, "versions": versions(), "table2_eps": cfg["experiment"]["table2_eps"],
        "cuts": list(cfg.get("cuts", {}).get("notes", [])),
        "timings": {"total_seconds": round(total_seconds, 2), "stage_seconds": dict(stage_seconds),
                    "stage_seconds_total": round(sum(stage_seconds.values()), 2),
                    "stages_measured_now": len(stage_seconds) if measured_now is None else measured_now},
        "models": models, "detectors": dets, "attacks": records, "transfer": transfer, "tsne": tsne,
        "figure3": figure3, "noise": noise, "log_kd_normal": _log_kd_normal(inp), **_adaptive(inp),
        **robust.results(inp),
    }


def _adaptive(inp: Inputs) -> dict:
    """``adaptive``: fpr, metrics, one record per model × metric × attack × ε, the worst case over attacks per
    image, and the sanity checks per model (absent when the preset has no [adaptive] section)."""
    ad = inp.plan.adaptive
    if ad is None:
        return {}
    recs = adaptive.records(inp)
    sanity = {m: read_json(inp.layout.sanity_path(m), "sanity checks")["checks"] for m in inp.plan.detected
              if ad.sanity}
    return {"adaptive": {"fpr": ad.fpr, "metrics": list(ad.metrics), "records": [r.to_dict() for r in recs],
                         "worst_case": adaptive.worst_case(recs), "sanity": sanity}}

