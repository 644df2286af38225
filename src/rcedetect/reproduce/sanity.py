"""Sanity checks of an adaptive evaluation (Carlini et al. 2019, "On evaluating adversarial robustness";
AutoAttack's flags, Croce & Hein 2020): each is run and reported; a failed one is a warning in the report.

On ``m`` (≤ 32) pool images, for the K-density detector (else the first metric) and ``pgd_detector``:

1. ``large_eps``: at ε = 1 (L∞; any image is reachable) the attack succeeds on ≥ 90 % of the images;
2. ``more_iterations``: 4× the steps does not lower the success rate (beyond one image of sampling noise);
3. ``lambda_zero``: λ = 0 gives exactly plain PGD on the classification margin (the same images, bit for bit);
4. ``gradient``: the detector term's gradient with respect to the input is finite and non-zero on every image;
5. ``gradient_free``: a random search on the same objective does not beat the gradient attacks at the same ε;
6. ``transfer`` (RCE models, when a CE model is evaluated too): the CE model's adversarial images, scored on
   this model, do not beat the white-box attack on it.
"""

from __future__ import annotations

import torch

from .. import attack_store, attacks, paper_ref
from . import adaptive
from .inputs import Inputs
from .steps import write_record

GRADIENT_ATTACK = "pgd_detector"
GRADIENT_FREE = "random_search_detector"
SAMPLE = 32


def _check(name: str, passed: bool, detail: str, **values) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail, **values}


def _run(inp: Inputs, model: str, metric: str, name: str, settings: dict, eps: float, m: int):
    """One attack on the first ``m`` pool images against ``metric``'s calibrated threshold (not cached)."""
    x, y, _ = inp.pool()
    spec = attacks.spec(name)
    kw = {**settings, "seed": inp.plan.experiment.seed} if spec.seeded else dict(settings)
    if "detector" in spec.fields:
        kw["detector"] = adaptive.term(inp, model, metric)
    return spec.create(eps=eps, **kw)(inp.classifier(model), x[:m], y[:m])


def _sr(rec: dict, m: int) -> float:
    return sum(rec["fooled"][:m]) / m


def checks(inp: Inputs, model: str) -> list[dict]:
    ad = inp.plan.adaptive
    if GRADIENT_ATTACK not in ad.attacks:
        return [_check("setup", False, f"no {GRADIENT_ATTACK} in [adaptive.attacks]: the checks need it")]
    metric = "kd" if "kd" in ad.metrics else ad.metrics[0]
    a = ad.attacks[GRADIENT_ATTACK]
    m = min(SAMPLE, a.images, len(inp.pool()[0]))
    eps_grid = sorted(a.eps)
    mid = eps_grid[len(eps_grid) // 2]
    runs = {r.eps: r for r in inp.layout.adaptive_runs(model, metric, GRADIENT_ATTACK)}
    from ..io import read_json

    base = read_json(runs[mid].record, "adaptive record")
    out = []
    big = adaptive.evaluate(inp, model, metric, _run(inp, model, metric, GRADIENT_ATTACK, a.settings, 1.0, m).x_adv, m)
    sr_big = _sr(big, m)
    out.append(_check("large_eps", sr_big >= 0.9, f"at ε = 1 the attack fools classifier and detector on "
                      f"{100 * sr_big:.0f} % of {m} images (expected ≥ 90 %)", sr=sr_big))
    steps = int(a.settings.get("steps", attacks.spec(GRADIENT_ATTACK).fields["steps"].default))
    more = adaptive.evaluate(inp, model, metric, _run(inp, model, metric, GRADIENT_ATTACK,
                                                      {**a.settings, "steps": 4 * steps}, mid, m).x_adv, m)
    sr_base, sr_more = _sr(base, m), _sr(more, m)
    out.append(_check("more_iterations", sr_more >= sr_base - 1 / m - 1e-9,
                      f"ε {mid:g}: {steps} steps fool {100 * sr_base:.0f} %, {4 * steps} steps {100 * sr_more:.0f} %",
                      sr=sr_base, sr_more=sr_more))
    plain = {"random_start": False, "restarts": 1, "steps": steps, "norm": a.settings.get("norm", "linf")}
    zero = _run(inp, model, metric, GRADIENT_ATTACK, {**plain, "lambdas": [0.0]}, mid, m).x_adv
    pgd = _run(inp, model, metric, "pgd", {**plain, "loss": "margin"}, mid, m).x_adv
    out.append(_check("lambda_zero", torch.equal(zero, pgd), "λ = 0 gives exactly plain PGD on the margin"
                      if torch.equal(zero, pgd) else "λ = 0 does NOT reproduce plain PGD: the loss is mis-wired"))
    out.append(_gradient_check(inp, model, metric, m))
    rs = adaptive.evaluate(inp, model, metric, _run(inp, model, metric, GRADIENT_FREE, {}, mid, m).x_adv, m)
    best = max(_sr(read_json(r.record, "adaptive record"), m) for name in ad.attacks
               if metric in adaptive.metrics_of(inp, name)
               for r in inp.layout.adaptive_runs(model, metric, name) if r.eps == mid)
    out.append(_check("gradient_free", _sr(rs, m) <= best + 1 / m + 1e-9,
                      f"ε {mid:g}: random search fools {100 * _sr(rs, m):.0f} %, the best gradient attack "
                      f"{100 * best:.0f} %", sr=_sr(rs, m), sr_gradient=best))
    out += _transfer_check(inp, model, metric, runs[mid], m)
    return out


def _gradient_check(inp: Inputs, model: str, metric: str, m: int) -> dict:
    clf, term = inp.classifier(model), adaptive.term(inp, model, metric)
    x = inp.pool()[0][:m].to(clf.device).requires_grad_(True)
    with torch.enable_grad():
        z = clf.features(x)
        logits = clf.logits_from_features(z)
        (g,) = torch.autograd.grad(term.margin(z, logits, logits.argmax(1)).sum(), x)
    norms = g.flatten(1).norm(dim=1)
    ok = torch.isfinite(norms) & (norms > 0)
    return _check("gradient", bool(ok.all()), f"the {metric} detector term's input gradient is finite and non-zero "
                  f"on {int(ok.sum())} of {m} images", share=float(ok.float().mean()))


def _transfer_check(inp: Inputs, model: str, metric: str, run, m: int) -> list[dict]:
    p = inp.plan
    if p.models[model].train.objective != "rce":
        return []
    sources = [s for s in p.mains if p.models[s].train.objective == "ce"]
    if not sources:
        return []
    from ..io import read_json

    src = next(r for r in inp.layout.adaptive_runs(sources[0], metric, GRADIENT_ATTACK) if r.eps == run.eps)
    a = p.adaptive.attacks[GRADIENT_ATTACK]
    n = min(a.images, len(inp.pool()[0]))
    res, _, _ = attack_store.load_parts(src.dir, n, a.batch)
    moved = adaptive.evaluate(inp, model, metric, res.x_adv[:m], m)
    sr_wb = _sr(read_json(run.record, "adaptive record"), m)
    return [_check("transfer", _sr(moved, m) <= sr_wb + 1 / m + 1e-9,
                   f"ε {run.eps:g}: {paper_ref.label(GRADIENT_ATTACK)} images made on {sources[0]} fool this model "
                   f"and its detector on {100 * _sr(moved, m):.0f} %, white-box on it {100 * sr_wb:.0f} %",
                   sr=_sr(moved, m), sr_whitebox=sr_wb)]


def run_checks(inp: Inputs, model: str) -> None:
    write_record(inp.layout.sanity_path(model), {"model": model, "checks": checks(inp, model)})
