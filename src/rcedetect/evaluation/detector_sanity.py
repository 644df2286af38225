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

The same checks as ``rce reproduce``'s (:mod:`rcedetect.reproduce.sanity`, which the evaluation layer may not
import), on a detector given as a term.
"""

from __future__ import annotations

import torch

from ..detectors.base import observe


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
