"""The PGD core of every gradient attack here (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks"): starts, steps, projection, the runs as rows of one batch, stop on success, the best iterate.

One step, per example (the image flattened; Π_ε onto the ε-ball around x, then clipped to [0, 1], as foolbox)::

    L∞:  x* ← clip(x + Π_ε(x* + d·α·sign ∇ₓL − x))        L2:  x* ← clip(x + Π_ε(x* + d·α·∇ₓL / ‖∇ₓL‖₂ − x))

d = +1 ascends the attack's loss L, −1 descends it; α = 2.5·ε/steps by default; ε on the [0, 1] scale for both
norms (for L2 the plain ‖x* − x‖₂). Starts: x, or uniform points of the ball drawn in order from one CPU generator
seeded by ``seed`` (restart r starts at the same point in every attack).

An attack is its loss and its verdict. :meth:`PGDAttack.search` runs its runs (options such as λ or targets × the
starts) as rows of one batch, variant-major (row v·N + n: image n in variant v), in chunks of ``max_batch`` rows;
:meth:`PGDAttack.descend` steps a chunk and offers each iterate x_t (x₀ the start) to a :class:`Best`, judged by the
forward of the pass that computes its step (the last iterate by one more forward). :class:`Best` keeps per image a
success with the smallest distortion, else the smallest gap; chunks are offered in the variants' order, so the image
kept is the one the runs taken one after the other keep (up to the float rounding of a larger batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..core.errors import ConfigError
from ..core.settings import setting
from .base import Attack, seeded_generator

NORMS = ("linf", "l2")
#: guards divisions by gradient / perturbation norms
TINY = 1e-12
#: images per pass by default: bounded memory on a GPU (a few GiB for CIFAR-sized ResNets) and on a CPU
MAX_BATCH = 4096


def resolve_step_size(step_size: float | None, eps: float, steps: int) -> float:
    """The step α: ``step_size`` or Madry et al.'s 2.5·ε/steps."""
    return 2.5 * eps / steps if step_size is None else float(step_size)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) → (N, 1, 1, ...) to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of the flattened tensor."""
    return t.flatten(1).norm(dim=1)


def distortion(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ‖x* − x‖ in the attack's norm, on the [0, 1] scale."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x + Π_ε(x* − x): the perturbation clamped (L∞) or rescaled onto the L2 ball (per example)."""
    delta = x_adv - x
    if norm == "linf":
        return x + torch.clamp(delta, -eps, eps)
    factor = (eps / flat_norm(delta).clamp_min(TINY)).clamp(max=1.0)
    return x + delta * per_example(factor, delta)


def pgd_step(x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, *, eps: float, norm: str,
             step_size: float, direction: float) -> torch.Tensor:
    """One PGD step along ``direction`` · ``grad`` (+1 ascends, −1 descends), projected, then clipped to [0, 1]."""
    if norm == "linf":
        step = grad.sign()
    else:
        step = grad / per_example(flat_norm(grad).clamp_min(TINY), grad)
    x_new = x_adv + direction * (step_size * step)
    return project(x, x_new, eps, norm).clamp(0.0, 1.0).detach()


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniform random point of the ε-ball around x (drawn on the CPU from ``generator``), clipped to [0, 1]."""
    if norm == "linf":
        delta = (2.0 * torch.rand(x.shape, generator=generator) - 1.0) * eps
    else:
        direction = torch.randn(x.shape, generator=generator)
        direction = direction / per_example(flat_norm(direction).clamp_min(TINY), direction)
        d = x[0].numel() if len(x) else 1
        radius = eps * torch.rand(len(x), generator=generator).pow(1.0 / d)
        delta = direction * per_example(radius, direction)
    return (x + delta.to(x.device, x.dtype)).clamp(0.0, 1.0)


def starts(x: torch.Tensor, eps: float, norm: str, restarts: int, seed: int, random: bool):
    """The start of each restart: random points of the ε-ball drawn in order from one generator seeded by ``seed``,
    or x itself."""
    g = seeded_generator(seed)
    for _ in range(restarts):
        yield random_start(x, eps, norm, g) if random else x


def grad_of(fn, x_adv: torch.Tensor):
    """(∇ₓ Σ_n loss_n, aux) for ``fn(x) -> (per-example loss, aux)`` at ``x_adv``: summed, so each example's
    gradient ignores the rest of the batch."""
    xa = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, aux = fn(xa)
        (grad,) = torch.autograd.grad(loss.sum(), xa)
    return grad, aux


def run_pgd(x: torch.Tensor, start: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, eps: float,
            norm: str, steps: int, step_size: float, direction: float,
            on_iterate: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """``steps`` PGD steps on ``loss_fn`` (per-example losses) from ``start``, nothing else (adversarial training's
    inner loop); the final iterate. ``on_iterate(x_adv)`` sees every iterate after a step."""
    x_adv = start.detach()
    for _ in range(steps):
        grad, _ = grad_of(lambda xa: (loss_fn(xa), None), x_adv)
        x_adv = pgd_step(x, x_adv, grad, eps=eps, norm=norm, step_size=step_size, direction=direction)
        if on_iterate is not None:
            on_iterate(x_adv)
    return x_adv


class Chunk(NamedTuple):
    """A chunk's rows: their images and labels, which image each is, and its variant (option, start)."""

    x: torch.Tensor
    label: torch.Tensor
    image: torch.Tensor
    option: torch.Tensor
    run: torch.Tensor


class Verdict(NamedTuple):
    """Per row: ``ok`` (a success); ``dist`` ranks the successes, ``gap`` the others (smaller is better)."""

    ok: torch.Tensor
    dist: torch.Tensor
    gap: torch.Tensor


def retire(v, live: torch.Tensor):
    """The verdict ``v`` with the rows not ``live`` made no candidate (not ok, an infinite gap)."""
    if bool(live.all()):
        return v
    return Verdict(v.ok & live, v.dist.masked_fill(~live, 0.0), v.gap.masked_fill(~live, math.inf))


def on_live(fn):
    """A pass over all rows from ``fn(x_adv[idx], idx)`` (tensors of those rows, or tuples of them) computed on the
    live rows ``idx`` only; zeros elsewhere."""

    def full(x_adv: torch.Tensor, live: torch.Tensor):
        idx = live.nonzero().squeeze(1)

        def spread(t):
            if isinstance(t, tuple):
                return type(t)(*map(spread, t)) if hasattr(t, "_fields") else tuple(map(spread, t))
            return t.new_zeros((len(x_adv), *t.shape[1:])).index_put_((idx,), t)

        return spread(fn(x_adv[idx], idx))

    return full


def passes(measure, c: Chunk):
    """(pass, judge) on chunk ``c`` of an attack given as ``measure(c, xa, idx) -> (per-example loss, verdict)`` at
    the images ``xa`` of the live rows ``idx``: the loss's gradient and the verdict from one pass; the verdict."""
    return (on_live(lambda xa, idx: grad_of(lambda v: measure(c, v, idx), xa)),
            on_live(torch.no_grad()(lambda xa, idx: measure(c, xa, idx)[1])))


class Best:
    """Per image, the best x* offered so far: ok with the smallest distortion, else the smallest gap; ties keep the
    earlier one. ``tags`` travel with the chosen image (``tag``: one, NaN until an image is taken)."""

    def __init__(self, x: torch.Tensor, tag: str | None = None):
        n = len(x)
        self.x = x.clone()
        self.ok = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.dist = torch.full((n,), math.inf, device=x.device)
        self.gap = torch.full((n,), math.inf, device=x.device)
        self.tags: dict[str, torch.Tensor] = {} if tag is None else {tag: torch.full((n,), math.nan, device=x.device)}

    def update(self, x_adv: torch.Tensor, st, **tags: torch.Tensor | float) -> torch.Tensor:
        return self.offer(x_adv, st.ok, st.dist, st.gap, **tags)

    def offer(self, x_adv: torch.Tensor, ok: torch.Tensor, dist: torch.Tensor, gap: torch.Tensor,
              rows: slice | torch.Tensor = slice(None), **tags: torch.Tensor | float) -> torch.Tensor:
        """:meth:`update` from the candidates' (ok, distortion, gap), for the images ``rows`` of the batch (a
        chunk's best rows, merged in order); returns which were taken."""
        cur_ok = self.ok[rows]
        take = (ok & (~cur_ok | (dist < self.dist[rows]))) | (~ok & ~cur_ok & (gap < self.gap[rows]))
        self.x[rows] = torch.where(per_example(take, x_adv), x_adv.detach(), self.x[rows])
        self.dist[rows] = torch.where(take, dist, self.dist[rows])
        self.gap[rows] = torch.where(take, gap, self.gap[rows])
        self.ok[rows] = cur_ok | (take & ok)
        for k, v in tags.items():
            v = torch.as_tensor(v, dtype=torch.float32 if isinstance(v, float) else None, device=take.device)
            if k not in self.tags:
                self.tags[k] = torch.full(self.ok.shape, math.nan, device=take.device, dtype=v.dtype)
            self.tags[k][rows] = torch.where(take, v, self.tags[k][rows])
        return take


@dataclass(frozen=True)
class PGDAttack(Attack):
    """The settings every PGD attack shares (module docstring): ``eps``, ``norm`` ("linf" or "l2"), ``steps``,
    ``step_size`` (None = 2.5·eps/steps), ``random_start``, ``restarts``, ``seed``, ``max_batch`` (images per
    pass), ``keep_best`` (every iterate of every run a candidate, the start included; else only the last ones) and
    ``stop_on_success`` (with ``keep_best``: an image's runs stop at the first step where one of them succeeds,
    with the x* kept the best success of that step)."""

    eps: float
    norm: str = setting("linf", choices=NORMS)
    steps: int = setting(100, lo=1)
    step_size: float | None = setting(None, lo=0, hint=" (or None: 2.5·eps/steps)")
    random_start: bool = True
    restarts: int = setting(1, lo=1)
    seed: int = 0
    max_batch: int = setting(MAX_BATCH, lo=1, hint=" (images per forward/backward pass)")
    keep_best: bool = True
    stop_on_success: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.stop_on_success and not self.keep_best:
            raise ConfigError("stop_on_success needs keep_best (without it only the final iterate counts, so a run "
                              "cannot stop early)")

    def search(self, x: torch.Tensor, label: torch.Tensor, make, *, options: int = 1,
               guided: torch.Tensor | None = None, horizons: tuple[int, ...] = (), tag: str | None = None,
               direction: float = -1.0) -> dict[int, Best]:
        """Per horizon h (default ``steps``) the images' :class:`Best` of the iterates x₀…x_h of every run: the
        ``options`` × the starts (the seeded ones, then ``guided``), option-major, as rows of one batch.
        ``make(chunk) -> (pass_, judge, tags)`` is the attack on a :class:`Chunk` (see :meth:`descend`)."""
        horizons = horizons or (self.steps,)
        run_starts = [*starts(x, self.eps, self.norm, self.restarts, self.seed, self.random_start),
                      *([] if guided is None else [guided])]
        n, s = len(x), len(run_starts)
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        bests = {h: Best(x, tag) for h in horizons}
        for lo in range(0, n * options * s, self.max_batch):  # row v·N + n: image n in variant v = option·S + start
            r = torch.arange(lo, min(lo + self.max_batch, n * options * s), device=x.device)
            v, image = r // n, r % n
            c = Chunk(x[image], label[image], image, v // s, v % s)
            parts = {h: Best(c.x) for h in horizons}
            variants = v.unique().tolist()
            start = torch.cat([run_starts[u % s][image[v == u]] for u in variants])
            self.descend(c.x, start, image, parts, alpha, direction, *make(c))
            for u in variants:  # the chunk's best rows offered to the images', variant by variant in order
                seg = v == u
                for h, p in parts.items():
                    bests[h].offer(p.x[seg], p.ok[seg], p.dist[seg], p.gap[seg], rows=image[seg],
                                   **{k: t[seg] for k, t in p.tags.items()})
        return bests

    def descend(self, x, start, image, bests: dict[int, Best], alpha: float, direction: float, pass_, judge,
                tags=None) -> None:
        """PGD steps from ``start`` on the rows of one chunk, up to the longest horizon of ``bests``.

        ``pass_(x_adv, live) -> (∇ₓ loss, verdict)``: the step's forward+backward pass at x_t, its forward judging
        x_t (a verdict, or None for ``judge(x_adv, live)``, a forward of its own, to do it); rows not ``live`` may
        hold anything. x_t goes to ``bests[h]`` for h ≥ t with ``keep_best`` (else for h = t), x_T after the last
        step; ``tags(t)``: the tags that go with it. With ``stop_on_success`` the rows of an ``image`` leave once
        one of them is a success: they are neither computed nor offered again."""
        live = torch.ones(len(x), dtype=torch.bool, device=x.device)
        tags = tags or (lambda t: {})
        x_adv, last = start.detach(), max(bests)
        for t in range(last):
            if not bool(live.any()):
                break
            grad, verdict = pass_(x_adv, live)
            takers = [b for h, b in bests.items() if (self.keep_best and h >= t) or (t > 0 and h == t)]
            if takers:
                verdict = retire(verdict if verdict is not None else judge(x_adv, live), live)
                for best in takers:
                    best.update(x_adv, verdict, **tags(t))
                if self.stop_on_success:  # every row of an image with a success leaves
                    live &= ~torch.isin(image, image[verdict.ok])
            x_new = pgd_step(x, x_adv, grad, eps=self.eps, norm=self.norm, step_size=alpha, direction=direction)
            x_adv = torch.where(per_example(live, x_adv), x_new, x_adv)
        if bool(live.any()):
            bests[last].update(x_adv, retire(judge(x_adv, live), live), **tags(last))
