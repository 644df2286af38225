"""Collect the artifacts of a finished pipeline into ``results.json`` (the schema :mod:`rcedetect.report` reads).

Top-level keys: ``format``, ``format_version``, ``preset``, ``dataset``, ``seed``, ``config_hash``, ``config``,
``device``, ``versions``, ``table2_eps``, ``cuts``, ``timings``, ``models`` (name → role, arch, objective,
steps, n_test, test_accuracy, test_error_percent, train_seconds, config_hash), ``detectors`` (name → σ²,
kernel sizes, η), ``attacks`` (one record per model × attack × ε: n_images, n_pairs, accuracy, success_rate,
mean_l2, detection.{confidence,non_me,kd}.{auc_strict,auc_half,tpr_at_5fpr,n_pairs}, seconds_per_example,
and ``cw`` / ``wb`` / ``log_kd_adv`` where they apply), ``transfer``, ``tsne``, ``figure3``, ``noise`` and
``log_kd_normal``. Nothing here loads a model except to read the clean K-density of the attacked images.
"""

from __future__ import annotations

from typing import Any

from . import checkpoint, detectors, stages
from .io import config_hash, read_json, versions


def assemble(p, total_seconds: float) -> dict[str, Any]:
    cfg, exp = p.cfg, p.exp
    models, dets = {}, {}
    for name, m in cfg["models"].items():
        meta = checkpoint.read_meta(p.model_dir(name))
        met = meta.get("metrics", {})
        tc = p.train_cfg(name)
        models[name] = {"role": m["role"], "arch": tc.arch, "objective": tc.objective, "steps": tc.steps,
                        "dataset": tc.dataset, "n_test": len(p.dataset().x_test),
                        "test_accuracy": met.get("test_accuracy"),
                        "test_error_percent": None if met.get("test_accuracy") is None
                        else round(100 * (1 - met["test_accuracy"]), 4),
                        "train_seconds": met.get("train_seconds"), "config_hash": p.model_hash(name)}
        info = read_json(p.detector_dir(name) / "detector.json", "detector record")
        dets[name] = {k: info[k] for k in ("sigma2", "per_class", "attack_per_class", "eta", "seed")}

    mains = [n for n, m in cfg["models"].items() if m["role"] == "main"]
    records, figure3, noise = [], {}, {}
    for name in mains:
        for attack in cfg.get("attacks", {}):
            for r in p.attack_runs(name, attack):
                rec = read_json(r["record"], "attack record")
                if "figure3" in rec:
                    figure3[name] = rec.pop("figure3")
                if attack == "noise":
                    noise[name] = {"eps": rec["eps"], "n": rec["n_images"],
                                   "clean_error_percent": round(100 * (1 - rec["clean_accuracy"]), 4),
                                   "noisy_error_percent": round(100 * (1 - rec["accuracy"]), 4),
                                   "log_kd_noisy": rec.pop("log_kd_adv", [])}
                records.append(rec)

    log_kd_normal = {}
    for name in mains:  # K-density of the clean attacked images the classifier gets right (Fig. 5/6)
        bank = p.bank(name, "pool") if _has_pool(p, name) else None
        if bank is not None:
            kd = stages.load_detector(p.detector_dir(name), p.device)[0]
            s = -detectors.scores_from_features("kd", p.classifier(name), bank.features, kd=kd)
            ok = bank.predictions == bank.labels
            log_kd_normal[name] = [round(float(v), 4) for v in s[ok]]

    transfer = []
    if "cw_wb" in cfg.get("attacks", {}):
        for sub in mains:
            for tgt in (n for n, m in cfg["models"].items() if m["role"] == "target"):
                transfer.append(read_json(p.transfer_path(sub, tgt), "transfer record"))
    tsne = {n: read_json(p.tsne_path(n), "t-SNE") for n in mains if exp["tsne_images"] > 0}

    first = next(iter(cfg["models"].values()))["train"]
    return {
        "format": "rcedetect-results", "format_version": 1,
        "preset": exp["name"], "dataset": first["dataset"], "seed": p.seed,
        "config_hash": config_hash(_without_device(cfg)), "config": cfg, "device": str(p.device), "cpu_threads": p.threads,
        "versions": versions(), "table2_eps": exp["table2_eps"],
        "cuts": list(cfg.get("cuts", {}).get("notes", [])),
        "timings": {"total_seconds": round(total_seconds, 2), "stage_seconds": dict(p.stage_seconds)},
        "models": models, "detectors": dets, "attacks": records, "transfer": transfer, "tsne": tsne,
        "figure3": figure3, "noise": noise, "log_kd_normal": log_kd_normal,
    }


def _has_pool(p, name: str) -> bool:
    return p.feature_path(name, "pool").is_file()


def _without_device(cfg: dict) -> dict:
    import copy

    c = copy.deepcopy(cfg)
    c["experiment"].pop("device", None)
    for m in c["models"].values():
        m["train"].pop("device", None)
    return c
