"""Robust accuracy in a reproduce run (protocol §20): every main and robust model under the ``[robust]`` attacks,
and each detector's robust accuracy with rejection under the adaptive attacks that already ran.

- Classifiers: :func:`rcedetect.evaluation.robust.cascade` on the first ``robust.images`` pool images (the images the
  adaptive attacks attack), the attacks of ``[robust.attacks]`` in order at every ε of the robust grid (by default
  the adaptive L∞ grid and its halves), true labels, no detector. One stage per model; each (ε, attack) step is kept
  in ``robust/<model>-<hash>/`` so a killed run resumes at its first missing step, the record in
  ``records/robust-<model>-<hash>.json``.
- Detectors (in ``results.json`` only, from the adaptive records): an image counts robust with rejection at ε
  (Tramèr, "Detecting adversarial examples is (nearly) as hard as classifying them", ICML 2022: the detector's
  robust error counts an image as lost when it errs on x or answers a wrong label on any x' in the ball) when its
  clean version is classified right AND accepted at the 5 %-FPR threshold, and no adaptive attack at any
  ε' ≤ ε made it misclassified AND accepted (the ``fooled`` flags of :mod:`.adaptive`). At an ε of the robust grid
  below which no adaptive attack ran at that very ε (an ε/2 off the adaptive grid), the largest ε' below it is
  used, an upper bound on the robust accuracy there (``eps_attacked`` says which).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.io import config_hash, read_json, write_json
from ..core.records import RobustRecord
from ..detectors import score_any
from ..evaluation import attack_store
from ..evaluation.robust import cascade
from ..stats.metrics import wilson_interval
from .adaptive import fooled_union, records, threshold
from .inputs import Inputs
from .robust_config import close
from .runner import Stage, eps_text, pass_size
from .steps import write_record

#: bumped when the evaluation changes, so that a cached run recomputes it
ROBUST_VERSION = 1


def training_fields(tc) -> dict:
    """``{"training": {...}}`` of an adversarially trained model (PGD-AT or TRADES, protocol §19), else ``{}``."""
    adv = tc.adversarial
    if adv is None:
        return {}
    kind = "trades" if tc.trades_beta is not None else "pgd-at"
    return {"training": {"kind": kind, "eps": adv.eps, "norm": adv.norm, "steps": adv.steps,
                         "step_size": adv.step_size, **({"beta": tc.trades_beta} if kind == "trades" else {})}}


def key(inp: Inputs, model: str) -> str:
    r = inp.plan.robust
    return config_hash({"model": inp.layout.model_hash(model), "images": r.images, "batch": r.batch,
                        "eps": list(r.eps), "attacks": [[a.name, a.registered, a.settings] for a in r.attacks],
                        "seed": inp.plan.experiment.seed, "version": ROBUST_VERSION})


def step_dir(inp: Inputs, model: str) -> Path:
    return inp.layout.out / "robust" / f"{model}-{key(inp, model)}"


def record_path(inp: Inputs, model: str) -> Path:
    return inp.layout.out / "records" / f"robust-{model}-{key(inp, model)}.json"


class _Steps:
    """The steps of one cascade as small JSON files (:class:`rcedetect.evaluation.robust.StepStore`)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, index: int, eps: float, attack: str) -> Path:
        return self.folder / f"step-{index:03d}-e{eps:g}-{attack}.json"

    def load(self, index: int, eps: float, attack: str) -> dict | None:
        path = self._path(index, eps, attack)
        return read_json(path, "robust step") if path.is_file() else None

    def save(self, index: int, eps: float, attack: str, step: dict) -> None:
        write_json(self._path(index, eps, attack), step)


def run_model(inp: Inputs, model: str, hook: Callable[[str], None]) -> None:
    """The cascade of ``[robust]`` attacks on ``model``, written as its record."""
    r, seed = inp.plan.robust, inp.plan.experiment.seed
    x_pool, y_pool, idx_pool = inp.pool()
    n = min(r.images, len(x_pool))
    attacks = [(a.name, lambda eps, a=a: attack_store.attack_factory(a.registered, a.settings, eps, seed))
               for a in r.attacks]
    rec = cascade(inp.classifier(model), x_pool[:n], y_pool[:n], r.eps, attacks, r.batch,
                  store=_Steps(step_dir(inp, model)),
                  on_step=lambda s: hook(f"robust:{model}:{s['eps']:g}:{s['attack']}"))
    tc = inp.plan.models[model].train
    rec = RobustRecord(**rec, model=model, role=inp.plan.models[model].role, arch=tc.arch, objective=tc.objective,
                       **training_fields(tc), indices=idx_pool[:n].tolist(), config_hash=key(inp, model),
                       attack_settings={a.name: {"attack": a.registered, "settings": a.settings} for a in r.attacks},
                       attack_seconds=round(sum(s["seconds"] for s in rec["steps"]), 3))
    write_record(record_path(inp, model), rec.to_dict())


def stages(inp: Inputs, progress: bool, hook: Callable[[str], None]) -> list[Stage]:
    """One stage per model whose robust accuracy is evaluated (none without a [robust] section)."""
    p, r, out = inp.plan, inp.plan.robust, []
    if r is None:
        return out
    shape = inp.dataset().image_shape
    passes = sum(attack_store.probe(a.registered, a.settings, r.eps[0]).passes_per_image() for a in r.attacks)
    what = f"{len(r.attacks)} attack{'s' if len(r.attacks) > 1 else ''}"
    for name in p.robust_evaluated:
        out.append(Stage(f"robust accuracy {name} ({r.images} images, ε {eps_text(r.eps)}, {what})",
                         r.images * passes * len(r.eps) * pass_size(p.models[name].train, shape),
                         lambda n=name: record_path(inp, n).is_file(),
                         lambda n=name: run_model(inp, n, hook),
                         lambda n=name: (shutil.rmtree(step_dir(inp, n), ignore_errors=True),
                                         record_path(inp, n).unlink(missing_ok=True)), "robust"))
    return out


# ----------------------------------------------------------------------------------------------- results.json
def classifier_rows(rec: RobustRecord) -> list[dict]:
    """Robust accuracy of one cascade record at each ε, with its Wilson interval."""
    base = {k: getattr(rec, k) for k in ("model", "role", "arch", "objective", "training")
            if getattr(rec, k) is not None}
    return [{**base, **row, "n_clean_correct": int(sum(rec.clean_correct))} for row in rec.robust]


def detector_rows(model: dict, metric: str, records: list[dict], clean_correct: list[bool],
                  clean_accepted: list[bool], grid) -> list[dict]:
    """Robust accuracy with rejection (Tramèr 2022) of one detector on one model at each ε of ``grid`` from its
    adaptive ``records`` (module docstring); ``clean_correct`` / ``clean_accepted``: the attacked images' clean
    versions, classified right / accepted at the threshold. Also the measured clean rejection rate."""
    recs = [r for r in records if r.get("eps") is not None and (r.get("norm") or "linf") == "linf"]
    if not recs:
        return []
    n = min([len(clean_correct), len(clean_accepted)] + [len(r["fooled"]) for r in recs])
    ok = torch.tensor(clean_correct[:n], dtype=torch.bool) & torch.tensor(clean_accepted[:n], dtype=torch.bool)
    rejected = int((~torch.tensor(clean_accepted[:n], dtype=torch.bool)).sum())
    rej_lo, rej_hi = wilson_interval(rejected, n)
    out = []
    for eps in grid:
        used = [r for r in recs if r["eps"] <= eps or close(r["eps"], eps)]
        k = int((ok & ~fooled_union((r["fooled"] for r in used), n)).sum())
        lo, hi = wilson_interval(k, n)
        out.append({**model, "metric": metric, "eps": eps,
                    "eps_attacked": max((r["eps"] for r in used), default=None),
                    "attacks": sorted({r["attack"] for r in used}), "n_images": n, "n_robust": k,
                    "robust_accuracy_with_rejection": k / n if n else None, "interval": [lo, hi],
                    "n_clean_rejected": rejected, "clean_rejection_rate": rejected / n if n else None,
                    "clean_rejection_interval": [rej_lo, rej_hi]})
    return out


def results(inp: Inputs) -> dict:
    """``robust`` of results.json: the grids, the attacks, one row per classifier and ε, one per main model ×
    detector × ε, and the cascade records (absent without a [robust] section)."""
    p = inp.plan
    r = p.robust
    if r is None:
        return {}
    recs = {m: RobustRecord.from_dict(read_json(record_path(inp, m), "robust record"), str(record_path(inp, m)))
            for m in p.robust_evaluated}
    rows = [row for m in p.robust_evaluated for row in classifier_rows(recs[m])]
    dets = []
    if p.adaptive is not None:
        adaptive = records(inp)
        for model in p.detected:
            tc = p.models[model].train
            info = {"model": model, "role": p.models[model].role, "arch": tc.arch, "objective": tc.objective,
                    **training_fields(tc)}
            for metric in p.adaptive.metrics:
                mine = [a.to_dict() for a in adaptive if a.model == model and a.metric == metric]
                if not mine:
                    continue  # no adaptive attack ran against this detector
                n = max(len(a["fooled"]) for a in mine)
                bank, clf = inp.pool_bank(model, n), inp.classifier(model)
                scores = score_any(inp.detectors(model)[metric], clf, bank, inp.pool()[0][:n])  # clean images
                dets += detector_rows(info, metric, mine, (bank.predictions == bank.labels).tolist(),
                                      (scores <= threshold(inp, model, metric)).tolist(), r.eps)
    return {"robust": {"eps": list(r.eps), "adaptive_eps": list(r.adaptive_eps), "fpr": p.adaptive.fpr
                       if p.adaptive else None, "images": r.images,
                       "attacks": [{"name": a.name, "attack": a.registered, "settings": a.settings} for a in r.attacks],
                       "classifiers": rows, "detectors": dets, "records": {m: rec.to_dict() for m, rec in recs.items()}}}
