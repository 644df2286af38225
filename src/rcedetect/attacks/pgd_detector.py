"""PGD against the classifier AND the detector: the adaptive attack on a combined loss (Carlini & Wagner 2017,
"Adversarial examples are not easily detected: bypassing ten detection methods"; PGD of Madry et al. 2018).

Per example, with y the clean prediction, Z the effective logits and z the final hidden vector::

    loss = (Z_y − max_{j≠y} Z_j) + λ · max(0, margin_det(z, Z, argmax Z))

descended with the PGD steps of :mod:`.pgd` (L∞ or L2, projection then clipping). ``margin_det`` is the detector
term's ``margin`` (> 0 where the deployed detector rejects x*, ≤ 0 where it accepts it) at the class the
classifier currently predicts — the class the deployed detector checks. λ is searched per example over the
schedule ``lambdas`` (each λ × ``restarts`` runs from the same seeded starts); per image the returned x* is,
among every iterate of all runs, the starts included (``keep_best``; else only the final iterates), a
misclassified AND accepted one
with the smallest distortion (in the attack's norm), else the one closest to that, i.e. with the smallest
max(0, class margin) + max(0, margin_det).

``guided_starts`` adds runs that start from the nearest image of the batch that the classifier puts in another
class, projected into the ε-ball (x + Π_ε(x_g − x)): a point the detector already accepts when ε is large (at ε = 1
it IS that image), so the attack does not have to find an accepted region from a random point far off the data —
where a detector such as Mahalanobis can leave no usable gradient (Carlini et al. 2019 ask that an unbounded attack
succeed; random starts alone fail that check against some detectors). The start itself is a candidate: at ε = 1 a
guided start that the detector accepts is already a success, whatever the steps then do.

λ = 0 leaves the detector out of the loss: with ``keep_best=False`` the run is then exactly ``pgd(loss="margin")``
(the same step code).

Cost: all runs (every λ × start) go through the network together, as rows of one batch of at most ``max_batch``
images (:mod:`.variants`; the image kept is the one the runs taken one after the other keep, up to the float
rounding of a larger batch), and each step is ONE forward+backward pass: its forward also gives the status
(class margin, detector margin) of the iterate it starts from, so iterate x_t is judged by the pass of step t + 1
and only the last one needs a forward of its own (:func:`loss_and_status`). The runs of one start with different
λ take the same steps while the detector accepts their common iterate (the λ term has no gradient there), so they
go through the network as one row until it rejects it: the results are those of separate runs.

The helpers here (:func:`check_term`, :func:`place_term`, :class:`Status`, :class:`Best`) serve the other
adaptive attacks of this package.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError
from ..detectors.base import View, observe
from .base import AttackResult, check_common, prepare, register
from .gradient import check_steps, finish, predict
from .pgd import (
    check_norm,
    check_step_size,
    class_margin,
    distortion,
    margin_loss,
    per_example,
    pgd_step,
    project,
    resolve_step_size,
    starts,
)
from .variants import MAX_BATCH, check_max_batch, chunks, merge


def check_term(detector) -> None:
    """A detector term is any object with ``margin(view, classes)`` (and ``layers``, the layers it reads)."""
    if detector is None or not callable(getattr(detector, "margin", None)):
        raise ConfigError("detector must be a detector term with margin(view, classes) "
                          "(e.g. rcedetect.detectors.Detector(...).attack_term())")


def place_term(detector, classifier):
    """The term on the classifier's device, after checking that it is for the classifier's classes."""
    term_classes = getattr(detector, "num_classes", None)
    if term_classes is not None and term_classes != classifier.num_classes:
        raise ConfigError(f"the detector term is for {term_classes} classes but the classifier has "
                          f"{classifier.num_classes}")
    return detector.to(classifier.device) if callable(getattr(detector, "to", None)) else detector


def check_lambda(value, name: str = "lambda") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def detector_margin(term, view: View) -> torch.Tensor:
    """The term's margin at the currently predicted class (the class the deployed detector checks)."""
    return term.margin(view, view.logits.argmax(1).detach())


def combined_loss(classifier, term, label: torch.Tensor, lam: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-example class margin + λ · max(0, margin_det); for λ = 0 exactly :func:`.pgd.margin_loss`."""
    if lam == 0:
        return margin_loss(classifier, label)

    def loss(xa: torch.Tensor) -> torch.Tensor:
        view = observe(classifier, xa, term)
        return class_margin(view.logits, label) + lam * detector_margin(term, view).clamp_min(0)

    return loss


@dataclass
class Status:
    """Where images stand (per example, detached): the class margin, the detector margin, the distortion."""

    class_margin: torch.Tensor
    det_margin: torch.Tensor
    misclassified: torch.Tensor
    dist: torch.Tensor

    @property
    def accepted(self) -> torch.Tensor:
        return self.det_margin <= 0

    @property
    def ok(self) -> torch.Tensor:
        return self.misclassified & self.accepted

    @property
    def gap(self) -> torch.Tensor:
        """max(0, class margin) + max(0, detector margin): 0 once both goals are met."""
        return self.class_margin.clamp_min(0) + self.det_margin.clamp_min(0)


def status_of(logits, det, label, x, x_adv, norm: str) -> Status:
    logits, det = logits.detach(), det.detach()
    return Status(class_margin(logits, label), det, logits.argmax(1) != label, distortion(x, x_adv.detach(), norm))


def begin(attack, classifier, x: torch.Tensor, y: torch.Tensor | None):
    """(prepared x, its clean prediction, the detector term on the classifier's device): how every attack on a
    detector starts."""
    x, _ = prepare(classifier, x, y, need_label=False)
    return x, predict(classifier, x), place_term(attack.detector, classifier)


@torch.no_grad()
def evaluate(classifier, term, x: torch.Tensor, x_adv: torch.Tensor, label: torch.Tensor, norm: str) -> Status:
    view = observe(classifier, x_adv, term)
    return status_of(view.logits, detector_margin(term, view), label, x, x_adv, norm)


def loss_and_status(classifier, term, x: torch.Tensor, xa: torch.Tensor, label: torch.Tensor, lam: torch.Tensor,
                    norm: str, detector_grad: bool = True) -> tuple[torch.Tensor, Status]:
    """(class margin + λ · max(0, margin_det) per example at ``xa``, λ a tensor of one per example; the
    :class:`Status` of ``xa``) from ONE forward pass: the status :func:`evaluate` would give, read off the pass
    the gradient needs. Rows with λ = 0 get exactly the class margin's gradient (the detector's part adds zeros);
    ``detector_grad=False`` (every λ is 0) computes the detector margin outside the graph."""
    view = observe(classifier, xa, term)
    loss = class_margin(view.logits, label)
    if detector_grad:
        det = detector_margin(term, view)
        loss = loss + lam * det.clamp_min(0)
    else:
        with torch.no_grad():
            det = detector_margin(term, view)
    return loss, status_of(view.logits, det, label, x, xa, norm)


class Best:
    """Per image, the best x* offered so far: misclassified AND accepted with the smallest distortion, else the
    smallest gap (:attr:`Status.gap`); ties keep the earlier one. ``tags`` travel with the chosen image."""

    def __init__(self, x: torch.Tensor):
        n = len(x)
        self.x = x.clone()
        self.ok = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.dist = torch.full((n,), math.inf, device=x.device)
        self.gap = torch.full((n,), math.inf, device=x.device)
        self.tags: dict[str, torch.Tensor] = {}

    def update(self, x_adv: torch.Tensor, st: Status, **tags: torch.Tensor | float) -> torch.Tensor:
        return self.offer(x_adv, st.ok, st.dist, st.gap, **tags)

    def offer(self, x_adv: torch.Tensor, ok: torch.Tensor, dist: torch.Tensor, gap: torch.Tensor,
              rows: slice = slice(None), **tags: torch.Tensor | float) -> torch.Tensor:
        """:meth:`update` from the candidates' (ok, distortion, gap), for the images ``rows`` of the batch (a
        chunk's best rows merged in order, :func:`.variants.merge`); returns which were taken."""
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


def finish_adaptive(classifier, term, x_in, x, x_adv, label, norm: str, iterations: int,
                    **extra: torch.Tensor) -> AttackResult:
    """The result at the chosen images: success = misclassified AND accepted, with the common extras."""
    st = evaluate(classifier, term, x, x_adv, label, norm)
    its = torch.full((len(x),), iterations, dtype=torch.long, device=x.device)
    return finish(x_in, x, x_adv, st.ok, its, accepted=st.accepted, misclassified=st.misclassified,
                  detector_margin=st.det_margin, **extra)


@register("pgd_detector")
@dataclass(frozen=True)
class PGDDetector:
    """PGD on class margin + λ · max(0, detector margin), λ searched over ``lambdas`` (module docstring).

    Fields: ``eps``, ``detector`` (a detector term), ``norm`` ("linf" or "l2"), ``steps``, ``step_size``
    (None = 2.5·eps/steps), ``lambdas`` (λ ≥ 0, at least one), ``restarts``, ``random_start``, ``seed``,
    ``keep_best``, ``guided_starts`` (0 or 1), ``max_batch`` (images per pass: the runs' rows are cut into chunks of
    it; the number of images attacked gives one run per pass, as sequential runs), ``stop_on_success`` (with
    ``keep_best``: an image's runs stop at the first step where one of them is misclassified and accepted — the
    success of every image is the same, the x* kept is the least distorted success of that step, not of all steps).
    Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*), ``lambda`` (the λ that produced x*).
    """

    eps: float
    detector: Any = field(repr=False, compare=False)
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    lambdas: tuple[float, ...] = (0.0, 1.0, 10.0, 100.0)
    restarts: int = 1
    random_start: bool = True
    seed: int = 0
    keep_best: bool = True
    guided_starts: int = 0
    max_batch: int = MAX_BATCH
    stop_on_success: bool = False

    def __post_init__(self):
        check_common(self)
        check_term(self.detector)
        check_norm(self.norm)
        check_max_batch(self.max_batch)
        check_stop(self.stop_on_success, self.keep_best)
        check_steps(self.steps)
        check_steps(self.restarts, "restarts")
        if isinstance(self.guided_starts, bool) or not isinstance(self.guided_starts, int) or not 0 <= self.guided_starts <= 1:
            raise ConfigError(f"guided_starts must be 0 or 1, got {self.guided_starts!r}")
        check_step_size(self.step_size)
        if isinstance(self.lambdas, (str, bytes)) or not hasattr(self.lambdas, "__iter__"):
            raise ConfigError(f"lambdas must be a sequence of numbers >= 0, got {self.lambdas!r}")
        lambdas = tuple(check_lambda(v, "each lambda") for v in self.lambdas)
        if not lambdas:
            raise ConfigError("lambdas must hold at least one λ (e.g. (0, 1, 10, 100))")
        object.__setattr__(self, "lambdas", lambdas)

    def passes_per_image(self) -> float:
        # at most, per run: one forward+backward per step (its forward also gives the status of the iterate it
        # starts from) and one forward for the last iterate (runs of one start share theirs while accepted)
        return (3.0 * self.steps + 1.0) * (self.restarts + self.guided_starts) * len(self.lambdas)

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        return self.at_steps(classifier, x, y, (self.steps,))[0]

    def at_steps(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None,
                 steps: tuple[int, ...] = ()) -> list[AttackResult]:
        """The results of this attack stopped after each of ``steps`` (each ≤ ``self.steps``) at this attack's
        step size, from ONE set of runs: a run of h steps is the first h steps of a longer one, so each result is
        exactly that of its own attack with ``steps=h`` and the same ``step_size``; each keeps its own best
        iterate (of x₀…x_h)."""
        horizons = tuple(steps) or (self.steps,)
        for h in horizons:
            if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= self.steps:
                raise ConfigError(f"steps must be integers in 1..{self.steps} (the attack's steps), got {h!r}")
        x_in = x
        x, label, term = begin(self, classifier, x, y)
        alpha = resolve_step_size(self.step_size, self.eps, self.steps)
        # the runs in the sequential order (λ-major, start-minor); each λ starts from the same seeded points
        run_starts = [*starts(x, self.eps, self.norm, self.restarts, self.seed, self.random_start),
                      *([guided_start(x, label, self.eps, self.norm)] if self.guided_starts else [])]
        per_lambda = len(run_starts)
        lams = [lam for lam in self.lambdas for _ in run_starts]
        bests = {h: Best(x) for h in horizons}
        for b in bests.values():
            b.tags["lambda"] = torch.full((len(x),), math.nan, device=x.device)
        for rows in chunks(len(x), len(lams), self.max_batch):
            parts = {h: Best(rows.images(x)) for h in bests}
            group = rows.gather(lambda v: torch.arange(len(x), device=x.device) + (v % per_lambda) * len(x))
            self._run_rows(classifier, term, rows.images(x), rows.images(label), rows.values(lams, x),
                           rows.gather(lambda v: run_starts[v % per_lambda]), group, alpha, parts,
                           rows.images(torch.arange(len(x), device=x.device)))
            for h, part in parts.items():
                merge(bests[h], part, rows)
        runs = (self.restarts + self.guided_starts) * len(self.lambdas)
        return [finish_adaptive(classifier, term, x_in, x, bests[h].x, label, self.norm, h * runs, **bests[h].tags)
                for h in horizons]

    def _run_rows(self, classifier, term, x, label, lam, start, group, alpha: float, bests: dict[int, Best],
                  image: torch.Tensor) -> None:
        """max(``bests``) PGD steps (:func:`.pgd.pgd_step`) on the rows of one chunk; the iterates x₀…x_h (x₀ the
        start) offered to ``bests[h]`` (only x_h without ``keep_best``): x_t by the loss pass of step t + 1, the last one by one
        more forward.

        The rows of one ``group`` (one image and start, each λ) start at the same point, and while the detector
        accepts their common iterate (margin < 0) the λ term adds nothing to the gradient (zeros, exactly), so they
        take the same steps: only the group's first row goes through the network, the others take its gradient
        and status, until the detector rejects that iterate; from then on each row is computed on its own (rows of
        equal λ never part). With ``stop_on_success`` the rows of an ``image`` (its index in the batch) leave the
        pass once one of them is a success: they are neither computed nor offered again."""
        n = len(x)
        live = torch.ones(n, dtype=torch.bool, device=x.device)
        image = torch.unique(image, return_inverse=True)[1]  # 0 … (images in this chunk) − 1
        use_term = self.keep_best or bool((lam > 0).any())
        first: dict[int, int] = {}
        rep = torch.tensor([first.setdefault(g, i) for i, g in enumerate(group.tolist())], dtype=torch.long,
                           device=x.device)
        alone = rep == torch.arange(n, device=x.device)
        x_adv = start.detach()
        last = max(bests)

        def judge() -> Status:
            """The status of every live row at x_adv from one forward pass of the live rows computed on their own
            (the others: never a candidate)."""
            idx = (alone & live).nonzero().squeeze(1)
            st = evaluate(classifier, term, x[idx], x_adv[idx], label[idx], self.norm)
            computed = alone & live
            at = (computed.cumsum(0) - 1)[torch.where(alone, torch.arange(n, device=x.device), rep)]  # its row of st
            at = at.clamp_min(0)
            return retire(Status(*(getattr(st, k)[at] for k in STATUS_FIELDS)))

        def retire(st: Status) -> Status:
            """``st`` with the rows that left the pass made no candidate (not ok, an infinite gap)."""
            if bool(live.all()):
                return st
            gone = ~live
            return Status(st.class_margin.masked_fill(gone, 0.0), st.det_margin.masked_fill(gone, math.inf),
                          st.misclassified & live, st.dist.masked_fill(gone, 0.0))

        def compute(idx: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
            """The gradient (and status) of rows ``idx`` at x_adv, written into ``out``."""
            xa = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                if use_term:
                    loss, st = loss_and_status(classifier, term, x[idx], xa, label[idx], lam[idx], self.norm,
                                               detector_grad=bool((lam[idx] > 0).any()))
                else:  # every λ is 0 and only x_T counts: exactly pgd(loss="margin")
                    loss, st = margin_loss(classifier, label[idx])(xa), None
                (out["grad"][idx],) = torch.autograd.grad(loss.sum(), xa)
            if st is not None:
                for k in STATUS_FIELDS:
                    out[k][idx] = getattr(st, k)

        for t in range(last):
            if not bool(live.any()):
                break
            out = {"grad": torch.zeros_like(x_adv)}
            if use_term:
                out.update(blank_status(n, x.device))
            compute((alone & live).nonzero().squeeze(1), out)
            follows = ~alone & live & ((lam != lam[rep]) if not use_term else
                                       (lam != lam[rep]) & (out["det_margin"][rep] >= 0))  # parts from its group now
            if bool(follows.any()):
                compute(follows.nonzero().squeeze(1), out)
                alone |= follows
            shared = ~alone  # these take their group's first row's gradient and status (the same numbers)
            for v in out.values():
                v[shared] = v[rep[shared]]
            takers = [b for h, b in bests.items() if (self.keep_best and h >= t) or (t > 0 and h == t)]
            if takers:  # x_t (x₀ the start), judged by this pass (or by a forward of its own when it had no term)
                st = retire(Status(*(out[k] for k in STATUS_FIELDS))) if use_term else judge()
                for best in takers:
                    best.update(x_adv, st, **{"lambda": lam})
                if self.stop_on_success:
                    won = torch.zeros(n, dtype=torch.bool, device=x.device)  # per image of the chunk
                    won[image[st.ok]] = True
                    live &= ~won[image]
            x_new = pgd_step(x, x_adv, out["grad"], eps=self.eps, norm=self.norm, step_size=alpha, direction=-1.0)
            x_adv = torch.where(per_example(live, x_adv), x_new, x_adv)
        if bool(live.any()):
            bests[last].update(x_adv, judge(), **{"lambda": lam})


STATUS_FIELDS = ("class_margin", "det_margin", "misclassified", "dist")


def blank_status(n: int, device) -> dict[str, torch.Tensor]:
    return {"class_margin": torch.empty(n, device=device), "det_margin": torch.empty(n, device=device),
            "misclassified": torch.empty(n, dtype=torch.bool, device=device),
            "dist": torch.empty(n, device=device)}


def retired(st: Status, rows: torch.Tensor, n: int) -> Status:
    """The status ``st`` of rows ``rows`` spread over all ``n`` rows; the others are no candidate (not ok, an
    infinite gap)."""
    if len(rows) == n:
        return st
    dev = st.dist.device
    out = Status(torch.zeros(n, device=dev), torch.full((n,), math.inf, device=dev),
                 torch.zeros(n, dtype=torch.bool, device=dev), torch.zeros(n, device=dev))
    for k in STATUS_FIELDS:
        getattr(out, k)[rows] = getattr(st, k)
    return out


def check_stop(stop_on_success, keep_best) -> None:
    if not isinstance(stop_on_success, bool):
        raise ConfigError(f"stop_on_success must be true or false, got {stop_on_success!r}")
    if stop_on_success and not keep_best:
        raise ConfigError("stop_on_success needs keep_best (without it only the final iterate counts, so a run "
                          "cannot stop early)")


def guided_start(x: torch.Tensor, label: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x + Π_ε(x_g − x), x_g the nearest (L2) image of the batch whose clean prediction differs from ``label``
    (x itself where the whole batch shares one class), clipped to [0, 1]."""
    flat = x.flatten(1)
    d = torch.cdist(flat, flat)
    d = d.masked_fill(label[:, None] == label[None, :], math.inf)
    nearest = d.argmin(1)
    has = torch.isfinite(d.gather(1, nearest[:, None]).squeeze(1))
    guide = torch.where(per_example(has, x), x[nearest], x)
    return project(x, guide, eps, norm).clamp(0.0, 1.0)
