"""Adversarial training (protocol §19): the adversarial batch of each training step, and the TRADES loss.

**PGD-AT** (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks") trains on the
saddle point problem of their eq. (2.1),

    min_θ ρ(θ),   ρ(θ) = E_(x,y) [ max_{δ ∈ S} L(θ, x + δ, y) ],   S = {δ : ‖δ‖ ≤ ε},

the inner maximum approximated by PGD from a uniform random point of the ε-ball (their §2.1 and §3): the
registry's PGD (:mod:`rcedetect.attacks.pgd`), with the true labels and with L the training objective's own loss,
CE or, for an RCE model, L_RCE(Z(x'), y) = −R_yᵀ log softmax(Z(x')) of the raw logits (Pang et al. 2018, eq. 4):
the attack ascends the very loss that the update then descends.

**TRADES** (Zhang et al. 2019, "Theoretically principled trade-off between robustness and accuracy", §4 and their
Algorithm 1) minimises

    L(f(x), y) + β · max_{x' ∈ B(x, ε)} KL(f(x) ‖ f(x')),

the maximum approximated by sign-gradient PGD on the KL from x + 0.001·N(0, I) (their reference code's start,
here projected onto the ball and clipped to [0, 1]). f is the model's predictive distribution: softmax(Z) for CE
and, for RCE, the *reversed* F_R(x) = softmax(−Z) of Pang et al. §3.2, i.e. the softmax of the effective logits
in both cases. The KL between RCE's raw softmax(Z) would be defined as well, but that is the "reverse"
distribution that RCE pushes towards uniform over the wrong classes; the KL of F_R asks what the model predicts to
stay put, which is what TRADES' term means. L is the objective's loss, CE or RCE.

**Modes.** The attack runs with the network in eval mode (BatchNorm on its running statistics: the attack's
passes neither update them nor depend on the rest of the batch), the update in train mode, as TRADES' reference
code does; Madry et al.'s CIFAR-10 code crafts on its training-mode graph instead (batch statistics). The attack
calls the bare network, never a DistributedDataParallel wrapper (whose forward prepares a gradient reduction that
input-gradient passes never complete). Its randomness comes from a generator seeded by (seed, step), drawn for the
whole global batch of which each rank attacks its share, so a resumed run and N processes start from the points
an uninterrupted one-process run starts from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

from ..attacks import create
from ..attacks.base import seeded_generator
from ..attacks.engine import project, random_start, resolve_step_size, run_pgd
from ..models.losses import objective_loss
from .config import AdversarialSettings

#: TRADES' start: x + TRADES_START_STD · N(0, I) (Zhang et al.'s reference code)
TRADES_START_STD = 0.001


def attack_seed(seed: int, step: int) -> int:
    """The seed of the random start of step ``step`` (0-based) of a run seeded ``seed``: (seed, step) alone."""
    return int(seed) * 1_000_000_007 + int(step) + 1


def objective_loss_fn(objective: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-example training loss of ``objective`` as a function of the *effective* logits e (what an attack
    sees): CE(e, y) for CE; for RCE, L_RCE(Z, y) of the raw logits Z = −e."""
    sign = -1.0 if objective == "rce" else 1.0
    return lambda logits, label: objective_loss(objective, sign * logits, label, reduction="none")


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p ‖ q) = Σ_j p_j (log p_j − log q_j) of p = softmax(p_logits), q = softmax(q_logits)."""
    log_p, log_q = F.log_softmax(p_logits.float(), dim=1), F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_loss(objective: str, raw_clean: torch.Tensor, raw_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> torch.Tensor:
    """TRADES' loss on RAW logits Z: L_obj(Z(x), y) + β · mean_n KL(f(x_n) ‖ f(x'_n)), f = softmax of the effective
    logits (Z for CE, −Z for RCE). The gradient flows through both terms and both passes, as in the reference."""
    sign = -1.0 if objective == "rce" else 1.0
    kl = kl_divergence(sign * raw_clean, sign * raw_adv)
    return objective_loss(objective, raw_clean, y) + beta * kl.mean()


def adversarial_batch(classifier, x: torch.Tensor, y: torch.Tensor, settings: AdversarialSettings, *, seed: int,
                      trades: bool = False, rows: slice = slice(None),
                      autocast: AbstractContextManager | None = None) -> torch.Tensor:
    """The adversarial examples of ``x[rows]``: ``x`` (images in [0, 1]) and ``y`` (true labels) are the step's
    whole batch, ``rows`` this process's share of it. PGD-AT: the registry's PGD ascending the objective's loss
    from a random point of the ε-ball; ``trades``: PGD ascending KL(f(x) ‖ f(x')) from x + 0.001·N(0, I). The
    start is drawn from a generator seeded by ``seed`` (:func:`attack_seed`) for the whole batch. The classifier
    is put in eval mode for the attack and back in its mode after; ``autocast`` (reusable) wraps its passes."""
    cast = autocast if autocast is not None else nullcontext()
    g = seeded_generator(seed)
    if trades:
        noise = TRADES_START_STD * torch.randn(x.shape, generator=g)
        start = project(x, x + noise.to(x.device, x.dtype), settings.eps, settings.norm).clamp(0.0, 1.0)
    else:
        start = random_start(x, settings.eps, settings.norm, g)  # what PGD(seed=seed) draws for x
    x, y = x[rows].detach(), y[rows]
    start = torch.empty_like(x).copy_(start[rows])  # in x's memory format (channels_last)
    was_training = classifier.training
    classifier.eval()
    try:
        if trades:
            with torch.no_grad(), cast:
                clean = classifier.logits(x).float()
            loss = lambda logits, _label: kl_divergence(clean, logits)
        else:
            loss = objective_loss_fn(classifier.objective)
        attack = create("pgd", eps=settings.eps, norm=settings.norm, steps=settings.steps,
                        step_size=settings.step_size, random_start=True, restarts=1, seed=seed, label="true",
                        loss=loss)

        def loss_fn(xa: torch.Tensor) -> torch.Tensor:
            with cast:
                logits = classifier.logits(xa)
            return attack.loss_of(logits.float(), y)

        return run_pgd(x, start, loss_fn, eps=attack.eps, norm=attack.norm, steps=attack.steps,
                       step_size=resolve_step_size(attack.step_size, attack.eps, attack.steps),
                       direction=attack.direction)
    finally:
        classifier.train(was_training)


class SectionTimer:
    """Seconds spent inside ``with timer:`` blocks, summed. On CUDA the blocks are timed by events, so the step
    never waits for the device; :meth:`seconds` reads them (waiting for the last). Elsewhere the wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total = 0.0
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start: float | torch.cuda.Event = 0.0

    def __enter__(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((self._start, end))
        else:
            self.total += time.perf_counter() - self._start

    def seconds(self) -> float:
        """The seconds of every block so far."""
        for start, end in self._pending:
            end.synchronize()
            self.total += start.elapsed_time(end) / 1000.0
        self._pending.clear()
        return self.total
