"""PGD against the classifier AND the detector: the adaptive attack on a combined loss (Carlini & Wagner 2017,
"Adversarial examples are not easily detected: bypassing ten detection methods"; PGD of Madry et al. 2018).

Per example, with y the clean prediction, Z the effective logits and z the final hidden vector, descended with the
steps of :mod:`.engine`::

    loss = (Z_y − max_{j≠y} Z_j) + λ · max(0, margin_det(z, Z, argmax Z))

``margin_det`` is the detector term's ``margin`` (> 0 where the deployed detector rejects x*) at the class the
classifier predicts, the one the detector checks. λ is searched per example over ``lambdas`` (each λ × the starts);
per image x* is, among every iterate of all runs (``keep_best``; else the final ones), a misclassified AND accepted
one with the smallest distortion, else the one with the smallest max(0, class margin) + max(0, margin_det). λ = 0
leaves the detector out: with ``keep_best=False`` the run is then exactly ``pgd(loss="margin")``.

``guided_starts`` adds runs from the nearest batch image that the classifier puts in another class and the detector
accepts, projected into the ε-ball: a point the detector accepts when ε is large (at ε = 1 that image itself, a
success as a start), where a random start far off the data can leave no usable gradient (Mahalanobis; Carlini et
al. 2019 ask that an unbounded attack succeed).

The runs of one start with different λ take the same steps while the detector accepts their common iterate (the λ
term has no gradient there), so they go through the network as one row until it rejects it: the results are those
of separate runs. The rest of this module serves every attack on a detector (:class:`AgainstDetector`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..core.errors import ConfigError
from ..core.settings import Rule, setting
from ..detectors.base import View, observe
from .base import Attack, AttackResult, begin, check_term, finish, register
from .engine import PGDAttack, distortion, grad_of, per_example, project
from .pgd import class_margin, margin_loss


@dataclass(frozen=True)
class AgainstDetector(Attack):
    """An attack on a classifier and a ``detector`` term (``margin(view, classes)``, ≤ 0 where it accepts)."""

    eps: float
    detector: Any = field(repr=False, compare=False)

    def __post_init__(self):
        super().__post_init__()
        check_term(self.detector)


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


class Status(NamedTuple):
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

    def rows(self, index) -> Status:
        return Status(*(t[index] for t in self))

    def put(self, index, other: Status) -> None:
        for t, o in zip(self, other):
            t[index] = o


def status_of(logits, det, label, x, x_adv, norm: str) -> Status:
    logits, det = logits.detach(), det.detach()
    return Status(class_margin(logits, label), det, logits.argmax(1) != label, distortion(x, x_adv.detach(), norm))


@torch.no_grad()
def evaluate(classifier, term, x: torch.Tensor, x_adv: torch.Tensor, label: torch.Tensor, norm: str) -> Status:
    view = observe(classifier, x_adv, term)
    return status_of(view.logits, detector_margin(term, view), label, x, x_adv, norm)


def loss_and_status(classifier, term, x: torch.Tensor, xa: torch.Tensor, label: torch.Tensor, lam: torch.Tensor,
                    norm: str, detector_grad: bool = True) -> tuple[torch.Tensor, Status]:
    """(class margin + λ · max(0, margin_det) per example at ``xa``, λ a tensor of one per example; the
    :class:`Status` of ``xa``) from ONE forward pass. Rows with λ = 0 get exactly the class margin's gradient (the
    detector's part adds zeros); ``detector_grad=False`` (every λ is 0) computes the detector margin outside the
    graph."""
    view = observe(classifier, xa, term)
    loss = class_margin(view.logits, label)
    if detector_grad:
        det = detector_margin(term, view)
        loss = loss + lam * det.clamp_min(0)
    else:
        with torch.no_grad():
            det = detector_margin(term, view)
    return loss, status_of(view.logits, det, label, x, xa, norm)


def finish_adaptive(classifier, term, x_in, x, x_adv, label, norm: str, iterations: int,
                    **extra: torch.Tensor) -> AttackResult:
    """The result at the chosen images: success = misclassified AND accepted, with the common extras."""
    st = evaluate(classifier, term, x, x_adv, label, norm)
    its = torch.full((len(x),), iterations, dtype=torch.long, device=x.device)
    return finish(x_in, x, x_adv, st.ok, its, accepted=st.accepted, misclassified=st.misclassified,
                  detector_margin=st.det_margin, **extra)


def guided_start(x: torch.Tensor, label: torch.Tensor, eps: float, norm: str, pred: torch.Tensor | None = None,
                 accepted: torch.Tensor | None = None) -> torch.Tensor:
    """x + Π_ε(x_g − x), clipped to [0, 1]. x_g is the nearest (L2) image of the batch that would be a success as it
    is: the classifier puts it in another class than ``label`` (``pred``, the batch's own predictions) and the
    detector accepts it (``accepted``). Where the batch has none for an image (or ``pred`` is not given), x_g is the
    nearest image of another label, and x itself where the whole batch shares one label. Choosing by label alone
    would pick, on a weak classifier, images that it puts in x's class or that the detector rejects, and at ε = 1
    the start would be no success."""
    flat = x.flatten(1)
    d = torch.cdist(flat, flat)
    other = label[:, None] != label[None, :]
    if pred is not None:
        good = (pred[None, :] != label[:, None]) & accepted[None, :]
        good.fill_diagonal_(False)
        other = torch.where(good.any(1, keepdim=True), good, other)
    d = d.masked_fill(~other, math.inf)
    nearest = d.argmin(1)
    has = torch.isfinite(d.gather(1, nearest[:, None]).squeeze(1))
    guide = torch.where(per_example(has, x), x[nearest], x)
    return project(x, guide, eps, norm).clamp(0.0, 1.0)


@register("pgd_detector")
@dataclass(frozen=True)
class PGDDetector(PGDAttack, AgainstDetector):
    """PGD on class margin + λ · max(0, detector margin), λ searched over ``lambdas`` (module docstring).

    Settings: those of :class:`~.engine.PGDAttack`, ``detector`` (a detector term), ``lambdas`` (λ ≥ 0, at least
    one), ``guided_starts`` (0 or 1). Extras: ``accepted``, ``misclassified``, ``detector_margin`` (at x*),
    ``lambda`` (the λ that produced x*).
    """

    lambdas: tuple[float, ...] = setting((0.0, 1.0, 10.0, 100.0), each=Rule(lo=0, kind="float"))
    guided_starts: int = setting(0, lo=0, hi=1)

    def __post_init__(self):
        super().__post_init__()
        if not self.lambdas:
            raise ConfigError("lambdas must hold at least one λ (e.g. (0, 1, 10, 100))")

    def passes_per_image(self) -> float:  # at most: per run a forward+backward per step, a forward at the end
        return (3.0 * self.steps + 1.0) * (self.restarts + self.guided_starts) * len(self.lambdas) + self.guided_starts

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
        lams = torch.tensor(self.lambdas, dtype=torch.float32, device=x.device)
        guided = None
        if self.guided_starts:
            with torch.no_grad():
                view = observe(classifier, x, term)
            guided = guided_start(x, label, self.eps, self.norm, view.logits.argmax(1),
                                  detector_margin(term, view) <= 0)
        bests = self.search(x, label, lambda c: self._passes(classifier, term, c, lams[c.option], len(x)),
                            options=len(self.lambdas), guided=guided, horizons=horizons, tag="lambda")
        runs = (self.restarts + self.guided_starts) * len(self.lambdas)
        return [finish_adaptive(classifier, term, x_in, x, bests[h].x, label, self.norm, h * runs, **bests[h].tags)
                for h in horizons]

    def _passes(self, classifier, term, c, lam: torch.Tensor, n: int):
        """The passes of one chunk (:meth:`~.engine.PGDAttack.descend`). The rows of one group (one image and
        start, each λ) take their group's first row's gradient and status while the detector accepts their common
        iterate; a row whose group's iterate the detector rejects is computed on its own from then on."""
        m, dev = len(c.x), c.x.device
        use_term = self.keep_best or bool((lam > 0).any())
        first: dict[int, int] = {}
        group = (c.image + c.run * n).tolist()
        rep = torch.tensor([first.setdefault(g, i) for i, g in enumerate(group)], dtype=torch.long, device=dev)
        alone = rep == torch.arange(m, device=dev)

        def compute(x_adv, idx, grad, st) -> None:
            """The gradient (and status) of rows ``idx`` at x_adv, written into ``grad`` (and ``st``)."""
            def loss(xa):
                if not use_term:  # every λ is 0 and only x_T counts: exactly pgd(loss="margin")
                    return margin_loss(classifier, c.label[idx])(xa), None
                return loss_and_status(classifier, term, c.x[idx], xa, c.label[idx], lam[idx], self.norm,
                                       detector_grad=bool((lam[idx] > 0).any()))

            grad[idx], s = grad_of(loss, x_adv[idx])
            if s is not None:
                st.put(idx, s)

        def pass_(x_adv, live):
            grad = torch.zeros_like(x_adv)
            st = Status(*(torch.zeros(m, dtype=d, device=dev) for d in (torch.float, torch.float, torch.bool,
                                                                            torch.float))) if use_term else None
            compute(x_adv, (alone & live).nonzero().squeeze(1), grad, st)
            follows = ~alone & live & (lam != lam[rep])  # parts from its group now
            if use_term:
                follows &= st.det_margin[rep] >= 0
            if bool(follows.any()):
                compute(x_adv, follows.nonzero().squeeze(1), grad, st)
                alone[follows] = True
            shared = ~alone  # these take their group's first row's gradient and status (the same numbers)
            grad[shared] = grad[rep[shared]]
            if st is not None:
                st.put(shared, st.rows(rep[shared]))
            return grad, st

        def judge(x_adv, live) -> Status:
            """Every row's status from one forward pass of the live rows computed on their own."""
            computed = alone & live
            idx = computed.nonzero().squeeze(1)
            st = evaluate(classifier, term, c.x[idx], x_adv[idx], c.label[idx], self.norm)
            at = (computed.cumsum(0) - 1)[torch.where(alone, torch.arange(m, device=dev), rep)]  # its row of st
            return st.rows(at.clamp_min(0))

        return pass_, judge, lambda t: {"lambda": lam}
