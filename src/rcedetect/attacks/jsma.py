"""JSMA, the Jacobian-based saliency map attack (Papernot et al. 2016) as run by the original (protocol §5.6).

Target: the least-likely class t = argmin of the clean effective logits. Each step increases input *features*
(single channel values) by +ε and clips to [0, 1]; a feature stays eligible while it is below 1.0, so it can
be chosen again. An example stops when argmax = t, after its budget of steps, or when no feature is eligible;
finished examples no longer change. At most ``max_steps`` features are increased per example (paper B.2).

Saliency ``"original"`` (the default, protocol §5.6: Gong's single-feature map on the *probabilities*
F = softmax(effective logits)):
  dt_dx = ∇ₓ F_t,  do_dx = ∇ₓ Σ_k F_k − dt_dx,
  score = dt_dx · |do_dx| over eligible features with dt_dx ≥ 0 and do_dx ≤ 0;
  if no feature qualifies: score = dt_dx − do_dx over all eligible features (the original's fallback).
Because Σ_k F_k = 1, ∇ₓ Σ_k F_k ≈ 0 and the map degenerates to the largest ∂F_t/∂x_i — which is what produced
the paper's numbers; it is kept for faithfulness. Two backward passes per step (∇F_t and ∇ΣF), or one with
``sum_gradient="exact"``, which uses the exact ∇ΣF = 0.

``features_per_step`` = k > 1 (option, ``"original"`` map only) raises the k best features of the map per
gradient evaluation instead of one (only features the map allows: a step may raise fewer): about k times fewer
forward/backward passes for the same budget of ``max_steps`` raised features, at the price of choosing from
a gradient up to k − 1 features old. k = 1 is the original.

Saliency ``"pairwise"`` (option): Papernot's pair map on the *logits*. With α = ∇ₓ Z_t and β = ∇ₓ Σ_{j≠t} Z_j,
a pair (p, q) scores (α_p + α_q)·|β_p + β_q| where α_p + α_q > 0 and β_p + β_q < 0 (fallback: the largest
(α_p + α_q) − (β_p + β_q)); both features get +ε. To stay O(N·D) instead of O(N·D²), pairs are formed only
among the ``top_k`` eligible features with the largest single-feature score α_i − β_i (k² pairs per example).
Each pair step increases two features, so a pairwise run takes at most ``max_steps // 2`` steps and the
"at most max_steps features" budget holds for both maps.

``success`` = the prediction on x* differs from the clean prediction (the "misclassified" of the paper's pair
mask); ``target`` holds t and ``extra["target_reached"]`` says whether it was reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ConfigError
from ..core.settings import check_fields, setting
from .base import AttackResult, check_common, finish, prepare, register
from .precision import PRECISIONS, autocast

SALIENCY = ("original", "pairwise")


def _grads(classifier, x: torch.Tensor, target: torch.Tensor, on_logits: bool,
           sum_by_autograd: bool = True, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∇ₓ out_t, ∇ₓ Σ_k out_k) per example, flattened, with out = logits or softmax probabilities,
    and the current prediction (from the same forward pass).

    For probabilities Σ_k F_k ≡ 1, so ∇ₓ Σ_k F_k is exactly 0; ``sum_by_autograd=False`` uses that and saves
    the second backward pass (the original computed it, getting rounding noise around 0)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast(x.device, precision):
            out = classifier.logits(x)
        out = out.float()
        if not on_logits:
            out = torch.softmax(out, dim=1)
        need_sum = on_logits or sum_by_autograd
        (dt,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x, retain_graph=need_sum)
        ds = torch.autograd.grad(out.sum(), x)[0] if need_sum else torch.zeros_like(dt)
    return dt.flatten(1), ds.flatten(1), out.detach().argmax(1)


def _original_scores(dt: torch.Tensor, do: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Protocol §5.6's map per feature (−inf where a feature may not be chosen), with its fallback in the rows
    where no feature qualifies."""
    neg_inf = torch.tensor(float("-inf"), device=dt.device, dtype=dt.dtype)
    qualifies = eligible & (dt >= 0) & (do <= 0)
    score = torch.where(qualifies, dt * do.abs(), neg_inf)
    fallback = torch.where(eligible, dt - do, neg_inf)
    use_fallback = ~qualifies.any(1, keepdim=True)
    return torch.where(use_fallback, fallback, score)


def _original_choice(dt: torch.Tensor, do: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """One feature index per row: the largest of :func:`_original_scores`."""
    return _original_scores(dt, do, eligible).argmax(1, keepdim=True)


def _pairwise_choice(alpha: torch.Tensor, beta: torch.Tensor, eligible: torch.Tensor, top_k: int) -> torch.Tensor:
    """Two feature indices per row: Papernot's pair map restricted to the top-k eligible features."""
    neg_inf = torch.tensor(float("-inf"), device=alpha.device, dtype=alpha.dtype)
    k = min(top_k, alpha.shape[1])
    single = torch.where(eligible, alpha - beta, neg_inf)
    cand = single.topk(k, dim=1).indices  # (n, k)
    ok = eligible.gather(1, cand)
    a, b = alpha.gather(1, cand), beta.gather(1, cand)
    A = a[:, :, None] + a[:, None, :]  # (n, k, k)
    B = b[:, :, None] + b[:, None, :]
    valid = ok[:, :, None] & ok[:, None, :] & ~torch.eye(k, dtype=torch.bool, device=alpha.device)
    qualifies = valid & (A > 0) & (B < 0)
    score = torch.where(qualifies, A * B.abs(), neg_inf)
    fallback = torch.where(valid, A - B, neg_inf)
    use_fallback = ~qualifies.flatten(1).any(1)[:, None, None]
    flat = torch.where(use_fallback, fallback, score).flatten(1).argmax(1)
    p, q = flat // k, flat % k
    return torch.stack([cand.gather(1, p[:, None])[:, 0], cand.gather(1, q[:, None])[:, 0]], 1)


@register("jsma")
@dataclass(frozen=True)
class JSMA:
    """JSMA toward the least-likely class, +ε per chosen feature, at most ``max_steps`` features changed."""

    eps_bounds = False  # ε is the step of a raised feature (raised again while below 1), not a budget

    eps: float
    max_steps: int = setting(100, lo=1)
    saliency: str = setting("original", choices=SALIENCY)
    top_k: int = setting(32, lo=1)
    #: "autograd" computes ∇ₓΣF as the original did (rounding noise around 0, a second backward pass);
    #: "exact" uses ∇ₓΣF = 0 (softmax sums to 1) and takes one backward pass per step.
    sum_gradient: str = setting("autograd", choices=("autograd", "exact"))
    features_per_step: int = setting(1, lo=1)
    #: "bf16": gradient passes in bfloat16 (:mod:`.precision`); reaching the target is confirmed in float32
    precision: str = setting("fp32", choices=PRECISIONS)

    def __post_init__(self):
        check_fields(self)
        check_common(self)
        if self.features_per_step > 1 and self.saliency != "original":
            raise ConfigError("features_per_step > 1 is for the original saliency map (pairwise raises two per step)")
        if self.saliency == "pairwise" and (self.max_steps < 2 or self.top_k < 2):
            raise ConfigError("pairwise saliency changes two features per step: max_steps and top_k must be >= 2")

    def passes_per_image(self) -> float:
        return 3.0 * self.max_steps * 0.6 / self.features_per_step  # most examples stop before the budget

    def __call__(self, classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> AttackResult:
        x_in = x
        x, _ = prepare(classifier, x, y, need_label=False)
        n = len(x)
        with torch.no_grad():
            logits = classifier.logits(x)
        pred, target = logits.argmax(1), logits.argmin(1)
        pairwise = self.saliency == "pairwise"
        per_step = 2 if pairwise else self.features_per_step
        budget = self.max_steps // 2 if pairwise else -(-self.max_steps // per_step)  # gradient steps
        if self.eps == 0:
            budget = 0  # nothing can change: skip the gradient passes

        x_adv = x.clone().flatten(1)
        its = torch.zeros(n, dtype=torch.long, device=x.device)
        active = pred != target
        for step in range(budget):
            idx = active.nonzero()[:, 0]
            if len(idx) == 0:
                break
            xa = x_adv[idx]
            eligible = xa < 1.0
            dt, ds, now = _grads(classifier, xa.view(-1, *x.shape[1:]), target[idx], on_logits=pairwise,
                                 sum_by_autograd=self.sum_gradient == "autograd", precision=self.precision)
            if self.precision != "fp32":  # a bf16 "target reached" only stops an example if float32 agrees
                hit = (now == target[idx]).nonzero()[:, 0]
                if len(hit):
                    with torch.no_grad():
                        now[hit] = classifier.logits(xa[hit].view(-1, *x.shape[1:])).argmax(1)
            # reached the target or nothing left to raise: this example is finished and stays as it is
            go = (now != target[idx]) & (eligible.sum(1) >= (2 if pairwise else 1))
            active[idx[~go]] = False
            if not bool(go.any()):
                break
            idx, xa, eligible, dt, ds = idx[go], xa[go], eligible[go], dt[go], ds[go]
            if pairwise:
                chosen = _pairwise_choice(dt, ds - dt, eligible, self.top_k)
                raise_by = torch.full(chosen.shape, self.eps, dtype=xa.dtype, device=xa.device)
            else:
                k = min(per_step, self.max_steps - step * per_step)  # the last step may have less budget left
                scores = _original_scores(dt, ds - dt, eligible)
                if k == 1:  # argmax: ties go to the first feature, as in the original
                    best = scores.max(1, keepdim=True)
                else:
                    best = scores.topk(k, dim=1)
                chosen = best.indices
                raise_by = torch.isfinite(best.values).to(xa.dtype) * self.eps
            xa = xa.scatter_add(1, chosen, raise_by)
            x_adv[idx] = xa.clamp(0.0, 1.0)
            its[idx] += 1
        x_adv = x_adv.view_as(x)
        with torch.no_grad():
            pred_adv = classifier.logits(x_adv).argmax(1)
        return finish(x_in, x, x_adv, pred_adv != pred, its, target=target, label=pred, pred_adv=pred_adv,
                      target_reached=pred_adv == target)
