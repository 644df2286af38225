"""Confidence and non-maximal entropy (non-ME) of the effective logits (paper §3.1 eq. 1, protocol §4.7).

Both take p = softmax(effective logits), softmax(−Z) for an RCE model (``classifier.logits(x)``, never raw Z).
The functions return the quantities ("higher = more normal"); the registered metrics score their negatives.
"""

from __future__ import annotations

import torch

from ..core.errors import InputError
from .base import Metric, View, register


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise InputError(f"logits must have shape (N, L) with L >= 2 classes, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise InputError(f"logits must be floating point, got dtype {logits.dtype}")
    if logits.numel() and not bool(torch.isfinite(logits).all()):
        raise InputError("logits contain NaN or infinite values")
    return logits


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """max_i softmax(logits)_i per row (protocol §4.7)."""
    return torch.softmax(_check_logits(logits), dim=1).amax(dim=1)


def non_me(logits: torch.Tensor) -> torch.Tensor:
    """Non-maximal entropy, paper eq. (1): the entropy of the non-max probabilities renormalised to sum 1.

    Computed from log-softmax of the logits with the predicted class masked out, so a probability that
    underflows to 0 contributes 0 (never 0·log 0 = NaN). Its maximum, log(L−1), is reached exactly when all
    non-max probabilities are equal (paper Lemma 1).
    """
    logits = _check_logits(logits)
    top = torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1]).bool()
    log_q = torch.log_softmax(logits.masked_fill(top, float("-inf")), dim=1)
    log_q = log_q.masked_fill(top, 0.0)  # q = 0 there; a finite log keeps q·log q and its gradient at 0
    q = log_q.exp().masked_fill(top, 0.0)
    return -(q * log_q).sum(dim=1)


class NegatedLogitMetric(Metric):
    """A paper metric that learns nothing: score −``of``(effective logits), ``of`` "higher = more normal"."""

    in_paper = True

    def score(self, view: View) -> torch.Tensor:
        return -self.of(view.logits)


@register
class Confidence(NegatedLogitMetric):
    """Score −max softmax probability of the effective logits (protocol §4.7)."""

    name = label = "confidence"
    of = staticmethod(confidence)


@register
class NonME(NegatedLogitMetric):
    """Score −non-maximal entropy of the effective logits (paper eq. 1, protocol §4.7)."""

    name, label, of = "non_me", "non-ME", staticmethod(non_me)
