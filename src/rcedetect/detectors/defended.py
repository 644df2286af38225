"""The defended model: classifier and calibrated detector as ONE network of K + 1 classes, the last one "reject".

Carlini & Wagner 2017 ("Adversarial examples are not easily detected", the K+1-class construction) fold a
classifier F and a detector D into one model G whose logit K+1 wins exactly where D flags the input, so any attack
written for a plain classifier (torchattacks, foolbox, AutoAttack) attacks the detector as well, unchanged. Their
G_{K+1} = (Z_D(x) + 1) · max_j Z_j(x) needs positive class logits; :func:`defend` uses the additive form::

    G_j(x)   = Z_j(x),                                 j < K   (the effective logits: −Z for RCE, protocol §1.3)
    G_K(x)   = max_j Z_j(x) + scale · (score(x) − T)           (the "reject" logit, index K)

with score − T the margin of the deployed detector (:class:`~rcedetect.detectors.ScoreTerm`, T chosen on clean
held-out images, protocol §4.5, §14.1). The detector rejects where score > T, so argmax G = K there, and argmax G =
argmax Z (the first maximum) where score ≤ T: argmax G is the Detector's verdict, label or NOT SURE, on every
input; the margin is never rounded away (the reject logit is at least the next float above max_j Z_j where
score > T, at most max_j Z_j where score ≤ T). An attacker succeeds where the answer is neither the true label
nor a rejection (:func:`adaptive_success`, protocol §14.1), not where "argmax ≠ y".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import InputError, NotFittedError
from ..stats.operating_point import adaptive_success
from .base import observe
from .threshold import NOT_SURE, Detector

__all__ = ["Defended", "adaptive_success", "defend"]


def _term(detector):
    """The deployed detector's term score − T: from a fitted, calibrated Detector, or a term given as it is."""
    if isinstance(detector, Detector):
        if not detector.fitted:
            raise NotFittedError(f"defend needs a fitted detector; the {detector.metric} detector is not fitted "
                                 "(call fit(x_train, y_train), then calibrate(x_clean))")
        if not detector.calibrated:
            raise NotFittedError(f"defend needs a calibrated detector; the {detector.metric} detector has no "
                                 "threshold (call calibrate(x_clean) first)")
        return detector.scorer.term(detector.threshold)  # ScoreTerm: score − T, the detector as deployed
    if detector is None or not callable(getattr(detector, "margin", None)):
        raise InputError(f"defend needs a calibrated rcedetect Detector (or a detector term with "
                         f"margin(view, classes)), got {type(detector).__name__}")
    return detector


class Defended(nn.Module):
    """``classifier`` + detector term as one K + 1-class network (module docstring); built by :func:`defend`.
    ``forward(x)`` (images in [0, 1]) returns (N, K + 1) logits, differentiable in x."""

    def __init__(self, classifier, term, scale: float = 1.0):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise InputError(f"the reject logit's scale must be a finite number > 0, got {scale!r}")
        self.classifier, self.scale = classifier, float(scale)
        self.term = term.to(classifier.device) if callable(getattr(term, "to", None)) else term
        self.train(classifier.training)  # a new module starts in training mode; this one follows the classifier

    @property
    def num_classes(self) -> int:
        """K + 1."""
        return self.classifier.num_classes + 1

    @property
    def reject_class(self) -> int:
        """The index of the reject logit, K."""
        return self.classifier.num_classes

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    def margin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(effective logits (N, K), detector margin score − T (N,)) of one forward pass."""
        view = observe(self.classifier, x, self.term)
        return view.logits, self.term.margin(view, view.logits.argmax(1).detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.assemble(*self.margin(x))

    def assemble(self, logits: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """The (N, K + 1) logits from the pass of :meth:`margin` (attacks that also read the margin use one pass)."""
        top = logits.max(1).values
        reject = top + self.scale * margin.to(top.dtype)
        # keep the verdict exact where scale · margin is below top's rounding: strictly above top where rejected,
        # at most top where accepted (the bump is a constant; the gradient flows through top)
        bump = (torch.nextafter(top.detach(), torch.full_like(top, math.inf)) - top.detach())
        reject = torch.where(margin > 0, torch.maximum(reject, top + bump), torch.minimum(reject, top))
        return torch.cat([logits, reject[:, None]], dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax of the K + 1 logits with the reject class as -1 (NOT SURE), like ``Detector.predict``."""
        pred = self(x).argmax(1)
        return torch.where(pred == self.reject_class, torch.full_like(pred, NOT_SURE), pred)


def defend(classifier, detector, *, scale: float = 1.0) -> Defended:
    """The defended model of Carlini & Wagner 2017 (K+1 classes, module docstring): its argmax is ``detector``'s
    verdict (class K = NOT SURE), so every attack on it attacks the detector too.

    ``detector``: a fitted and calibrated :class:`~rcedetect.detectors.Detector` of ``classifier`` (else
    :class:`~rcedetect.core.errors.NotFittedError`), or a detector term with ``margin(view, classes)`` (≤ 0 where it
    accepts, e.g. a :class:`~rcedetect.detectors.ScoreTerm`). ``scale`` > 0 only sets how steep the reject logit
    is (not the verdict). Count an attack's success with :func:`adaptive_success`.
    """
    if classifier is None or not callable(getattr(classifier, "logits", None)):
        raise InputError(f"defend needs an rcedetect Classifier, got {type(classifier).__name__}")
    if getattr(detector, "classifier", classifier) is not classifier:
        raise InputError("the detector was built for another classifier; defend(classifier, detector) needs the "
                         "detector of this classifier")
    term = _term(detector)
    places = getattr(term, "num_classes", None)
    if places is not None and places != classifier.num_classes:
        raise InputError(f"the detector term is for {places} classes but the classifier has {classifier.num_classes}")
    return Defended(classifier, term, scale)
