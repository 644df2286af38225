"""Targeted PGD on the defended K+1-class model: Carlini & Wagner's attack on a detector (2017, "Adversarial
examples are not easily detected: bypassing ten detection methods", the K+1-class construction) with the PGD steps
of Madry et al. 2018.

Per image and target t (one of the K real classes other than the clean prediction; ``targets`` of them, drawn
from a seeded permutation), PGD descends the cross-entropy of the defended model's K+1 logits
(:func:`rcedetect.defended.defend`) toward t::

    loss = CE(G(x*), t),   G = (Z_1 … Z_K, max_j Z_j + s · (score(x*) − T))

The one loss pulls t up and pushes the reject logit down together, so it needs no λ schedule: where the detector
already accepts, the reject logit stays below the top class and the step works on the class; where it rejects,
the reject logit is the largest competitor and the step works on the detector. An untargeted attack on G is
satisfied by the reject class, which is why the K+1 attack is targeted. Measured on the demo models it fools
images that :mod:`.pgd_detector` (class margin + λ · hinge) and :mod:`.orthogonal_pgd` miss (REPRODUCE.md,
"Third-party attacks on the defended model"). As in :mod:`.pgd_detector`, every iterate of every run (the start
included) is offered and per image the x* kept is misclassified AND accepted with the smallest distortion, else the
closest; the runs (targets × restarts) are rows of one batch, each step one forward+backward pass that also judges
the iterate it starts from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from .base import AttackResult, check_common, register
from .gradient import check_steps
from .pgd import check_norm, check_step_size, per_example, pgd_step, resolve_step_size, starts
from .pgd_detector import Best, begin, check_stop, check_term, evaluate, finish_adaptive, retired, status_of
from .variants import MAX_BATCH, check_max_batch, chunks, merge


def check_scale(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"reject_scale must be a finite number > 0, got {value!r}")
    return float(value)


def target_classes(label: torch.Tensor, num_classes: int, targets: int, seed: int) -> torch.Tensor:
    """(N, targets): per image the first ``targets`` of a seeded random order of the classes other than its label."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.rand(len(label), num_classes - 1, generator=g).argsort(1) + 1  # offsets 1 … K-1, shuffled
    return (label[:, None].cpu() + order[:, :targets]) % num_classes


@register("pgd_defended")
@dataclass(frozen=True)
class PGDDefended:
    """Targeted PGD on CE of the defended K+1 model (module docstring).

    Fields: ``eps``, ``detector`` (a detector term, e.g. score − T), ``norm`` ("linf" or "l2"), ``steps``,
    ``step_size`` (None = 2.5·eps/steps), ``targets`` (target classes per image, 1 … K−1), ``restarts``,
    ``random_start``, ``seed``, ``reject_scale`` (the slope s of the reject logit), ``keep_best``, ``max_batch``
    (images per pass: the runs, targets × restarts, go through the network as rows of one batch, cut into chunks
    of it), ``stop_on_success`` (as :class:`~.pgd_detector.PGDDetector`'s: an image's runs stop at its first
    success).
    Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*); ``target``: the target that produced x*.
    """

    eps: float
    detector: Any = field(repr=False, compare=False)
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    targets: int = 1
    restarts: int = 1
    random_start: bool = True
    seed: int = 0
    reject_scale: float = 1.0
    keep_best: bool = True
    max_batch: int = MAX_BATCH
    stop_on_success: bool = False

    def __post_init__(self):
        check_common(self)
        check_max_batch(self.max_batch)
        check_stop(self.stop_on_success, self.keep_best)
        check_term(self.detector)
        check_norm(self.norm)
        check_steps(self.steps)
        check_steps(self.restarts, "restarts")
        check_steps(self.targets, "targets")
        check_step_size(self.step_size)
        check_scale(self.reject_scale)

    def passes_per_image(self) -> float:
        # per run: one forward+backward per step (its forward also judges the iterate it starts from) and one
        # forward for the last iterate
        return (3.0 * self.steps + 1.0) * self.restarts * self.targets

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        from ..detectors.defended import defend

        x_in = x
        x, label, term = begin(self, classifier, x, y)
        k = classifier.num_classes
        if self.targets > k - 1:
            raise ConfigError(f"targets must be at most K - 1 = {k - 1} (the classes other than the label), "
                              f"got {self.targets}")
        model = defend(classifier, term, scale=self.reject_scale)
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        chosen = target_classes(label, k, self.targets, self.seed).to(x.device)
        run_starts = list(starts(x, self.eps, self.norm, self.restarts, self.seed, self.random_start))
        per_target = len(run_starts)
        best = Best(x)
        best.tags["target"] = torch.full((len(x),), math.nan, device=x.device)
        # the runs in the sequential order (target-major, start-minor) as rows of one batch (:mod:`.variants`)
        for rows in chunks(len(x), self.targets * per_target, self.max_batch):
            part = Best(rows.images(x))
            self._run_rows(model, rows.images(x), rows.images(label),
                           rows.gather(lambda v: chosen[:, v // per_target]),
                           rows.gather(lambda v: run_starts[v % per_target]), alpha, part,
                           rows.images(torch.arange(len(x), device=x.device)))
            merge(best, part, rows)
        its = self.steps * self.restarts * self.targets
        return finish_adaptive(classifier, term, x_in, x, best.x, label, self.norm, its, **best.tags)

    def _run_rows(self, model, x, label, target, start, alpha: float, best: Best, image: torch.Tensor) -> None:
        """``steps`` PGD steps descending CE(G(x*), target) on the rows of one chunk. Each step is one
        forward+backward pass whose forward also gives the status of the iterate it starts from, so x_t (x₀ the
        start) is offered to ``best`` from the pass of step t + 1 and only the last iterate needs a forward of its
        own (without ``keep_best`` only the last one is offered). With ``stop_on_success`` the rows of an ``image``
        leave the pass once one of them is a success."""
        x_adv = start.detach()
        tag = target.float()
        live = torch.ones(len(x), dtype=torch.bool, device=x.device)
        image = torch.unique(image, return_inverse=True)[1]
        for _ in range(self.steps):
            idx = live.nonzero().squeeze(1)
            if not len(idx):
                break
            xa = x_adv[idx].requires_grad_(True)
            with torch.enable_grad():
                logits, margin = model.margin(xa)
                loss = F.cross_entropy(model.assemble(logits, margin), target[idx], reduction="none")
                (g,) = torch.autograd.grad(loss.sum(), xa)
            grad = torch.zeros_like(x_adv)
            grad[idx] = g
            if self.keep_best:
                st = retired(status_of(logits, margin, label[idx], x[idx], x_adv[idx], self.norm), idx, len(x))
                best.update(x_adv, st, target=tag)
                if self.stop_on_success:
                    won = torch.zeros(len(x), dtype=torch.bool, device=x.device)
                    won[image[st.ok]] = True
                    live &= ~won[image]
            x_new = pgd_step(x, x_adv.detach(), grad, eps=self.eps, norm=self.norm, step_size=alpha, direction=-1.0)
            x_adv = torch.where(per_example(live, x_adv), x_new, x_adv)
        idx = live.nonzero().squeeze(1)
        if len(idx):
            st = evaluate(model.classifier, model.term, x[idx], x_adv[idx], label[idx], self.norm)
            best.update(x_adv, retired(st, idx, len(x)), target=tag)
