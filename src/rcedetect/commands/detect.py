"""``rce detect RUN_DIR --metric kd|confidence|non_me|kd_bu|lid|mahalanobis --input PATH... [--fpr 0.05] [--json]``.

Prints, per input image, the predicted label or NOT SURE (score above the threshold T) with its score
(higher = more likely adversarial). The detector is fitted and calibrated on the run's own dataset and cached
in ``RUN_DIR/detector-<metric>/``; it is rebuilt only when the weights or the detector settings change.

- K-density kernel: ``--per-class`` (default 1000) random training features per class, by true label
  (protocol §4.2); σ² = the paper's value for the run's objective unless ``--sigma2`` is given (a number, or
  ``auto`` for the maximum held-out likelihood choice). The automatic choice is always computed and reported
  beside the one used.
- LID, Mahalanobis, KD+BU (protocol §15): statistics from the training split, their logistic regression from
  ``--fit-on`` (default FGSM) at ``--fit-eps`` on the last ``--fit-images`` training images (never scored).
- Threshold T: from clean held-out data only, the LAST ``--calibration-size`` images of the test split
  (default 1000, at most half of the split), so that ``--fpr`` of them is rejected. Score the images before
  them if you want calibration and evaluation data kept apart.

Inputs: image files (PNG/JPEG/...; converted to the model's channels, size checked), ``.npy`` arrays, ``.npz`` files with
an array ``x`` (uint8 NHW or NHWC, or float NCHW in [0, 1]) or ``.safetensors`` files with a tensor ``x``
(same layouts); the ``.npz`` of ``rce attack --export`` (array ``x_adv``) or an ``rce attack`` output folder
(``RUN/attacks/NAME-HASH``), both read by :func:`rcedetect.evaluation.adv_export.load_adversarial`. These carry the true
labels: each such input also gets one summary line (``summaries`` with ``--json``): the shares NOT SURE, accepted
with the true label and accepted with another, and the accuracy with rejection; its JSON results add ``y`` and
``test_index``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import add_fit_options, fit_options


def add_detector_options(p) -> None:
    """RUN_DIR, --metric and the options of its detector (shared by ``rce detect`` and ``rce calibrate``)."""
    from ..detectors import names

    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a trained run folder (with checkpoint.json); the detector is cached in RUN_DIR/detector-<metric>/")
    p.add_argument("--metric", required=True, choices=names(), help="a registered detector (rcedetect.detectors)")
    add_fit_options(p)


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="label inputs or say NOT SURE with a fitted detector (paper §3.3)",
                       description="Label each input image with the run's classifier, or say NOT SURE where its "
                                   "calibrated detector rejects it (paper §3.3); for an attack folder or export, "
                                   "also the share NOT SURE and the accuracy with rejection.")
    add_detector_options(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="image files, .npy arrays, .npz (array x) or .safetensors (tensor x) batches, .npz files of "
                        "rce attack --export, or rce attack output folders (RUN/attacks/NAME-HASH)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def describe(det, folder: Path, sigma2_setting) -> str:
    """One line: the detector, its bandwidth, its threshold and where it is cached."""
    bw = ""
    if det.kd:
        which = {None: "the paper's", "auto": "automatic"}.get(sigma2_setting, "given")
        bw = (f", sigma2={det.kd.sigma2:.4g} ({which}; maximum held-out likelihood: "
              f"{det.extra.get('sigma2_auto', float('nan')):.4g})")
    return (f"{det.metric} detector{bw}: threshold {det.threshold:.6g} rejects {100 * det.fpr:g}% of clean inputs "
            f"({det.extra.get('calibration')}); cached in {folder}")


def _check_shape(path, x, shape) -> None:
    from ..core.errors import InputError

    if tuple(x.shape[1:]) != tuple(shape):
        raise InputError(f"input {path} holds {x.shape[2]}x{x.shape[3]} images with {x.shape[1]} channel(s) but "
                         f"the model takes {shape[1]}x{shape[2]} with {shape[0]}; resize it")


def read_input(path: str, channels: int, num_classes: int | None = None) -> dict:
    """One ``--input``: {"x": float NCHW images in [0, 1], "y": true labels or None, "indices": test-set indices
    or None, "single": one image file}. Exports of ``rce attack --export`` and ``rce attack`` folders bring their
    labels (:func:`rcedetect.evaluation.adv_export.load_adversarial`); every other file is read by
    :func:`rcedetect.data.read_images`."""
    from .. import data
    from ..core.validation import check_images, check_labels
    from ..evaluation.adv_export import is_export, load_adversarial

    p = Path(path)
    if p.is_dir() or is_export(p):
        x, y, meta = load_adversarial(p)
        if len(x) == 0:
            from ..core.errors import InputError

            raise InputError(f"input {path} holds no images")
        check_images(x, channels=channels, name=f"input {path}")
        if y is not None and num_classes is not None:  # labels of another dataset would be scored as wrong answers
            check_labels(y, len(x), num_classes, name=f"the labels (y) of input {path}")
        return {"x": x, "y": y, "indices": meta.get("indices"), "single": False}
    return {"x": data.read_images(p, channels), "y": None, "indices": None,
            "single": p.suffix.lower() in data.IMAGE_SUFFIXES}


def labelled_summary(path: str, rows: list[dict]) -> dict:
    """What the detector made of the images of one input with true labels: the shares NOT SURE, accepted with
    the true label, accepted with another label, and the accuracy with rejection (right label or NOT SURE, as
    :func:`rcedetect.stats.operating_point.operating_point` counts it)."""
    n = len(rows)
    not_sure = sum(not r["accepted"] for r in rows)
    right = sum(r["accepted"] and r["label"] == r["y"] for r in rows)
    return {"input": path, "n": n, "not_sure_rate": not_sure / n, "accepted_right_rate": right / n,
            "accepted_wrong_rate": (n - not_sure - right) / n, "accuracy_with_rejection": (right + not_sure) / n}


def run(args) -> int:
    from ..core.device import resolve
    from ..core.io import check_writable_dir
    from ..evaluation.calibrated import calibrated_detector
    from ..models import checkpoint

    opts = fit_options(args, args.metric)
    run_dir = Path(args.run_dir)
    ckpt = checkpoint.load(run_dir, device=resolve(args.device))
    check_writable_dir(run_dir, "run folder")  # what this command writes goes there: fail before the work
    clf = ckpt.classifier
    inputs = [(p, read_input(p, clf.in_channels, clf.num_classes)) for p in args.input]  # fail fast on bad input
    if clf.input_shape is not None:  # checkpoints record the image shape: refuse before calibrating anything
        for path, inp in inputs:
            _check_shape(path, inp["x"], clf.input_shape)
    det = calibrated_detector(ckpt, run_dir, args.metric, opts)
    shape = tuple(det.extra["image_shape"])
    results, summaries = [], []
    for path, inp in inputs:
        x, y, idx = inp["x"], inp["y"], inp["indices"]
        _check_shape(path, x, shape)
        labels, scores = det.decide(x)
        preds = clf.predict(x).tolist()
        rows = []
        for i, (lab, s) in enumerate(zip(labels.tolist(), scores.tolist())):
            # NOT SURE as in the HTTP answer: label null, accepted false, predicted = the classifier's label
            row = {"input": str(path), "index": None if inp["single"] else i,
                   "label": None if lab < 0 else lab, "accepted": lab >= 0, "predicted": int(preds[i]), "score": s}
            if y is not None:
                row["y"] = int(y[i])
            if idx is not None:
                row["test_index"] = int(idx[i])
            rows.append(row)
        results += rows
        if y is not None:
            summaries.append(labelled_summary(str(path), rows))
    if args.json:
        out = {"run": str(run_dir), "metric": det.metric, "threshold": det.threshold, "fpr": det.fpr,
               "calibration": det.extra.get("calibration"), "sigma2": det.kd.sigma2 if det.kd else None,
               "sigma2_auto": det.extra.get("sigma2_auto"), "results": results}
        if summaries:
            out["summaries"] = summaries
        print(json.dumps(out, indent=1))
        return 0
    print(describe(det, run_dir / f"detector-{args.metric}", opts.sigma2))
    for r in results:
        name = r["input"] if r["index"] is None else f"{r['input']}[{r['index']}]"
        print(f"{name}: {r['label'] if r['accepted'] else 'NOT SURE'} (score {r['score']:.6g})")
    for m in summaries:
        print(f"{m['input']}: {m['n']} images with true labels: NOT SURE {100 * m['not_sure_rate']:.1f}%, "
              f"accepted with the true label {100 * m['accepted_right_rate']:.1f}%, accepted with another "
              f"{100 * m['accepted_wrong_rate']:.1f}%; accuracy with rejection {100 * m['accuracy_with_rejection']:.1f}%")
    return 0
