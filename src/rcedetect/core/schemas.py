"""The one typed check of every JSON file rcedetect reads back: checkpoint.json, a run's config.json,
detector.json, an attack's summary.json and results.json.

A schema maps a field name to a :class:`Field` (its allowed kinds and whether it may be absent). :func:`check`
returns the object unchanged when it fits and raises :class:`~rcedetect.core.errors.CheckpointError` naming the file,
the field, what was expected and what was found when it does not, so a foreign, hand-edited or corrupted file is
refused before any of its values is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .settings import is_integer as _is_int
from .settings import is_number as _is_number

#: the kinds a field may have: name -> (test, how it is said in an error)
KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: isinstance(v, str) and bool(re.fullmatch(r"[\w.\-]+", v)), "a plain file name"),
    "sha256": (lambda v: isinstance(v, str) and bool(re.fullmatch(r"[0-9a-f]{64}", v)), "a sha256 hex digest"),
    "int": (_is_int, "an integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "number": (_is_number, "a finite number"),
    "rate": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(d) and d >= 1 for d in v),
              "a list [channels, height, width] of positive integers"),
    "null": (lambda v: v is None, "null"),
}


@dataclass(frozen=True)
class Field:
    kinds: tuple[str, ...]
    required: bool = True

    def accepts(self, value: Any) -> bool:
        return any(KINDS[k][0](value) for k in self.kinds)

    def expected(self) -> str:
        return " or ".join(KINDS[k][1] for k in self.kinds)


def need(*kinds: str) -> Field:
    return Field(kinds)


def may(*kinds: str) -> Field:
    """A field that may be absent (and, when present, has one of ``kinds``)."""
    return Field(kinds, required=False)


def _found(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


def check(obj: Any, schema: dict[str, Field], where: str | Path, what: str = "file") -> dict:
    """``obj`` if it is an object whose fields fit ``schema``; else :class:`CheckpointError` naming the first misfit."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {where} must hold a JSON object, found {_found(obj)}")
    for name, f in schema.items():
        if name not in obj:
            if f.required:
                raise CheckpointError(f"{what} {where} lacks the field {name!r} (truncated, foreign or hand-edited?)")
            continue
        if not f.accepts(obj[name]):
            raise CheckpointError(f"{what} {where}: field {name!r} must be {f.expected()}, found {_found(obj[name])}")
    return obj


def check_items(items: Any, schema: dict[str, Field], where: str | Path, what: str, field: str) -> list:
    """Each entry of the list ``items`` (field ``field`` of a file) checked against ``schema``."""
    if not isinstance(items, list):
        raise CheckpointError(f"{what} {where}: field {field!r} must be a list, found {_found(items)}")
    for i, item in enumerate(items):
        check(item, schema, f"{where} ({field}[{i}])", what)
    return items


CHECKPOINT = {
    "format": need("str"), "format_version": need("int"), "arch": need("str"), "in_channels": need("positive"),
    "num_classes": need("positive"), "objective": need("str"), "dataset": may("str"), "step": need("count"),
    "config": may("dict"), "metrics": may("dict"), "versions": may("dict"), "weights": need("name"),
    "weights_sha256": need("sha256"), "optimizer": may("name"), "optimizer_sha256": may("sha256"),
    "input_shape": may("shape", "null"), "model": may("dict"),
}

RUN_CONFIG = {"train": need("dict")}

DETECTOR = {
    "format": need("str"), "metric": need("str"), "objective": need("str"), "num_classes": need("positive"),
    "feature_dim": may("positive"), "settings": need("dict"), "state": need("dict"),
    "threshold": may("number", "null"), "fpr": may("rate", "null"), "n_calibration": may("count", "null"),
    "clean_rejection_rate": may("rate", "null"), "input_shape": may("shape", "null"), "extra": may("dict"),
}

ATTACK_SUMMARY = {"attack": need("str"), "n": need("count"), "batch_size": need("positive"), "dataset": may("str"),
                  "eps": may("number", "null"), "settings": may("dict"), "seed": may("int")}

RESULTS = {
    "format": need("str"), "format_version": may("int"), "preset": may("str"), "dataset": may("str"),
    "paper_dataset": may("str", "null"),
    "seed": may("int"), "config": may("dict"), "versions": may("dict"), "table2_eps": may("number", "null"),
    "cuts": may("list"), "timings": may("dict"), "models": need("dict"), "detectors": may("dict"),
    "attacks": need("list"), "transfer": may("list"), "tsne": may("dict"), "figure3": may("dict"),
    "noise": may("dict"), "log_kd_normal": may("dict"), "adaptive": may("dict", "null"),
}

RESULTS_MODEL = {"role": need("str"), "arch": need("str"), "objective": need("str"),
                 "test_accuracy": may("rate", "null"), "test_error_percent": may("number", "null")}

RESULTS_ATTACK = {"model": need("str"), "attack": need("str"), "objective": may("str"), "eps": may("number", "null"),
                  "n_images": may("count"), "n_pairs": may("count"), "success_rate": may("rate", "null"),
                  "detection": may("dict"), "settings": may("dict")}

#: the other records of results.json (:mod:`rcedetect.core.records`)
RESULTS_TRANSFER = {"n_pairs": may("count"), "transfer_rate": may("rate", "null"), "detection": may("dict")}
RESULTS_ADAPTIVE = {"model": need("str"), "metric": need("str"), "attack": need("str"), "eps": may("number", "null"),
                    "fooled": may("list"), "operating_point": may("dict")}
RESULTS_WORST_CASE = {"model": need("str"), "metric": need("str"), "eps": need("number"),
                      "attack_success_rate": may("rate", "null"), "n_clean_correct": may("count")}
RESULTS_ROBUST = {"broken_at": may("list"), "broken_by": may("list"), "model": may("str")}


def check_results(results: Any, where: str | Path) -> dict:
    """results.json: its top level, every model entry and every attack record (what the report reads)."""
    what = "results file"
    check(results, RESULTS, where, what)
    for name, model in results["models"].items():
        check(model, RESULTS_MODEL, f"{where} (models.{name})", what)
    check_items(results["attacks"], RESULTS_ATTACK, where, what, "attacks")
    for i, rec in enumerate(results["attacks"]):
        if rec["model"] not in results["models"]:
            raise CheckpointError(f"{what} {where}: attacks[{i}] names model {rec['model']!r}, which is not in "
                                  f"models ({', '.join(results['models'])})")
    return results


#: keys of results.json read as counts of images (``n``, ``n_pairs``, ...): an integer >= 0 or null
_NOT_COUNTS = {"name", "noise", "norm", "notes", "numpy"}
#: rates that are not shares of images
_NOT_RATES = {"learning_rate", "dropout_rate"}


def _value_misfit(key: str, value: Any) -> str | None:
    """What a leaf ``value`` under ``key`` should be, when it is not (None when it fits or the key has no rule)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if (key == "n" or key.startswith("n_")) and key not in _NOT_COUNTS:
        return None if _is_int(value) and value >= 0 else "an integer >= 0 (a count of images)"
    if key.endswith(("seconds", "seconds_per_example", "seconds_total")):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (math.isnan(value)
                                                                                  or 0 <= value < math.inf)
        return None if ok else "a number of seconds >= 0"
    if key.endswith("_rate") and key not in _NOT_RATES:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (math.isnan(value) or 0 <= value <= 1)
        return None if ok else "a rate in [0, 1]"
    return None


def check_result_values(results: dict, where: str | Path) -> dict:
    """Every count (``n``, ``n_*``), time (``*seconds``) and rate (``*_rate``) anywhere in results.json outside its
    ``config`` and ``versions``: a negative count, −1e308 seconds or a string where a number belongs is refused
    (:class:`CheckpointError` naming the path) before a report draws it."""
    stack: list[tuple[str, Any, str]] = [(k, v, k) for k, v in results.items() if k not in ("config", "versions")]
    while stack:
        key, value, path = stack.pop()
        if isinstance(value, dict):
            timing = key.endswith("seconds")  # {stage: seconds}
            stack.extend((f"{k}_seconds" if timing else str(k), v, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, v, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            misfit = _value_misfit(key, value)
            if misfit:
                raise CheckpointError(f"results file {where}: {path} must be {misfit}, found {_found(value)}")
    return results
