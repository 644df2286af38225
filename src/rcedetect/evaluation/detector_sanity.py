"""The sanity checks of a detector card (Carlini et al. 2019, "On evaluating adversarial robustness"; Tramèr et al.
2020, "On adaptive attacks to adversarial example defenses"; Bryniarski et al. ICLR 2022): each is a pure verdict on
what was measured, a dict ``{"check", "passed", "detail", ...}`` with ``passed`` None where it could not run.

1. ``large_eps``: an unbounded budget (L∞ ε = 1: any image is reachable) fools ≥ 90 % of the sample;
2. ``more_iterations``: the full number of steps does not fool fewer images than a quarter of them (one set of runs,
   ``PGDDetector.at_steps``: each horizon keeps its own best iterate, so fewer means a broken attack);
3. ``lambda_zero``: λ = 0 gives plain PGD on the classification margin, bit for bit;
4. ``gradient``: the detector term's input gradient is finite and non-zero on every image of the sample;
5. ``monotone_eps``: the attacks at exactly ε do not weaken (by more than one image) as ε grows;
6. ``gradient_free``: the gradient-free attack does not beat the best gradient attack (by more than one image).

:func:`run` measures them on a card's evaluation, reusing its attacks' runs. The same checks as ``rce reproduce``'s
(:mod:`rcedetect.reproduce.sanity`, which the evaluation layer may not import), on a detector given as a term.
"""

from __future__ import annotations

import math

import torch

from ..detectors.base import observe
from . import detector_runs as runs
from . import detector_suite as suites


def check(name: str, passed: bool | None, detail: str, **values) -> dict:
    return {"check": name, "passed": None if passed is None else bool(passed), "detail": detail, **values}


def large_eps(k: int, m: int, eps: float) -> dict:
    if m == 0:
        return check("large_eps", None, "no image of the sample is classified correctly when clean")
    sr = k / m
    return check("large_eps", sr >= 0.9, f"at ε = {eps:g} (every image reachable) the attack fools {k} of {m} "
                 f"({100 * sr:.0f} %; expected ≥ 90 %)", sr=sr)


def more_iterations(k_short: int, k_long: int, short: int, long: int, m: int) -> dict:
    return check("more_iterations", k_long >= k_short, f"{short} steps fool {k_short} of {m}, {long} steps "
                 f"{k_long}", fooled_short=k_short, fooled_long=k_long)


def lambda_zero(x_zero: torch.Tensor, x_pgd: torch.Tensor) -> dict:
    same = torch.equal(x_zero, x_pgd)
    return check("lambda_zero", same, "λ = 0 gives exactly plain PGD on the margin" if same
                 else "λ = 0 does NOT reproduce plain PGD: the combined loss is mis-wired")


def gradient(grads: torch.Tensor, term: str = "the detector term") -> dict:
    norms = grads.flatten(1).norm(dim=1)
    ok = torch.isfinite(norms) & (norms > 0)
    return check("gradient", bool(ok.all()) and len(ok) > 0, f"{term}'s input gradient is finite and non-zero on "
                 f"{int(ok.sum())} of {len(ok)} images", share=float(ok.float().mean()) if len(ok) else 0.0)


def gradient_free(k_free: int, k_gradient: int, m: int, free: str, best: str) -> dict:
    return check("gradient_free", k_free <= k_gradient + 1, f"{free} fools {k_free} of {m}, the best gradient "
                 f"attack ({best}) {k_gradient}", fooled_free=k_free, fooled_gradient=k_gradient)


def monotone_eps(points: list[tuple[float, int]], n: int) -> dict:
    """``points``: (ε, images fooled by the attacks at exactly ε), any order."""
    if len(points) < 2:
        return check("monotone_eps", None, "one ε only")
    drops, best = [], None
    for eps, k in sorted(points):
        if best is not None and k < best[1] - 1:
            drops.append(f"{best[1]} of {n} at ε {best[0]:g} but {k} at ε {eps:g}")
        if best is None or k > best[1]:
            best = (eps, k)
    return check("monotone_eps", not drops, "the attacks weaken as ε grows: " + "; ".join(drops) if drops else
                 "the attacks never weaken as ε grows")


def term_gradients(classifier, term, x: torch.Tensor) -> torch.Tensor:
    """∂ margin / ∂x of a detector term at images ``x`` (the class checked is the predicted one); zeros where the
    margin does not depend on x."""
    x = x.to(classifier.device).detach().requires_grad_(True)
    with torch.enable_grad():
        view = observe(classifier, x, term)
        margin = term.margin(view, view.logits.argmax(1))
        if not margin.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(margin.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def gradient_status(grads: torch.Tensor) -> str:
    """"ok" (finite, non-zero everywhere), "partial" (zero on some images), "none" (zero everywhere: an argmax,
    a rounding, a step) or "non_finite" (NaN / inf somewhere: a gradient step would poison the images)."""
    norms = grads.flatten(1).norm(dim=1)
    if not bool(torch.isfinite(grads).all()):
        return "non_finite"
    if len(norms) == 0 or not bool((norms > 0).any()):
        return "none"
    return "ok" if bool((norms > 0).all()) else "partial"


def run(clf, term, x, y, correct, grads, records, plan, norm, seed, batch_size, m, steps, status) -> list[dict]:
    """The checks of a card's evaluation on its first ``m`` images, reusing the attacks' ``records`` ({ε: {attack:
    record}}, :func:`.detector_card.evaluate_detector`); with a non-finite gradient the checks that would step along
    it are not run (their images would be NaN)."""
    out, mid = [gradient(grads)], sorted(records)[len(records) // 2]
    xs, ys, cc_m = x[:m], y[:m], correct[:m]
    n_m, n = int(cc_m.sum()), int(correct.sum())
    pd_kw = dict(plan.get("pgd_detector") or suites.suite(["pgd_detector"], norm, clf.num_classes, False, None,
                                                          steps)["pgd_detector"])

    def attack(name: str, kw: dict, eps: float):
        return runs.build(name, kw, eps, seed, term)(0)

    def n_fooled(x_adv, eps) -> int:
        return int((runs.fooled(clf, term.metric, term.threshold, xs, x_adv, ys, norm, eps, batch_size) & cc_m).sum())

    if status == "non_finite":
        why = "not run: the detector's input gradient is not finite"
        out += [check("large_eps", None, why), check("more_iterations", None, why)]
    else:
        # 1. an unbounded budget succeeds (from the clean image and a guided start: at ε = 1 it is another class's
        #    image; each image stops at its first success, so this costs little unless the attacks fail)
        big = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
        kw = {**pd_kw, "restarts": 1, "random_start": False, "guided_starts": 1, "stop_on_success": True}
        out.append(large_eps(n_fooled(attack("pgd_detector", kw, big)(clf, xs, ys).x_adv, big), n_m, big))
        # 2. more steps never help less: the suite's own run gave both horizons
        rec = records[mid].get("pgd_detector")
        if rec is not None and len(rec["fooled_at"]) == 2:
            (h1, f1), (h2, f2) = sorted(rec["fooled_at"].items())
            out.append(more_iterations(int((f1 & correct).sum()), int((f2 & correct).sum()), h1, h2, n))
        else:
            s = int(pd_kw.get("steps", 100))
            short, long = attack("pgd_detector", {**pd_kw, "steps": 4 * s}, mid).at_steps(clf, xs, ys, (s, 4 * s))
            out.append(more_iterations(n_fooled(short.x_adv, mid), n_fooled(long.x_adv, mid), s, 4 * s, n_m))
    # 3. λ = 0 is plain PGD on the margin
    plain = {"random_start": False, "restarts": 1, "steps": min(10, int(pd_kw.get("steps", 100))), "norm": norm}
    x0 = attack("pgd_detector", {**plain, "lambdas": [0.0], "keep_best": False}, mid)(clf, xs, ys)
    x1 = attack("pgd", {**plain, "loss": "margin"}, mid)(clf, xs, ys)
    out.append(lambda_zero(x0.x_adv, x1.x_adv))
    # 4. monotone in ε
    out.append(monotone_eps([(e, int((torch.stack([r["fooled"] for r in recs.values()]).any(0) & correct).sum()))
                             for e, recs in records.items()], n))
    # 5. the gradient-free attack is not stronger than the gradient attacks
    at_mid = records[mid]
    grad_names = [k for k in at_mid if k not in suites.GRADIENT_FREE]
    frees = {k: int((at_mid[k]["fooled"] & correct).sum()) for k in at_mid if k in suites.GRADIENT_FREE}
    free = suites.gradient_free_for(norm)
    if not grad_names:
        out.append(check("gradient_free", None, "no gradient attack ran"))
    elif not frees and not free:
        out.append(check("gradient_free", None, f"no gradient-free attack for {norm} (install torchattacks)"))
    else:
        rows = slice(None) if frees else slice(0, m)
        if not frees:  # none in the suite: the first one available, on the sample
            kw = suites.suite([free[0]], norm, clf.num_classes, False, None, steps)[free[0]]
            frees, n = {free[0]: n_fooled(attack(free[0], kw, mid)(clf, xs, ys).x_adv, mid)}, n_m
        grads_k = {k: int((at_mid[k]["fooled"][rows] & correct[rows]).sum()) for k in grad_names}
        free_best, best = max(frees, key=frees.get), max(grads_k, key=grads_k.get)
        out.append(gradient_free(frees[free_best], grads_k[best], n, free_best, best))
    return out
