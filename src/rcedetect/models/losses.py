"""Training objectives: cross-entropy and reverse cross-entropy (Pang et al. 2018, eq. 4).

Both take the *raw* network logits Z. RCE trains a "reverse classifier": softmax(Z) is pushed to put zero
mass on the true class and 1/(L-1) on every other class. At inference the sign is reversed, which lives in
:meth:`rcedetect.models.classifier.Classifier.logits` and nowhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError

OBJECTIVES = ("ce", "rce")


def check_objective(objective: str) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`, else ConfigError naming them."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective


def reverse_label_vector(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """R_y of paper §3.2: 0 at the true class and 1/(L-1) at every other class."""
    one_hot = F.one_hot(y, num_classes).to(torch.float32)
    return (1.0 - one_hot) / (num_classes - 1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_CE(x, y) = -1_yᵀ log softmax(Z), averaged over the batch (``reduction="none"``: per example)."""
    return F.cross_entropy(logits, y, reduction=reduction)


def reverse_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_RCE(x, y) = -R_yᵀ log softmax(Z) (paper eq. 4), averaged over the batch (``reduction="none"``: per
    example).

    With R_y = (1 - 1_y)/(L-1) this is logsumexp(Z) - (Σ_i Z_i - Z_y)/(L-1): no one-hot tensor, and finite for
    any finite logits (the original took ``log(softmax)``, which underflows to -inf). Its gradient w.r.t. Z is
    softmax(Z) - R_y.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    z = logits.float()
    num_classes = z.shape[1]
    others = (z.sum(dim=1) - z.gather(1, y[:, None]).squeeze(1)) / (num_classes - 1)
    per_example = torch.logsumexp(z, dim=1) - others
    return per_example if reduction == "none" else per_example.mean()


def objective_loss(objective: str, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The training loss of ``objective`` ('ce' or 'rce') on raw logits (``reduction="none"``: per example)."""
    if check_objective(objective) == "rce":
        return reverse_cross_entropy(logits, y, reduction)
    return cross_entropy(logits, y, reduction)
