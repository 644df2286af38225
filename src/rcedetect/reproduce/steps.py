"""What each stage of a reproduce run does: train a model, attack it and score the attack, transfer, t-SNE.

Every function writes its artifact atomically at the path :class:`~.layout.Layout` gives it; the recipe
(:mod:`.recipe`) decides when to call it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..core import distributed
from ..core.io import write_json
from ..core.records import AttackRecord, TransferRecord
from ..evaluation import attack_store, paper_ref
from ..evaluation.scoring import rounded, score_attack, table3_stats, transfer_record
from ..models import checkpoint, features
from ..training.config import TrainConfig, same_training
from .inputs import Inputs


def write_record(path: Path, obj: Any) -> None:
    """A JSON record with every tensor / numpy scalar turned into a plain number."""
    write_json(path, json.loads(json.dumps(obj, default=float)))


# ----------------------------------------------------------------------------------------------- training
def model_done(run_dir: Path, cfg: TrainConfig) -> bool:
    idx = run_dir / checkpoint.INDEX
    if not idx.is_file():
        return False
    meta = checkpoint.read_meta(run_dir)
    return meta.get("step") == cfg.steps and "test_accuracy" in meta.get("metrics", {})


def train_model(cfg: TrainConfig, run_dir: Path, dataset: data.Dataset, progress: bool,
                step_callback: Callable[[int], None] | None = None) -> None:
    """Train (or resume training of) one model into ``run_dir`` (rcedetect.training.fit)."""
    from ..training import fit

    resume = (run_dir / checkpoint.INDEX).is_file()
    saved = checkpoint.read_meta(run_dir).get("config") if resume else None
    # read back through TrainConfig: a run checkpointed before a setting existed resumes at its default
    same = isinstance(saved, dict) and same_training(saved, cfg)
    if resume and not same:
        distributed.barrier()  # every rank has read the old config before rank 0 removes it
        if distributed.world().main:
            shutil.rmtree(run_dir)  # same hash (device aside) but another device: restart rather than refuse
        distributed.barrier()
        resume = False
    fit(cfg, run_dir, dataset=dataset, resume=resume, progress=progress, step_callback=step_callback)


# ----------------------------------------------------------------------------------------------- attacks
def to_uint8_list(x: torch.Tensor) -> list:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).tolist()


def paper_extras(attack: str, efficient: tuple, res, x: torch.Tensor, y: torch.Tensor, clean: features.FeatureBank,
                 figure3_images: int) -> dict:
    """The parts of a record that only some of the paper's tables use (Figure 2b, Table 3, Figure 3);
    ``efficient``: (mean L2, count) of the images that succeeded and were correct when clean."""
    out = {}
    if attack in paper_ref.MIN_DISTORTION_ATTACKS:
        out["cw"] = {"mean_min_distortion": efficient[0], "n_efficient": efficient[1]}
    if attack == paper_ref.WHITEBOX_ATTACK and "f2" in res.extra:
        dev = res.success.device
        st = table3_stats(res, y.to(dev), clean.predictions.to(dev))
        out["wb"] = {"ratio_f2_positive": rounded(st["ratio_f2_positive"]), "n_reached": st["n_target_reached"],
                     "n_efficient": st["n_efficient"], "mean_distortion": rounded(st["mean_distortion"]),
                     "n_correct": st["n_correct"],
                     "distortion_interval": [rounded(v) for v in st["distortion_interval"]]}
        k = min(figure3_images, len(x))
        out["figure3"] = {"clean": to_uint8_list(x[:k]), "adv": to_uint8_list(res.x_adv[:k]),
                          "labels": y[:k].tolist(), "targets": res.target[:k].tolist(),
                          "success": res.success[:k].tolist(), "l2": [round(float(v), 2) for v in res.l2[:k]]}
    return out


def pending(inp: Inputs, runs: list, images: int, desc: str, progress: bool) -> tuple:
    """(the first ``images`` pool images, their labels, their test-set indices, the ``runs`` without a record yet,
    a progress bar over those runs)."""
    from tqdm.auto import tqdm

    n = min(images, len(inp.pool()[0]))
    x, y, indices = (t[:n] for t in inp.pool())
    todo = [r for r in runs if not r.record.is_file()]
    return x, y, indices, todo, tqdm(total=n * len(todo), desc=desc, disable=not progress, leave=False,
                                     dynamic_ncols=True)


def run_attack(inp: Inputs, model: str, attack: str, progress: bool, hook: Callable[[str], None]) -> None:
    """Every ε of ``attack`` on ``model``: the part files, then the scored record of each run."""
    plan, a, exp = inp.plan, inp.plan.attacks[attack], inp.plan.experiment
    x, y, indices, runs, bar = pending(inp, inp.layout.attack_runs(model, attack), a.images, f"{attack} on {model}",
                                       progress)
    n, clf, clean, dets = len(x), inp.classifier(model), inp.pool_bank(model, len(x)), inp.detectors(model)
    term = dets["kd"].term() if a.spec.needs_detector else None
    for r in runs:
        factory = attack_store.attack_factory(a.registered, a.settings, r.eps, exp.seed, detector=term)
        attack_store.run_parts(r.dir, factory, clf, x, y, a.batch, indices=indices, bar=bar,
                               on_part=lambda b, r=r: hook(f"part:{model}:{attack}:{r.eps}:{b}"))
        res, secs, _ = attack_store.load_parts(r.dir, n, a.batch, x)
        t2_run = r.eps is None or abs(r.eps - exp.table2_eps) < 1e-9
        noise = attack == paper_ref.NOISE_ATTACK
        scored = score_attack(clf, res, y, clean, dets, keep_kd_values=t2_run or noise, all_kd_values=noise,
                              heldout=inp.heldout_scores(model), roc=t2_run)
        extras = paper_extras(attack, scored.pop("_efficient_l2"), res, x, y, clean, exp.figure3_images)
        rec = AttackRecord(**scored, **extras, model=model, objective=plan.models[model].train.objective,
                           attack=attack, eps=r.eps, settings=a.settings, config_hash=r.hash,
                           attack_seconds=round(secs, 3), seconds_per_example=secs / n)
        write_record(r.record, rec.to_dict())
    bar.close()


# ----------------------------------------------------------------------------------------------- transfer, t-SNE
def run_transfer(inp: Inputs, attack: str, sub: str, tgt: str) -> None:
    """Black-box transfer (paper §4.5, protocol §8): ``sub``'s adversarial images scored on ``tgt``."""
    a = inp.plan.attacks[attack]
    x_pool, y_pool, _ = inp.pool()
    n = min(a.images, len(x_pool))
    res, _, _ = attack_store.load_parts(inp.layout.attack_runs(sub, attack)[0].dir, n, a.batch, x_pool[:n])
    scored = transfer_record(inp.classifier(tgt), res, y_pool[:n], inp.pool_bank(tgt, n), inp.detectors(tgt),
                             heldout=inp.heldout_scores(tgt))
    s, t = inp.plan.models[sub].train, inp.plan.models[tgt].train
    rec = TransferRecord(**scored, substitute=sub, substitute_arch=s.arch, substitute_objective=s.objective,
                         target=tgt, target_arch=t.arch, target_objective=t.objective)
    write_record(inp.layout.transfer_path(attack, sub, tgt), rec.to_dict())


def tsne_embedding(bank: features.FeatureBank, seed: int, perplexity: float = 30.0) -> dict:
    """Fig. 1b/c: sklearn t-SNE (perplexity 30, PCA init) of final hidden vectors (protocol §9)."""
    import numpy as np
    from sklearn.manifold import TSNE

    z = bank.features.double().numpy()
    perp = min(perplexity, max(2.0, (len(z) - 1) / 3.0))
    xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    return {"n": len(z), "perplexity": perp, "xy": np.round(xy, 3).tolist(),
            "labels": bank.labels.tolist() if bank.labels is not None else bank.predictions.tolist()}
