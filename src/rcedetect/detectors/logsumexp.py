"""The log-sum-exp kernels behind :meth:`~rcedetect.detectors.density.KernelDensity.log_kd` (protocol §4.3).

Each returns, per query row zc (already centred on its class), logsumexp_i(−‖zc − kc_i‖²/σ²) over the class's
centred kernel points kc (‖kc_i‖² = ksq_i): :func:`exact_lse` (differentiable, the reference), :func:`bounded_lse`
(no gradient, two passes per block) and :func:`gathered_lse` (a small batch against each query's own class).
"""

from __future__ import annotations

import math

import torch

#: :func:`bounded_lse` works on CPU blocks of about this many elements per torch thread (512 KiB of
#: float32: the matrix product writes a block and exp and sum read it while it is still in the core's cache).
_BLOCK_ELEMENTS = 1 << 17
#: kernel points whose largest exponent gives :func:`bounded_lse` a lower bound on the maximum
_PROBE_POINTS = 32
#: the shift of :func:`bounded_lse` is at least the upper bound minus this: every term is at
#: most e^75, so a sum of up to ~900,000 of them stays below float32's largest value (e^88.7)
_MAX_EXPONENT = 75.0
#: a row of :func:`bounded_lse` whose shifted sum is below e^-60 is recomputed exactly: above it,
#: the largest term is ≥ e^-60/K, a normal float32 for any K ≤ e^27, and the terms that exp flushes below
#: e^-87 (float32's smallest normal) add at most K·e^-27 relative.
_LOW_SUM = math.exp(-60.0)

#: Terms more than this far below a row's largest exponent are clamped to it before exp: each then adds at most
#: e^-80 ≈ 1.8e-35 of the largest term (invisible in float32 and float64 sums of any realistic size), and exp
#: never produces subnormal numbers, which are ~10x slower on x86 CPUs.
_EXP_FLOOR = -80.0


def _lse_rows(m: torch.Tensor) -> torch.Tensor:
    """Row-wise log-sum-exp; in place (no extra N×K buffers) when no gradient is needed."""
    if m.requires_grad:
        return torch.logsumexp(m, dim=1)
    top = m.amax(dim=1, keepdim=True)
    return m.sub_(top).clamp_min_(_EXP_FLOOR).exp_().sum(dim=1).log_() + top.squeeze(1)


def exact_lse(zc: torch.Tensor, kc: torch.Tensor, ksq: torch.Tensor, sigma2: float, chunk_elements: int) -> torch.Tensor:
    """logsumexp_i(−‖zc − kc_i‖²/σ²) for each row of zc, in blocks of at most ``chunk_elements``.

    −‖z − k‖²/σ² = (2 z·k − ‖k‖²)/σ² − ‖z‖²/σ²: one fused matrix product per block (addmm) gives the first
    part and the row constant is added after the log-sum-exp. Differentiable; the exact reference for
    :func:`bounded_lse`.
    """
    k_step = max(1, min(len(kc), chunk_elements))
    q_step = max(1, chunk_elements // k_step)
    out = []
    for q in range(0, len(zc), q_step):
        zq = zc[q : q + q_step]
        parts = [_lse_rows(torch.addmm(ksq[j : j + k_step], zq, kc[j : j + k_step].T,
                                       beta=-1.0 / sigma2, alpha=2.0 / sigma2))
                 for j in range(0, len(kc), k_step)]
        lse = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts), dim=0)
        out.append(lse - zq.pow(2).sum(1) / sigma2)
    return torch.cat(out)


def bounded_lse(zc: torch.Tensor, aug: torch.Tensor, norms: torch.Tensor, kc: torch.Tensor, ksq: torch.Tensor,
            sigma2: float, chunk_elements: int) -> torch.Tensor:
    """:func:`exact_lse` without gradients, in two passes over each block instead of six.

    log Σ_i exp(t_i) = s + log Σ_i exp(t_i − s) holds for any shift s; it only has to keep exp(t_i − s)
    from overflowing and the largest term from underflowing, so no exact row maximum is needed. Two cheap
    bounds give one: u = −dist(‖zc‖, [min ‖kc_i‖, max ‖kc_i‖])²/σ² ≥ max t (‖zc − kc_i‖ ≥ |‖zc‖ − ‖kc_i‖|), m = the
    maximum over the first :data:`_PROBE_POINTS` kernel points ≤ max t; s = max(m, u − 75) puts every
    exp(t_i − s) ≤ e^75 and the largest ≥ 1 unless u is more than 135 above the true maximum. One matrix
    product per cache-sized block gives t − s directly (the row terms −‖zc‖²/σ² − s ride in an extra
    column), then exp and sum. A row whose sum is below e^-60 or not finite is recomputed by
    :func:`exact_lse`.
    """
    zsq = zc.pow(2).sum(1)
    r = zsq.sqrt()
    gap = torch.maximum(r - norms[1], norms[0] - r).clamp_min_(0.0)
    upper = gap.pow(2) / -sigma2
    za = torch.cat([zc, zc.new_ones(len(zc), 1), (zsq / -sigma2)[:, None]], 1)
    probe = (za @ aug[:, :_PROBE_POINTS]).amax(1)
    shift = torch.maximum(probe, upper - _MAX_EXPONENT)
    za[:, -1] -= shift
    k = aug.shape[1]
    # a CPU block stays in the cores' caches (one share per torch thread); a GPU wants large blocks
    block_elements = chunk_elements if zc.is_cuda else _BLOCK_ELEMENTS * torch.get_num_threads()
    rows = max(1, min(chunk_elements, max(block_elements, 64 * k)) // k)
    buf = zc.new_empty(min(rows, len(zc)), k)
    total = zc.new_empty(len(zc))
    for i in range(0, len(zc), rows):
        block = buf[: min(rows, len(zc) - i)]
        torch.mm(za[i : i + rows], aug, out=block)
        torch.sum(block.exp_(), 1, out=total[i : i + rows])
    redo = (total < _LOW_SUM) | ~torch.isfinite(total)
    lse = total.log_().add_(shift)
    if bool(redo.any()):
        lse[redo] = exact_lse(zc[redo], kc, ksq, sigma2, chunk_elements)
    return lse


def gathered_lse(z, classes, kc, ksq, centers, count_t, sigma2: float) -> torch.Tensor:
    """logsumexp over each query's own class kernel, all queries at once (padding masked out).

    One product of z with every kernel point, then each query's class block is picked: cheaper for a small
    batch than a loop over classes. With centred points kc = k − μ_c, (z − μ_c)·kc = z·kc − μ_c·kc.
    """
    n, (c, k, d) = len(z), kc.shape
    dots = (z @ kc.reshape(c * k, d).T).reshape(n, c, k)[torch.arange(n, device=z.device), classes]
    mu_dot = (centers[:, None, :] * kc).sum(-1)[classes]
    zsq = (z - centers[classes]).pow(2).sum(1, keepdim=True)
    d2 = (zsq + ksq[classes] - 2.0 * (dots - mu_dot)).clamp_min(0.0)
    valid = torch.arange(k, device=z.device)[None, :] < count_t[classes][:, None]
    return torch.logsumexp((d2 / -sigma2).masked_fill(~valid, float("-inf")), dim=1)
