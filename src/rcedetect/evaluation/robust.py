"""Robust accuracy of a classifier under a cascade of attacks over an ε grid (no detector).

Robust accuracy at ε is the share of test images that the classifier gets right clean AND that no attack within
the ε-ball turns into a misclassified one (Madry et al. 2018; the figure RobustBench ranks models by: Croce et al.,
"RobustBench: a standardized adversarial robustness benchmark", NeurIPS 2021 Datasets and Benchmarks). An
attack gives an upper bound on it; the bound is tighter the stronger and the more diverse the attacks, which is
why AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020) runs several attacks one after another, each on the images that all before it
left correctly classified. :func:`cascade` does the same over an ε grid as well:

- the ε grid is taken in increasing order, and at each ε the attacks in the order given;
- an image that is misclassified clean is not robust at any ε and is never attacked;
- an image broken at ε' counts as broken at every ε ≥ ε' (its adversarial example lies in the larger ball too:
  the worst case over ε' ≤ ε of :func:`rcedetect.reproduce.adaptive.worst_case`) and is not attacked again;
- an attack's output is never trusted: it is put back into the ε-ball and into [0, 1] before it is classified, and
  an image counts as broken only where the classifier's own prediction on that image is not the true label.

So the robust accuracy at each ε is that of the union of all the attacks at every ε' ≤ ε, per image, for the cost of
attacking only what is still standing. What the cascade does not give is each attack's robust accuracy alone on
all images; each step records how many images it attacked and how many it broke. Intervals are Wilson score
intervals (:func:`rcedetect.stats.metrics.wilson_interval`) over the n evaluated images: the attack and its seeds are
fixed, so the uncertainty left is that of the n test images drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from ..attacks.engine import project
from ..stats.metrics import wilson_interval

#: ``broken_by`` of an image the classifier gets wrong clean
CLEAN = "clean"


class StepStore(Protocol):
    """Where the steps of a cascade are kept, so that a killed evaluation resumes at its first missing step."""

    def load(self, index: int, eps: float, attack: str) -> dict | None: ...

    def save(self, index: int, eps: float, attack: str, step: dict) -> None: ...


def checked_broken(classifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float,
                   norm: str = "linf") -> torch.Tensor:
    """True where ``x_adv``, put back into the ε-ball around ``x`` and into [0, 1], is misclassified (≠ ``y``)."""
    x_adv = project(x, x_adv.to(x.device, x.dtype), eps, norm).clamp(0.0, 1.0)
    with torch.no_grad():
        return classifier.logits(x_adv).argmax(1) != y


def attack_images(classifier, x: torch.Tensor, y: torch.Tensor, factory: Callable[[int], Any], batch: int, eps: float,
                  norm: str = "linf") -> torch.Tensor:
    """Run the attack ``factory(b)`` (b = batch index, for its seed) on ``x`` in batches of ``batch`` with the
    true labels ``y``; True where it broke the image (:func:`checked_broken`)."""
    device = classifier.device
    out = []
    for b, start in enumerate(range(0, len(x), batch)):
        xb, yb = x[start:start + batch].to(device), y[start:start + batch].to(device)
        res = factory(b)(classifier, xb, yb)
        out.append(checked_broken(classifier, xb, res.x_adv, yb, eps, norm).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def cascade(classifier, x: torch.Tensor, y: torch.Tensor, eps_grid: Sequence[float],
            attacks: Sequence[tuple[str, Callable[[float], Callable[[int], Any]]]], batch: int, *,
            norm: str = "linf", store: StepStore | None = None,
            on_step: Callable[[dict], None] | None = None) -> dict:
    """Robust accuracy of ``classifier`` on ``(x, y)`` at every ε of ``eps_grid`` under ``attacks`` (module
    docstring). ``attacks``: (name, make) pairs, ``make(eps)`` giving the factory ``factory(b) -> attack`` of
    batch b. ``store`` keeps each step (resume); ``on_step`` sees each step as it is done.

    Returns ``n_images``, ``eps`` (ascending), ``attacks`` (names, in order), per image ``clean_correct``,
    ``broken_at`` (the smallest ε at which an attack broke it, 0 for an image wrong clean, None if robust at
    every ε) and ``broken_by`` (that attack's name, ``"clean"``, or None), ``steps`` (per ε and attack:
    ``n_attacked``, ``n_broken``, ``seconds``) and ``robust`` (per ε: ``n_robust``, ``robust_accuracy`` and its
    Wilson 95 % ``interval``).
    """
    grid = sorted({float(e) for e in eps_grid})
    device = classifier.device
    with torch.no_grad():
        pred = torch.cat([classifier.logits(x[i:i + batch].to(device)).argmax(1).cpu()
                          for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0, dtype=torch.long)
    correct = pred == y.cpu()
    n = len(x)
    broken_at: list[float | None] = [None if c else 0.0 for c in correct.tolist()]
    broken_by: list[str | None] = [None if c else CLEAN for c in correct.tolist()]
    steps = []
    index = 0
    for eps in grid:
        for name, make in attacks:
            standing = [i for i in range(n) if broken_at[i] is None]
            step = store.load(index, eps, name) if store is not None else None
            if step is None or step.get("indices") != standing:
                t0 = time.perf_counter()
                idx = torch.tensor(standing, dtype=torch.long)
                hit = (attack_images(classifier, x[idx], y[idx], make(eps), batch, eps, norm) if standing
                       else torch.zeros(0, dtype=torch.bool))
                step = {"eps": eps, "attack": name, "indices": standing, "broken": hit.tolist(),
                        "seconds": round(time.perf_counter() - t0, 3)}
                if store is not None:
                    store.save(index, eps, name, step)
            for i, b in zip(step["indices"], step["broken"]):
                if b:
                    broken_at[i], broken_by[i] = eps, name
            summary = {"eps": eps, "attack": name, "n_attacked": len(step["indices"]),
                       "n_broken": int(sum(step["broken"])), "seconds": step["seconds"]}
            steps.append(summary)
            if on_step is not None:
                on_step(summary)
            index += 1
    return {"n_images": n, "eps": grid, "attacks": [name for name, _ in attacks],
            "clean_correct": correct.tolist(), "broken_at": broken_at, "broken_by": broken_by, "steps": steps,
            "robust": [robust_at(broken_at, eps) for eps in grid]}


def robust_at(broken_at: Sequence[float | None], eps: float) -> dict:
    """Robust accuracy at ``eps`` from the per-image ``broken_at`` of :func:`cascade`, with its Wilson interval."""
    n = len(broken_at)
    k = sum(1 for b in broken_at if b is None or b > eps * (1 + 1e-9))
    lo, hi = wilson_interval(k, n)
    return {"eps": eps, "n_images": n, "n_robust": k, "robust_accuracy": k / n if n else None, "interval": [lo, hi]}
