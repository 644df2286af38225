"""What :func:`~.detector_card.evaluate_detector` is given, checked before any attack runs (protocol: bad input is
a clear error, not a broken run): the settings (:func:`check_arguments`, also the command line's check of its
options), the model (:func:`classifier_of`: a Classifier, or any ``nn.Module`` returning logits, wrapped) and the
detector (:func:`metric_of`: a registered metric fitted here, a fitted Detector, or the user's own score)."""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.base import check_choice, check_eps, check_number
from ..core.errors import ConfigError, InputError, NotFittedError
from ..core.validation import check_labels, check_model_input
from ..detectors.base import check_metric
from .detector_suite import check_version
from .user_detector import UserMetric, resolve_callable

NORMS = ("linf", "l2")


def check_arguments(*, norm="linf", eps=8 / 255, fpr=0.05, threshold=None, version="standard"):
    """(norm, the ε grid, fpr, threshold, version) checked and normalised; ConfigError naming what is wrong."""
    check_choice(norm, "norm", NORMS)
    grid = list(eps) if isinstance(eps, (list, tuple)) else [eps]
    if not grid:
        raise ConfigError("eps must be a budget > 0 or a non-empty list of them")
    grid = [check_eps(check_number(e, "eps", "> 0"), norm=norm) for e in grid]
    if len(set(grid)) != len(grid):
        raise ConfigError(f"eps lists a budget twice: {grid}")
    if check_number(fpr, "fpr", "> 0") >= 1:
        raise ConfigError(f"fpr (the share of clean held-out images rejected) must be in (0, 1), got {fpr!r}")
    threshold = None if threshold is None else check_number(threshold, "threshold", "")
    return norm, grid, float(fpr), threshold, check_version(version)


def classifier_of(model, x: torch.Tensor, objective: str):
    """(the Classifier, a description): a Classifier as it is, any other nn.Module wrapped after its output was
    checked to be (n, K) logits."""
    from ..models.classifier import Classifier
    from ..models.wrapping import wrap

    if isinstance(model, Classifier):
        return model, f"{getattr(model.net, 'arch', type(model.net).__name__)} ({model.objective})"
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be an rcedetect Classifier or a torch.nn.Module returning logits, got "
                         f"{type(model).__name__}")
    clf = wrap(model, objective=objective, in_channels=int(x.shape[1]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = x[:2].to(device, torch.float32)
            try:
                logits = clf.net.model(clf.net.prepare(probe))
            except Exception as e:  # the user's network refuses the images: say which
                raise InputError(f"the model fails on images of shape {tuple(x.shape[1:])}: {type(e).__name__}: "
                                 f"{e}") from e
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(probe) or \
                logits.shape[1] < 2 or not logits.is_floating_point():
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(f"the model must return (n, classes) floating-point logits for n images, got {got} for "
                             f"{len(probe)} images")
        if not bool(torch.isfinite(logits).all()):
            raise InputError("the model returns NaN or infinite logits on the clean images")
        clf.net.check_split(tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    clf.input_shape = tuple(int(v) for v in x.shape[1:])
    return clf, f"{type(model).__name__} (wrapped, {objective})"


def metric_of(detector, clf, x_train, y_train, detector_settings):
    """(the metric scored, a description, (threshold, fpr) of a calibrated Detector or None)."""
    from ..detectors.threshold import Detector

    if detector_settings is not None and not isinstance(detector, str):
        raise ConfigError("detector_settings apply to a registered metric given by name")
    if isinstance(detector, Detector):
        if not detector.fitted:
            raise NotFittedError(f"the {detector.metric} detector is not fitted; call fit(x_train, y_train) first")
        if detector.classifier is not clf:
            raise InputError("the Detector was built for another classifier: pass its own classifier as model")
        own = (float(detector.threshold), detector.fpr) if detector.calibrated else None
        return detector.scorer, detector.metric, own
    if isinstance(detector, str) and ":" not in detector:
        check_metric(detector)
        det = Detector(clf, detector, **(detector_settings or {}))
        if det.scorer.needs_fit or det.scorer.needs_fit_images:
            if x_train is None or y_train is None:
                raise InputError(f"the {detector} detector learns from clean training images: give x_train= and "
                                 "y_train=")
            check_model_input(clf, x_train, "x_train")
            check_labels(y_train, len(x_train), clf.num_classes, name="y_train")
            det.fit(x_train, y_train)
        else:
            det.fit(None)
        return det.scorer, detector, None
    metric = UserMetric(*resolve_callable(detector, clf)) if isinstance(detector, str) else UserMetric(detector)
    return metric, metric.description, None
