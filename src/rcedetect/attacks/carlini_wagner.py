"""The C&W family: C&W-L2 with binary search, C&W-hc (κ = 10) and C&W-wb (against K-density), protocol §6, §7.

One implementation (Carlini & Wagner 2017, "Towards evaluating the robustness of neural networks", the L2
attack; paper §2.3 and B.3-B.4), three registered presets:

- ``cw``    — targeted at a random wrong label, κ = 0 (protocol §6.1 and "Decisions").
- ``cw_hc`` — the same with κ = 10 on the logits (protocol §6.2).
- ``cw_wb`` — the same with the white-box detector term of paper §4.4 / protocol §6.3 (any object with a
  differentiable ``margin(view, classes)`` of a :class:`~rcedetect.detectors.View`; the K-density one is −log KD_t(z) − η_t).

Per example (everything batched; the binary-search state is a tensor per example)::

    x* = (tanh(w) + 1) / 2,       w₀ = atanh((2x − 1) · 0.999999)
    loss = ‖x* − x‖²₂ + c · max(max_{j≠t} Z_j − Z_t + κ, 0)  [+ c · max(−log KD_t(z(x*)) − η_t, 0)]

Z are the *effective* logits (``classifier.logits``: −Z for RCE). Untargeted mode uses
max(Z_y − max_{j≠y} Z_j + κ, 0) instead. Adam (lr 0.01) restarts from w₀ with fresh state at each of the
``binary_search_steps`` rounds; after a round an example that succeeded sets ``upper = min(upper, c)``,
one that failed sets ``lower = max(lower, c)``, and then ``c = (lower + upper)/2``, except after a failure
with no success yet (``upper ≥ 1e9``) where ``c ×= 10`` (protocol §6.1). The returned image is the
smallest-L2 success over every iteration of every round; an example never successful gets its clean
input back with ``success = False``.

``restart="continue"`` (option; ``"start"``, the original, is the default) begins each later round from the best
success so far, else from where the previous round ended, not from w₀ (Adam restarts either way): rounds refine
one another, so the same distortion and success take far fewer iterations (``benchmarks/attack_speed.py``).

Success (protocol §6.1 ``compare``, also the binary search's): ``argmax(Z − κ·onehot(t)) == t`` (targeted) or
``argmax(Z + κ·onehot(y)) != y`` (untargeted), and for C&W-wb also f2 = −log KD_t(x*) − η_t ≤ 0.

Abort-early is per example (protocol §6.1): every ``max_iterations // 10`` iterations an example whose loss did
not fall below 0.9999 × its loss at the previous check is masked out until the next round; the first check
compares against +inf (the original: the sum over its batch, against 1e6).

Decisions for C&W-wb (protocol "Decisions", §6.3): one optimisation, not the original's two stages; the L2 term
is anchored at the *clean* x (the original anchors at its stage-1 image, a bug); κ is compared on logits
(the original compares it with softmax probabilities, which breaks κ > 0). ``warm_start=True`` starts every
round from a plain C&W result (3 rounds, max_iterations // 2 iterations, as the original's stage 1);
``__call__(..., init=x0)`` starts from any given image. When no round succeeds, the result is (as the original's
``o_bestextraattack``) the target-reaching x* with the smallest f2 (``success = False``), or the clean x if the
target was never reached, so Table 3's "ratio of f2 > 0" stays computable (:func:`rcedetect.scoring.table3_stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.errors import ConfigError, InputError
from ..core.settings import setting
from ..core.validation import check_images, check_labels
from ..detectors.base import observe
from .base import (
    Attack,
    AttackResult,
    check_term,
    place_term,
    prepare,
    register,
)
from .cw_margins import margin_reached, random_targets, unconfirmed
from .precision import PRECISIONS, autocast

MODES = ("targeted", "untargeted")
RESTARTS = ("start", "continue")
#: the upper bound on c before any success; "no success yet" is ``upper >= 1e9`` (protocol §6.1)
UPPER_START = 1e10
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class CarliniWagnerL2(Attack):
    """C&W-L2 with per-example binary search on c; a ``detector`` term turns it into C&W-wb (module docstring).

    Settings: ``kappa`` (margin κ on the effective logits), ``binary_search_steps``, ``max_iterations``
    (per round), ``learning_rate`` (Adam), ``initial_const`` (c₀), ``abort_early``, ``mode``
    ("targeted" at a seeded random wrong label, or "untargeted"), ``seed``; for C&W-wb ``detector`` (a detector
    term: ``margin(view, classes)`` differentiable in the view, ≤ 0 where the detector accepts the input, e.g.
    ``Detector(classifier, "kd").fit(...).attack_term()`` = −log KD_t(z) − η_t), ``warm_start`` and
    ``fallback`` (the target-reaching x* of smallest f2 if no round fools the detector); ``restart`` ("start", "continue").
    """

    kappa: float = setting(0.0, lo=0, hint=" (a margin on the logits)")
    binary_search_steps: int = setting(9, lo=1)
    max_iterations: int = setting(10_000, lo=1)
    learning_rate: float = setting(0.01, lo=0, lo_open=True)
    initial_const: float = setting(1.0, lo=0, lo_open=True)
    abort_early: bool = True
    mode: str = setting("targeted", choices=MODES)
    seed: int = 0
    detector: Any = field(default=None, repr=False, compare=False)
    warm_start: bool = False
    fallback: bool = True
    restart: str = setting("start", choices=RESTARTS)
    #: "bf16": every round but the last runs its passes in bfloat16; before the last (float32) round, successes
    #: a float32 pass does not confirm are dropped (:mod:`.precision`)
    precision: str = setting("fp32", choices=PRECISIONS)

    def __post_init__(self):
        super().__post_init__()
        if self.precision != "fp32" and self.detector is not None:
            raise ConfigError("C&W-wb computes its detector term in float32: precision='bf16' is for C&W and C&W-hc")
        if self.detector is not None:
            check_term(self.detector)
            if self.mode != "targeted":
                raise ConfigError("C&W-wb is targeted (its detector term uses the target class); use mode='targeted'")
        if self.warm_start and self.detector is None:
            raise ConfigError("warm_start only applies to C&W-wb (a detector term set)")

    @property
    def whitebox(self) -> bool:
        return self.detector is not None

    def passes_per_image(self) -> float:
        return 3.0 * self.binary_search_steps * self.max_iterations * 0.6  # abort-early stops most rounds sooner

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 target: torch.Tensor | None = None, init: torch.Tensor | None = None) -> AttackResult:
        """Attack ``x`` (labels ``y``, default the clean prediction); ``target`` overrides the seeded draw,
        ``init`` is an image to start every round from (default x)."""
        x, y = prepare(classifier, x, y)
        n, num_classes, device = len(x), classifier.num_classes, x.device
        targeted = self.mode == "targeted"
        if targeted:
            if target is None:
                target = random_targets(y, num_classes, self.seed)
            else:
                check_labels(target, n, num_classes, name="target")
                target = target.to(device)
                if bool((target == y).any()):
                    raise InputError("target must differ from the label of every example (a target equal to y "
                                     "is reached by the clean image)")
        elif target is not None:
            raise InputError("target is only used in targeted mode; drop it or set mode='targeted'")
        label = target if targeted else y
        spent = torch.zeros(n, dtype=torch.long, device=device)
        term = place_term(self.detector, classifier) if self.whitebox else None
        if init is not None:
            check_images(init, channels=x.shape[1], name="init")
            if init.shape != x.shape:
                raise InputError(f"init must have the shape of x {tuple(x.shape)}, got {tuple(init.shape)}")
            start = init.detach().to(device, torch.float32)
        elif self.warm_start:
            stage1 = replace(self, detector=None, warm_start=False,
                             binary_search_steps=min(3, self.binary_search_steps),
                             max_iterations=max(1, self.max_iterations // 2))
            first = stage1(classifier, x, y, target=label)
            start, spent = first.x_adv, first.iterations
        else:
            start = x
        if n == 0:
            return AttackResult(x_adv=x.clone(), success=torch.zeros(0, dtype=torch.bool, device=device),
                                target=label if targeted else None,
                                iterations=torch.zeros(0, dtype=torch.long, device=device), x=x)
        return self._run(classifier, x, label, start, term, targeted, spent)

    # ------------------------------------------------------------------------------------------------------
    def _terms(self, classifier, xa: torch.Tensor, label: torch.Tensor, term, targeted: bool,
               precision: str = "fp32"):
        """(f1, f2 value before the hinge or None, logit-criterion success) at images ``xa``.

        f2 is the detector term's margin at the target class (paper §4.4: −log KD_t(z) − η_t for K-density);
        f2 ≤ 0 means the detector accepts x*.
        """
        if term is not None:
            view = observe(classifier, xa, term)
            logits = view.logits
            f2 = term.margin(view, label)
        else:
            with autocast(xa.device, precision):
                logits, f2 = classifier.logits(xa).float(), None
        f1, reached = margin_reached(logits, label, self.kappa, targeted)
        return f1, f2, reached

    def _run(self, classifier, x, label, start, term, targeted, spent) -> AttackResult:
        n, device = len(x), x.device
        flat_d = x[0].numel()
        w0 = torch.atanh((2 * start - 1) * 0.999999)
        lower = torch.zeros(n, dtype=torch.float64, device=device)
        upper = torch.full((n,), UPPER_START, dtype=torch.float64, device=device)
        const = torch.full((n,), float(self.initial_const), dtype=torch.float64, device=device)
        best_l2sq = torch.full((n,), math.inf, device=device)
        best_x = x.clone()
        best_const = torch.full((n,), math.nan, dtype=torch.float64, device=device)
        found = torch.zeros(n, dtype=torch.bool, device=device)
        fb_f2 = torch.full((n,), math.inf, device=device)  # C&W-wb fallback: target reached, smallest f2
        fb_x = x.clone()
        iterations = spent.clone()  # warm-start iterations count too
        per_step = torch.full((n, self.binary_search_steps), math.inf, device=device)
        check_every = max(1, self.max_iterations // 10)
        b1, b2 = ADAM_BETAS

        last, w = self.binary_search_steps - 1, w0.clone()
        for step in range(self.binary_search_steps):
            precision = self.precision if step < last else "fp32"
            if step == last and self.precision != "fp32" and last > 0:
                # only float32-confirmed successes survive; a dropped one is where "continue" resumes from
                bad = unconfirmed(classifier, best_x, label, self.kappa, targeted, found)
                w[bad] = torch.atanh((2 * best_x[bad] - 1) * 0.999999)
                found[bad], best_l2sq[bad], best_x[bad], best_const[bad] = False, math.inf, x[bad], math.nan
            if self.restart == "start" or step == 0:
                w = w0.clone()
            else:  # "continue": from the best success so far, else from where the last round ended
                w = torch.where(found[:, None, None, None], torch.atanh((2 * best_x - 1) * 0.999999), w)
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            prev = torch.full((n,), math.inf, device=device)
            succeeded = torch.zeros(n, dtype=torch.bool, device=device)
            idx = torch.arange(n, device=device)
            c = const.float()
            for it in range(self.max_iterations):
                wi = w[idx].requires_grad_(True)
                with torch.enable_grad():
                    xa = (torch.tanh(wi) + 1) / 2
                    l2sq = (xa - x[idx]).flatten(1).pow(2).sum(1)
                    f1, f2, reached = self._terms(classifier, xa, label[idx], term, targeted, precision)
                    hinge = f1 if f2 is None else f1 + f2.clamp_min(0)
                    loss = l2sq + c[idx] * hinge
                    (grad,) = torch.autograd.grad(loss.sum(), wi)
                with torch.no_grad():
                    xa, l2sq, loss = xa.detach(), l2sq.detach(), loss.detach()
                    ok = reached if f2 is None else reached & (f2.detach() <= 0)
                    better = ok & (l2sq < best_l2sq[idx])
                    if bool(better.any()):
                        j = idx[better]
                        best_l2sq[j], best_x[j], best_const[j] = l2sq[better], xa[better], const[j]
                    found[idx] |= ok
                    succeeded[idx] |= ok
                    if f2 is not None and self.fallback:
                        f2d = f2.detach()
                        closer = reached & (f2d < fb_f2[idx])
                        if bool(closer.any()):
                            j = idx[closer]
                            fb_f2[j], fb_x[j] = f2d[closer], xa[closer]
                    iterations[idx] += 1
                    keep = torch.ones_like(ok)
                    if self.abort_early and it % check_every == 0:
                        keep = loss <= 0.9999 * prev[idx]
                        prev[idx] = loss
                    # Adam on the still-active examples (every active one has taken it + 1 steps this round)
                    k = it + 1
                    mi = b1 * m[idx] + (1 - b1) * grad
                    vi = b2 * v[idx] + (1 - b2) * grad * grad
                    m[idx], v[idx] = mi, vi
                    upd = self.learning_rate * (mi / (1 - b1**k)) / ((vi / (1 - b2**k)).sqrt() + ADAM_EPS)
                    w[idx] = wi.detach() - upd
                    if not bool(keep.all()):
                        idx = idx[keep]
                        if idx.numel() == 0:
                            break
            # per-example binary search on c (protocol §6.1)
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(succeeded | (upper < 1e9), (lower + upper) / 2, const * 10)
            per_step[:, step] = best_l2sq.sqrt() / math.sqrt(flat_d) * 255.0

        x_adv = best_x
        if self.whitebox and self.fallback:
            use_fb = ~found & torch.isfinite(fb_f2)
            x_adv = torch.where(use_fb[:, None, None, None], fb_x, x_adv)
        x_adv = x_adv.clamp(0.0, 1.0)
        with torch.no_grad():
            _, f2, reached = self._terms(classifier, x_adv, label, term, targeted)
        extra = {"const": torch.where(found, best_const, const).float(), "l2_per_step": per_step}
        if targeted:
            extra["target_reached"] = reached
        if f2 is not None:
            extra["f2"] = f2
        return AttackResult(x_adv=x_adv, success=found, target=label if targeted else None,
                            iterations=iterations, extra=extra, x=x)


register("cw")(CarliniWagnerL2)  # targeted at a random wrong label, κ = 0 (protocol "Decisions")
register("cw_hc", kappa=10.0)(CarliniWagnerL2)  # κ = 10 on the logits (protocol §6.2)
register("cw_wb", requires=("detector",))(CarliniWagnerL2)  # + the detector term of paper §4.4 (protocol §6.3)
