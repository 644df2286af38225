"""The stages of ``rce reproduce`` (DESIGN "data flow"): each is a function of (its config, the artifacts
upstream) → an artifact in the output folder named by a short hash of that config (:func:`rcedetect.io.config_hash`).

Artifacts (under OUT/):

- ``models/<name>-<hash>/``                 a training run (checkpoints; resumable mid-training)
- ``features/<name>-<kind>-<hash>.safetensors``  final hidden features of training / attacked / t-SNE images
- ``detectors/<name>-<hash>/``              K-density (1000 per class), attack kernel (100), η per class
- ``attacks/<name>/<attack>-<eps>-<hash>/part-NNNN.safetensors``  adversarial images, one file per batch
- ``records/<name>-<attack>-<eps>-<hash>.json``  the scored record of one attack run (Table 2 … 5 inputs)
- ``tsne/<name>-<hash>.json``               the 2-D t-SNE embedding (Fig. 1b/c)

Every write is atomic (rcedetect.io), so a killed run never leaves a half file that looks whole; a stage
whose artifact exists is skipped, so the next run resumes where the last one stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import attacks, checkpoint, data, detectors, features, metrics
from .attacks.base import AttackResult, l2_distortion
from .config import TrainConfig
from .detectors.kd import KernelDensity, default_sigma2
from .io import config_hash, load_tensors, read_json, save_tensors, write_json

GRID_ATTACKS = ("fgsm", "bim", "ilcm", "jsma", "noise")  # attacks with an ε
SEEDED_ATTACKS = ("noise", "cw", "cw_hc", "cw_wb")  # attacks with a `seed` setting


def train_dict_for_hash(train: dict) -> dict:
    """The training config without device and data folder (where it runs and reads does not change the result)."""
    return {k: v for k, v in train.items() if k not in ("device", "data_dir")}


# ----------------------------------------------------------------------------------------------- training
def model_done(run_dir: Path, cfg: TrainConfig) -> bool:
    idx = run_dir / checkpoint.INDEX
    if not idx.is_file():
        return False
    meta = read_json(idx, "checkpoint index")
    return meta.get("step") == cfg.steps and "test_accuracy" in meta.get("metrics", {})


def train_model(cfg: TrainConfig, run_dir: Path, dataset: data.Dataset, progress: bool,
                step_callback: Callable[[int], None] | None = None) -> None:
    """Train (or resume training of) one model into ``run_dir`` (rcedetect.training.fit)."""
    from .training import fit

    resume = (run_dir / checkpoint.INDEX).is_file()
    if resume and read_json(run_dir / checkpoint.INDEX).get("config") != cfg.to_dict():
        # same hash (device aside) but another device: restart rather than refuse
        import shutil

        shutil.rmtree(run_dir)
        resume = False
    fit(cfg, run_dir, dataset=dataset, resume=resume, progress=progress, step_callback=step_callback)


# ----------------------------------------------------------------------------------------------- detectors
def fit_detector(train_bank: features.FeatureBank, objective: str, num_classes: int, settings: dict,
                 out_dir: Path) -> None:
    """K-density with ``per_class`` kernel points per true class, the attack subset and η (SPEC §4.2-4.4)."""
    sigma2 = settings.get("sigma2") or default_sigma2(objective)
    seed = int(settings.get("seed", 0))
    kd = KernelDensity.fit(train_bank.features, train_bank.labels, num_classes,
                           per_class=settings.get("per_class", 1000), sigma2=sigma2, seed=seed)
    kd_attack = kd.subset(int(settings.get("attack_per_class", 100)), seed=seed + 1)
    eta = kd_attack.eta(train_bank.features, train_bank.labels)
    kd.save(out_dir / "kd.safetensors")
    kd_attack.save(out_dir / "kd_attack.safetensors")
    write_json(out_dir / "detector.json", {"sigma2": sigma2, "per_class": settings.get("per_class", 1000),
                                           "attack_per_class": settings.get("attack_per_class", 100),
                                           "eta": eta.tolist(), "seed": seed})


def load_detector(out_dir: Path, device) -> tuple[KernelDensity, KernelDensity, torch.Tensor, dict]:
    info = read_json(out_dir / "detector.json", "detector record")
    return (KernelDensity.load(out_dir / "kd.safetensors", device),
            KernelDensity.load(out_dir / "kd_attack.safetensors", device),
            torch.tensor(info["eta"], dtype=torch.float32), info)


# ----------------------------------------------------------------------------------------------- attacks
def part_path(attack_dir: Path, b: int) -> Path:
    return attack_dir / f"part-{b:04d}.safetensors"


def run_attack_parts(attack_dir: Path, make_attack: Callable[[int], Any], classifier, x: torch.Tensor,
                     y: torch.Tensor, batch: int, on_part: Callable[[int], None] | None = None,
                     bar=None) -> None:
    """Attack ``x`` in batches of ``batch``; each batch is one part file, skipped when it exists."""
    for b, start in enumerate(range(0, len(x), batch)):
        path = part_path(attack_dir, b)
        if path.is_file():
            if bar is not None:
                bar.update(min(batch, len(x) - start))
            continue
        xb, yb = x[start : start + batch], y[start : start + batch]
        t0 = time.perf_counter()
        res = make_attack(b)(classifier, xb.to(classifier.device), yb.to(classifier.device))
        seconds = time.perf_counter() - t0
        tensors = {"x_adv": res.x_adv, "success": res.success.to(torch.uint8),
                   "iterations": res.iterations if res.iterations is not None else torch.zeros(len(xb))}
        if res.target is not None:
            tensors["target"] = res.target
        for k, v in res.extra.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == len(xb):
                tensors[f"extra.{k}"] = v.to(torch.uint8) if v.dtype == torch.bool else v
        save_tensors(path, tensors, metadata={"seconds": repr(seconds), "n": str(len(xb))})
        if bar is not None:
            bar.update(len(xb))
        if on_part is not None:
            on_part(b)


def load_attack(attack_dir: Path, x: torch.Tensor, batch: int) -> tuple[AttackResult, float]:
    """The concatenated result of every part and the total attack seconds."""
    from .detectors.kd import read_metadata

    parts, secs = [], 0.0
    for b in range(math.ceil(len(x) / batch)):
        path = part_path(attack_dir, b)
        parts.append(load_tensors(path, "attack part"))
        secs += float(read_metadata(path).get("seconds", "nan"))
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    extra = {k[6:]: (v.bool() if k[6:] in ("target_reached",) else v) for k, v in cat.items() if k.startswith("extra.")}
    res = AttackResult(x_adv=cat["x_adv"], success=cat["success"].bool(), target=cat.get("target"),
                       iterations=cat["iterations"], extra=extra, x=x)
    return res, secs


def make_attack_factory(name: str, settings: dict, eps: float | None, seed: int, density=None, eta=None):
    """``factory(batch_index) -> attack``: seeded attacks get seed + batch index, so every batch is reproducible."""
    kw = dict(settings)
    if eps is not None:
        kw["eps"] = eps
    if density is not None:
        kw.update(density=density, eta=eta)

    def factory(b: int):
        if name in SEEDED_ATTACKS:
            kw["seed"] = int(seed) * 1000 + b
        return attacks.create(name, **kw)

    factory(0)  # fail early on bad settings
    return factory


# ----------------------------------------------------------------------------------------------- scoring
def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), digits)


def score_attack(classifier, res: AttackResult, y: torch.Tensor, clean: features.FeatureBank, kd: KernelDensity,
                 *, keep_kd_values: bool, all_kd_values: bool = False) -> dict:
    """Table-2 record of one attack run: pair mask, AUCs of the three detectors, accuracy, distortions."""
    adv = features.extract(classifier, res.x_adv)
    y = y.cpu()
    pred_clean, pred_adv = clean.predictions.cpu(), adv.predictions.cpu()
    mask = metrics.pair_mask(y, pred_clean, pred_adv)
    detection, kd_adv = {}, None
    for metric in detectors.METRICS:
        s_clean = detectors.scores_from_features(metric, classifier, clean.features, kd=kd)
        s_adv = detectors.scores_from_features(metric, classifier, adv.features, kd=kd)
        rec = metrics.detection_record(s_clean, s_adv, mask)
        detection[metric] = {k: (_r(v) if k != "n_pairs" else v) for k, v in rec.items()}
        if metric == "kd":
            kd_adv = -s_adv
    l2 = l2_distortion(res.x.cpu(), res.x_adv.cpu())
    correct = pred_clean == y
    efficient = res.success.cpu() & correct
    record = {
        "n_images": len(y), "n_pairs": int(mask.sum()),
        "accuracy": _r(float((pred_adv == y).float().mean())),
        "clean_accuracy": _r(float(correct.float().mean())),
        "success_rate": _r(float(res.success.float().mean())),
        "mean_l2": _r(float(l2[torch.from_numpy(mask)].mean())) if mask.any() else None,
        "detection": detection,
    }
    if res.target is not None and "target_reached" in res.extra:
        record["target_rate"] = _r(float(res.extra["target_reached"].float().mean()))
    if keep_kd_values:
        sel = torch.ones(len(y), dtype=torch.bool) if all_kd_values else torch.from_numpy(mask)
        record["log_kd_adv"] = [round(float(v), 4) for v in kd_adv[sel]]
    record["_efficient_l2"] = (_r(float(l2[efficient].mean())) if efficient.any() else None, int(efficient.sum()))
    return record


def to_uint8_list(x: torch.Tensor) -> list:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).tolist()


def transfer_record(target_clf, res: AttackResult, y: torch.Tensor, clean_target: features.FeatureBank,
                    kd: KernelDensity) -> dict:
    """Black-box transfer (paper §4.5, SPEC §8): substitute's C&W-wb images scored by the target's detector."""
    adv = features.extract(target_clf, res.x_adv)
    y = y.cpu()
    mask = metrics.pair_mask(y, clean_target.predictions, adv.predictions)
    detection = {}
    for metric in detectors.METRICS:
        s_clean = detectors.scores_from_features(metric, target_clf, clean_target.features, kd=kd)
        s_adv = detectors.scores_from_features(metric, target_clf, adv.features, kd=kd)
        rec = metrics.detection_record(s_clean, s_adv, mask)
        detection[metric] = {k: (_r(v) if k != "n_pairs" else v) for k, v in rec.items()}
    ok = res.success.cpu() & (clean_target.predictions == y)
    rate = float((adv.predictions[ok] != y[ok]).float().mean()) if ok.any() else None
    return {"n_images": len(y), "n_pairs": int(mask.sum()), "n_substitute_success": int(ok.sum()),
            "transfer_rate": _r(rate), "detection": detection}


# ----------------------------------------------------------------------------------------------- t-SNE
def tsne_embedding(bank: features.FeatureBank, seed: int, perplexity: float = 30.0) -> dict:
    """Fig. 1b/c: sklearn t-SNE (perplexity 30, PCA init) of final hidden vectors (SPEC §9)."""
    import numpy as np
    from sklearn.manifold import TSNE

    z = bank.features.double().numpy()
    perp = min(perplexity, max(2.0, (len(z) - 1) / 3.0))
    xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    return {"n": len(z), "perplexity": perp, "xy": np.round(xy, 3).tolist(),
            "labels": bank.labels.tolist() if bank.labels is not None else bank.predictions.tolist()}


def dump_json(path: Path, obj: Any) -> None:
    write_json(path, json.loads(json.dumps(obj, default=float)))


def attack_key(model_hash: str, name: str, settings: dict, eps: float | None, n: int, batch: int, seed: int,
               detector_hash: str | None) -> str:
    return config_hash({"model": model_hash, "attack": name, "settings": settings, "eps": eps, "n": n,
                        "batch": batch, "seed": seed, "detector": detector_hash})
