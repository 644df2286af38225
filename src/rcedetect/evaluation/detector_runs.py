"""One attack against a detector on every image, in part files, judged by the one success rule: the one attack
path of ``rce adaptive``, ``rce reproduce`` and the detector card (:mod:`.detector_card`).

An attack is built per batch by name (:func:`build`: :func:`rcedetect.attacks.attack_factory` with its settings, the
budget ε, the batch's seed, the detector term score − T where it takes one) and run by :func:`attack_parts`: one
part file per batch (:mod:`.attack_store`), written atomically, so that a killed run resumes at its first missing
part. Its x* are then judged afresh, whatever the attack believed: an image is **fooled** when the classifier's
answer is not the true label AND the detector accepts it (score ≤ T) — :func:`rcedetect.stats.operating_point.
adaptive_success`, the rule of Bryniarski et al. ICLR 2022 for every attack of the package, a library's included.
The card also asks that x* lies in the ε-ball (:func:`attack_record`, :func:`fooled`); ``rce adaptive`` and
``rce reproduce`` judge on feature banks with the operating point (:func:`adaptive_attack`, :func:`judge_banks`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from ..attacks import attack_factory
from ..attacks import spec as attack_spec
from ..attacks.engine import distortion
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
           norm: str, eps: float | None, batch_size: int) -> torch.Tensor:
    """Per image: within the budget, misclassified AND accepted."""
    pred, score = judge(classifier, metric, x_adv, batch_size)
    dist = distortion(x.cpu(), x_adv.detach().cpu(), norm)
    within = torch.ones(len(x), dtype=torch.bool) if eps is None else dist <= eps * (1 + 1e-5) + 1e-7
    return within & adaptive_success(pred, y.cpu(), score <= threshold)


def build(name: str, settings: dict[str, Any], eps: float | None, seed: int, term):
    """``factory(batch) -> attack`` with the budget and the term where the attack takes them (bad settings raise
    ConfigError here, before any work)."""
    fields = attack_spec(name).fields
    return attack_factory(name, settings, eps if "eps" in fields else None, seed,
                          detector=term if "detector" in fields else None)


def attack_parts(folder: Path, factory, classifier, x: torch.Tensor, y: torch.Tensor, batch: int, *,
                 horizons: tuple[int, ...] = (), indices: torch.Tensor | None = None, bar=None, on_part=None):
    """(the attack's result, its seconds): the attacks of ``factory`` (:func:`build`) on images ``x`` with labels
    ``y``, one part file per ``batch`` images in ``folder`` (:func:`~.attack_store.run_parts`: a killed run resumes
    at its first missing part). With ``horizons`` the attack runs once through ``PGDDetector.at_steps``: the result
    is the longest run's, with each shorter horizon's x* as ``extra["x_adv_at_<steps>"]``."""
    if horizons:
        factory = _at_steps(factory, tuple(horizons))
    run_parts(folder, factory, classifier, x, y, batch, indices=indices, bar=bar, on_part=on_part)
    res, seconds, _ = load_parts(folder, len(x), batch, x)
    return res, seconds


def _at_steps(factory, horizons: tuple[int, ...]):
    """``factory`` with each attack run through ``at_steps(horizons)`` (:func:`attack_parts`)."""
    def attack(b: int):
        def run(classifier, x, y):
            results = factory(b).at_steps(classifier, x, y, horizons)
            last = results[-1]
            return dataclasses.replace(last, extra={**last.extra, **{f"x_adv_at_{h}": r.x_adv
                                                                     for h, r in zip(horizons, results[:-1])}})
        return run
    return attack


def attack_record(folder: Path, factory, classifier, term, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                  batch: int, *, horizons: tuple[int, ...] = (), bar=None) -> dict[str, Any]:
    """The detector card's record of one attack (:func:`attack_parts` in ``folder``, judged by :func:`fooled` against
    the term ``term``): ``fooled`` per image, ``seconds``, ``passes_per_image`` and ``fooled_at`` {steps: fooled}
    for each of ``horizons``."""
    passes = factory(0).passes_per_image()
    res, seconds = attack_parts(folder, factory, classifier, x, y, batch, horizons=horizons, bar=bar)

    def judged(x_adv):
        return fooled(classifier, term.metric, term.threshold, x, x_adv, y, norm, eps, batch)

    return {"fooled": judged(res.x_adv), "seconds": seconds, "passes_per_image": passes,
            "fooled_at": {h: judged(res.extra.get(f"x_adv_at_{h}", res.x_adv)) for h in horizons}}


def adaptive_attack(folder: Path, name: str, settings: dict[str, Any], eps: float | None, seed: int, term, classifier,
                    x: torch.Tensor, y: torch.Tensor, batch: int, *, heldout: torch.Tensor, clean, fpr: float,
                    n_boot: int, boot_seed: int = 0, indices: torch.Tensor | None = None, bar=None, on_part=None):
    """(the attack's result, its seconds, :func:`judge_banks` of it): ``name`` against the detector term ``term``
    (score − T) by :func:`attack_parts` in ``folder``; ``clean``: the feature bank of ``x``, ``heldout``: the
    detector's scores of the clean held-out images T was chosen on."""
    res, seconds = attack_parts(folder, build(name, settings, eps, seed, term), classifier, x, y, batch,
                                indices=indices, bar=bar, on_part=on_part)
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

