"""One attack against a detector on every image, judged by the one success rule, saved so that a rerun resumes.

An attack is built per batch by name (:func:`rcedetect.attacks.attack_factory`: its settings, the budget ε, the
batch's seed, the detector term score − T where it takes one) and run on the images; its x* are then judged
afresh, whatever the attack believed: an image is **fooled** when x* lies in the ε-ball, the classifier's answer
is not the true label AND the detector accepts it (score ≤ T) — :func:`rcedetect.stats.operating_point.
adaptive_success`, the rule of Bryniarski et al. ICLR 2022 for every attack of the package, a library's included.

With a folder, each finished attack's per-image result is written atomically as ``<attack>-eps<ε>.json`` under a
key of everything it depends on (images, labels, model weights, threshold, settings, seed); a rerun reads the
files whose key matches and runs only the attacks that have none.

``rce adaptive`` and ``rce reproduce`` run theirs with :func:`adaptive_attack`: built by :func:`build`, one part file
per batch (:mod:`.attack_store`), judged on feature banks with the operating point (:func:`judge_banks`).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import torch

from ..attacks import attack_factory
from ..attacks import spec as attack_spec
from ..attacks.engine import distortion
from ..core.errors import RceError
from ..core.io import config_hash, read_json, write_json
from ..detectors.base import observe, score_any
from ..models import features
from ..models.classifier import FINAL
from ..stats.operating_point import adaptive_success, fpr_key, operating_points
from .attack_store import load_parts, run_parts


def fingerprint(*tensors: torch.Tensor) -> str:
    """A sha256 of the tensors' bytes (images, labels): what a saved result was computed on."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(module: torch.nn.Module) -> str:
    return fingerprint(*[p for p in module.state_dict().values() if isinstance(p, torch.Tensor)])


@torch.no_grad()
def judge(classifier, metric, x_adv: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, detector scores) of images ``x_adv`` on the CPU, from one forward pass per batch."""
    device = classifier.device
    preds, scores = [], []
    for i in range(0, len(x_adv), batch_size):
        view = observe(classifier, x_adv[i : i + batch_size].to(device, torch.float32), metric)
        preds.append(view.logits.argmax(1).cpu())
        scores.append(metric.score(view).detach().float().cpu())
    return (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long),
            torch.cat(scores) if scores else torch.empty(0))


def fooled(classifier, metric, threshold: float, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
           norm: str, eps: float | None, batch_size: int) -> dict[str, torch.Tensor]:
    """Per image: within the budget, misclassified, accepted, and all three (``fooled``)."""
    pred, score = judge(classifier, metric, x_adv, batch_size)
    dist = distortion(x.cpu(), x_adv.detach().cpu(), norm)
    within = torch.ones(len(x), dtype=torch.bool) if eps is None else dist <= eps * (1 + 1e-5) + 1e-7
    accepted = score <= threshold
    return {"fooled": within & adaptive_success(pred, y.cpu(), accepted), "within": within, "accepted": accepted,
            "pred": pred, "score": score, "distortion": dist}


def takes(name: str, what: str) -> bool:
    return what in attack_spec(name).fields


def build(name: str, settings: dict[str, Any], eps: float | None, seed: int, term):
    """``factory(batch) -> attack`` with the budget and the term where the attack takes them (bad settings raise
    ConfigError here, before any work)."""
    return attack_factory(name, settings, eps if takes(name, "eps") else None, seed,
                          detector=term if takes(name, "detector") else None)


def adaptive_attack(folder: Path, name: str, settings: dict[str, Any], eps: float | None, seed: int, term, classifier,
                    x: torch.Tensor, y: torch.Tensor, batch: int, *, heldout: torch.Tensor, clean, fpr: float,
                    n_boot: int, boot_seed: int = 0, indices: torch.Tensor | None = None, bar=None, on_part=None):
    """(the attack's result, its seconds, :func:`judge_banks` of it): ``name`` against the detector term ``term``
    (score − T) on images ``x`` with labels ``y``, one part file per ``batch`` images in ``folder`` (a killed run
    resumes at its first missing part); ``clean``: the feature bank of ``x``, ``heldout``: the detector's scores of
    the clean held-out images T was chosen on."""
    run_parts(folder, build(name, settings, eps, seed, term), classifier, x, y, batch, indices=indices, bar=bar,
              on_part=on_part)
    res, seconds, _ = load_parts(folder, len(x), batch, x)
    return res, seconds, judge_banks(classifier, term.metric, term.threshold, heldout, clean, x, y, res.x_adv,
                                     fpr=fpr, n_boot=n_boot, seed=boot_seed)


def judge_banks(classifier, metric, threshold: float, heldout: torch.Tensor, clean, x: torch.Tensor, y: torch.Tensor,
                x_adv: torch.Tensor, *, fpr: float, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Adversarial images ``x_adv`` of the clean images ``x`` (feature bank ``clean``) judged against ``metric`` at
    ``threshold``: the operating point at ``fpr`` (thresholds from ``heldout`` alone, not resampled: the attack
    aimed at this very T), ``fooled`` per image (correct when clean, then misclassified AND accepted:
    :func:`adaptive_success`) and ``robust_accuracy``, the classifier's alone."""
    adv = features.extract(classifier, x_adv, layers=[n for n in metric.layers if n != FINAL])
    s_clean, s_adv = score_any(metric, classifier, clean, x), score_any(metric, classifier, adv, x_adv)
    op = operating_points(heldout, s_clean, s_adv, y, clean.predictions, adv.predictions, fprs=(fpr,), n_boot=n_boot,
                          seed=seed, resample_heldout=False)[fpr_key(fpr)]
    return {"operating_point": op, "robust_accuracy": float((adv.predictions == y).double().mean()),
            "fooled": (clean.predictions == y) & adaptive_success(adv.predictions, y, s_adv <= threshold)}


def record_path(folder: Path, name: str, eps: float) -> Path:
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}-eps{eps:.6g}.json"


def run_attack(name: str, factory, classifier, metric, threshold: float, x, y, *, norm: str, eps: float,
               batch_size: int, horizons: tuple[int, ...] = (), key: dict | None = None, folder: Path | None = None,
               bar=None) -> dict[str, Any]:
    """The attack's record: ``fooled`` per image (lists), ``seconds``, ``passes_per_image``; with ``horizons``
    (``PGDDetector.at_steps``) also ``fooled_at`` {steps: list}. Read from ``folder`` when a record with this
    ``key`` is there; written there atomically when it finishes."""
    path = record_path(folder, name, eps) if folder is not None else None
    digest = config_hash(key) if key is not None else None
    if path is not None and path.is_file():
        try:
            rec = read_json(path, "attack record")
            if isinstance(rec, dict) and rec.get("key") == digest and len(rec.get("fooled", [])) == len(x):
                if bar is not None:
                    bar.update(len(x))
                return rec
        except RceError:
            pass  # a damaged record is recomputed
    t0 = time.perf_counter()
    finals, shorts = [], {h: [] for h in horizons}
    passes = None
    for b, i in enumerate(range(0, len(x), batch_size)):
        attack = factory(b)
        passes = attack.passes_per_image() if passes is None else passes
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if horizons:
            results = attack.at_steps(classifier, xb, yb, horizons)
            for h, r in zip(horizons, results):
                shorts[h].append(r.x_adv.detach().cpu())
            finals.append(results[-1].x_adv.detach().cpu())
        else:
            finals.append(attack(classifier, xb, yb).x_adv.detach().cpu())
        if bar is not None:
            bar.update(len(xb))
    seconds = time.perf_counter() - t0
    x_adv = torch.cat(finals) if finals else x[:0]
    j = fooled(classifier, metric, threshold, x, x_adv, y, norm, eps, batch_size)
    rec = {"attack": name, "eps": eps, "key": digest, "fooled": j["fooled"].tolist(),
           "accepted": j["accepted"].tolist(), "misclassified": (j["pred"] != y.cpu()).tolist(),
           "within_budget": j["within"].tolist(), "seconds": seconds, "passes_per_image": passes}
    if horizons:
        rec["fooled_at"] = {str(h): fooled(classifier, metric, threshold, x, torch.cat(v), y, norm, eps,
                                           batch_size)["fooled"].tolist() for h, v in shorts.items()}
    if path is not None:
        write_json(path, rec)
    return rec
