"""Statistics of detector scores, from arrays alone: AUC, TPR at a false-positive rate, ROC and the pair mask
(:mod:`.metrics`); thresholds chosen on clean held-out data, success and robust accuracy with rejection, bootstrap
intervals (:mod:`.operating_point`).

Layer: above :mod:`rcedetect.core`; imports nothing else of rcedetect.
"""
