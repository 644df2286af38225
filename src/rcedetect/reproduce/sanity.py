"""Sanity checks of an adaptive evaluation (Carlini et al. 2019, "On evaluating adversarial robustness";
AutoAttack's flags, Croce & Hein 2020): each is run and reported; a failed one is a warning in the report.

On ``m`` (≤ 32) pool images, for the K-density detector (else the first metric) and ``pgd_detector``:

1. ``large_eps``: at ε = 1 (L∞; any image is reachable) the attack succeeds on ≥ 90 % of the images the
   classifier gets right when clean;
2. ``more_iterations``: 4× the steps at the same step size does not lower the success rate (the first steps are the
   shorter run's and the best iterate is kept, so it cannot, unless the attack is broken); both results come from
   one set of runs (``PGDDetector.at_steps``: each keeps its own best iterate, the numbers of two separate attacks);
3. ``lambda_zero``: λ = 0 gives exactly plain PGD on the classification margin (the same images, bit for bit);
4. ``gradient``: the detector term's gradient with respect to the input is finite and non-zero on every image;
5. ``gradient_free``: a random search on the same objective does not beat the gradient attacks at the same ε;
6. ``transfer`` (RCE models, when a CE model is evaluated too): the CE model's adversarial images, scored on
   this model, do not beat the white-box attack on it.
"""

from __future__ import annotations

import torch

from .. import attacks
from ..core.io import read_json
from ..evaluation import attack_store, detector_sanity
from ..evaluation.detector_sanity import check, lambda_zero, term_gradients
from . import adaptive
from .inputs import Inputs
from .steps import write_record

GRADIENT_ATTACK = "pgd_detector"
GRADIENT_FREE = "random_search_detector"
SAMPLE = 32


# -- the verdicts: pure functions of what was measured (tests drive each one to fail) ---------------------------
def large_eps(fooled: list[bool], correct: list[bool]) -> dict:
    """At ε = 1 the attack must fool ≥ 90 % of the images the classifier gets right when clean (an image it
    already gets wrong cannot be fooled; counting it would cap the rate at the clean accuracy)."""
    k = sum(bool(f) and bool(c) for f, c in zip(fooled, correct))
    return detector_sanity.large_eps(k, sum(map(bool, correct)), 1.0)


def gradient(grads: torch.Tensor, metric: str) -> dict:
    return detector_sanity.gradient(grads, f"the {metric} detector term")


def monotone_eps(worst: list[dict], metric: str) -> dict:
    """The attacks' own success (union at exactly ε) must not fall as ε grows (Carlini et al. 2019: a larger budget
    can only help): the card's check per model and norm, on the images fooled at exactly ε."""
    mine = [w for w in worst if w["metric"] == metric and w["sr_at_eps_only"] is not None]
    drops = []
    for key in sorted({(w["model"], w["norm"]) for w in mine}):
        pts = [w for w in mine if (w["model"], w["norm"]) == key]
        c = detector_sanity.monotone_eps([(w["eps"], round(w["sr_at_eps_only"] * w["n_clean_correct"])) for w in pts],
                                         max(w["n_clean_correct"] for w in pts))  # images (rates are stored rounded)
        if c["passed"] is False:
            drops.append(f"{key[0]}: " + c["detail"].removeprefix("the attacks weaken as ε grows: "))
    return check("monotone_eps", not drops, f"the attacks on the {metric} detector weaken as ε grows: "
                 + "; ".join(drops) if drops else f"the attacks on the {metric} detector never weaken as ε grows")


def transfer(sr_transfer: float, sr_whitebox: float, m: int, eps: float, source: str) -> dict:
    return check("transfer", sr_transfer <= sr_whitebox + 1 / m + 1e-9,
                  f"ε {eps:g}: {GRADIENT_ATTACK} images made on {source} fool this model and its detector on "
                  f"{100 * sr_transfer:.0f} %, white-box on it {100 * sr_whitebox:.0f} %",
                  sr=sr_transfer, sr_whitebox=sr_whitebox)


# -- running them ----------------------------------------------------------------------------------------------
def _run(inp: Inputs, model: str, metric: str, name: str, settings: dict, eps: float, m: int, at_steps=None):
    """One attack on the first ``m`` pool images against ``metric``'s calibrated threshold (not cached); with
    ``at_steps``, its results stopped after each of those steps, from one set of runs (``PGDDetector.at_steps``)."""
    x, y, _ = inp.pool()
    spec = attacks.spec(name)
    kw = {**settings, "seed": inp.plan.experiment.seed} if spec.seeded else dict(settings)
    if "detector" in spec.fields:
        kw["detector"] = adaptive.term(inp, model, metric)
    attack = spec.create(eps=eps, **kw)
    if at_steps is not None:
        return attack.at_steps(inp.classifier(model), x[:m], y[:m], at_steps)
    return attack(inp.classifier(model), x[:m], y[:m])


def _sr(rec: dict, m: int) -> float:
    return sum(rec["fooled"][:m]) / m


def checks(inp: Inputs, model: str) -> list[dict]:
    ad = inp.plan.adaptive
    if GRADIENT_ATTACK not in ad.attacks:
        return [check("setup", False, f"no {GRADIENT_ATTACK} in [adaptive.attacks]: the checks need it")]
    metric, a, m = _primary(inp), ad.attacks[GRADIENT_ATTACK], _sample(inp)
    mid = sorted(a.eps)[len(a.eps) // 2]

    def fooled(x_adv) -> int:
        return sum(adaptive.evaluate(inp, model, metric, x_adv, m)["fooled"][:m])

    steps = int(a.settings.get("steps", attacks.spec(GRADIENT_ATTACK).fields["steps"].default))
    same_step = {**a.settings, "step_size": a.settings.get("step_size") or 2.5 * mid / steps}
    plain = {"random_start": False, "restarts": 1, "steps": steps, "norm": a.settings.get("norm", "linf")}
    best = max((sum(read_json(r.record, "adaptive record")["fooled"][:m]), name) for name in ad.attacks
               if metric in adaptive.metrics_of(inp, name)
               for r in inp.layout.adaptive_runs(model, metric, name) if r.eps == mid)
    # the run of `steps` steps is the first `steps` steps of the 4× run (same starts and step size): one set of
    # runs gives both, each with its own best iterate, exactly as two attacks would
    short, long = _run(inp, model, metric, GRADIENT_ATTACK, {**same_step, "steps": 4 * steps}, mid, m,
                       at_steps=(steps, 4 * steps))
    large, live = _cheap(inp, model, metric, m)
    more = detector_sanity.more_iterations(fooled(short.x_adv), fooled(long.x_adv), steps, 4 * steps, m)
    out = [large, {**more, "eps": mid},
           lambda_zero(_run(inp, model, metric, GRADIENT_ATTACK, {**plain, "lambdas": [0.0], "keep_best": False},
                            mid, m).x_adv,
                       _run(inp, model, metric, "pgd", {**plain, "loss": "margin"}, mid, m).x_adv),
           live,
           {**detector_sanity.gradient_free(fooled(_run(inp, model, metric, GRADIENT_FREE, {}, mid, m).x_adv), best[0],
                                            m, GRADIENT_FREE, best[1]), "eps": mid}]
    run = next(r for r in inp.layout.adaptive_runs(model, metric, GRADIENT_ATTACK) if r.eps == mid)
    return out + _transfer_check(inp, model, metric, run, m)


def _transfer_check(inp: Inputs, model: str, metric: str, run, m: int) -> list[dict]:
    p = inp.plan
    if p.models[model].train.objective != "rce":
        return []
    sources = [s for s in p.mains if p.models[s].train.objective == "ce"]
    if not sources:
        return []
    src = next(r for r in inp.layout.adaptive_runs(sources[0], metric, GRADIENT_ATTACK) if r.eps == run.eps)
    a = p.adaptive.attacks[GRADIENT_ATTACK]
    n = min(a.images, len(inp.pool()[0]))
    res, _, _ = attack_store.load_parts(src.dir, n, a.batch)
    moved = adaptive.evaluate(inp, model, metric, res.x_adv[:m], m)
    return [transfer(_sr(moved, m), _sr(read_json(run.record, "adaptive record"), m), m, run.eps, sources[0])]


def run_checks(inp: Inputs, model: str) -> None:
    """The full checks against the primary detector (K-density); against every other adaptive metric the cheap ones
    that catch a failing attack: success at ε = 1, a live gradient, no weakening as ε grows."""
    out = checks(inp, model)
    ad, primary = inp.plan.adaptive, _primary(inp)
    if GRADIENT_ATTACK in ad.attacks:
        worst = adaptive.worst_case([r for r in adaptive.records(inp) if r.model == model])
        for metric in ad.metrics:
            if metric != primary and metric in adaptive.metrics_of(inp, GRADIENT_ATTACK):
                out += [{**c, "metric": metric} for c in _cheap(inp, model, metric, _sample(inp))]
        for metric in ad.metrics:
            out.append({**monotone_eps(worst, metric), "metric": metric})
    for c in out:
        c.setdefault("metric", primary)
    write_record(inp.layout.sanity_path(model), {"model": model, "checks": out})


def _cheap(inp: Inputs, model: str, metric: str, m: int) -> list[dict]:
    """The checks on the first ``m`` pool images that catch a failing attack cheaply: :func:`large_eps` of the
    gradient attack at ε = 1, and :func:`gradient` of ``metric``'s detector term."""
    settings = inp.plan.adaptive.attacks[GRADIENT_ATTACK].settings
    x_adv = _run(inp, model, metric, GRADIENT_ATTACK, settings, 1.0, m).x_adv
    correct = (inp.pool_bank(model, m).predictions == inp.pool()[1][:m]).tolist()
    return [large_eps(adaptive.evaluate(inp, model, metric, x_adv, m)["fooled"], correct),
            gradient(term_gradients(inp.classifier(model), adaptive.term(inp, model, metric),
                                    inp.pool()[0][:m]), metric)]


def _sample(inp: Inputs) -> int:
    """How many pool images the checks run on: at most :data:`SAMPLE`."""
    return min(SAMPLE, inp.plan.adaptive.attacks[GRADIENT_ATTACK].images, len(inp.pool()[0]))


def _primary(inp: Inputs) -> str:
    ad = inp.plan.adaptive
    return "kd" if "kd" in ad.metrics else ad.metrics[0]
