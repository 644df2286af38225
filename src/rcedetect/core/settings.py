"""One place for how settings are declared and refused: each setting's type (its annotation), range and default
written once on its dataclass field with :func:`setting`, checked by :func:`check_fields` and loaded from a table
(a TOML preset, ``--set``, a run folder's JSON) by :func:`load`; an unknown key is refused with the closest valid
name; and the command-line number types are built on the same ranges.

A typo in a preset (``threds = 1``, ``[detectr]``) is refused as the same typo in ``--set`` is, before any work;
seeds and thread counts that do not fit the 64-bit integers torch takes are refused here, not deep inside torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

#: seeds: 32 bits, so that the seeds derived from them (a training epoch's ``seed · 1,000,003 + epoch``, an attack
#: batch's ``seed · 1000 + batch``) still fit the 64 bits ``torch.manual_seed`` takes
SEED_RANGE = (0, 2**32 - 1)
#: CPU threads (0 = the library's default where a setting allows it)
THREADS_RANGE = (0, 4096)
#: counts of images, batches, resamples
COUNT_RANGE = (0, 2**40)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` for the closest of ``known`` to ``name`` (difflib), else ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def unknown_key_error(key: str, known: Iterable[str], where: str) -> ConfigError:
    """The error of one unknown key ``key`` of table ``where`` (the closest valid name, then every valid one)."""
    known = sorted(str(k) for k in known)
    place = f"[{where}]" if where else "the top level"
    return ConfigError(f"unknown setting {key!r} in {place}{did_you_mean(key, known)} (known: "
                       f"{', '.join(known) or 'none'})")


def check_keys(table: Any, known: Iterable[str], where: str) -> dict:
    """``table`` when it is a table whose keys are all in ``known``; else :class:`ConfigError` for the first unknown
    key, with the closest valid name ("did you mean `threads`?")."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table of settings, got {type(table).__name__} {str(table)[:40]!r}")
    known = list(known)
    for key in table:
        if key not in known:
            raise unknown_key_error(key, known, where)
    return table


def int_in_range(value: Any, where: str, lo: int, hi: int) -> int:
    """``value`` when it is an integer (not a bool) with lo <= value <= hi; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {str(value)[:40]!r}")
    if not lo <= value <= hi:
        shown = str(value) if abs(value).bit_length() < 200 else f"an integer of {abs(value).bit_length()} bits"
        raise ConfigError(f"{where} must be in [{lo}, {hi}], got {shown}")
    return value


def check_seed(value: Any, where: str = "seed") -> int:
    return int_in_range(value, where, *SEED_RANGE)


def check_threads(value: Any, where: str = "threads") -> int:
    return int_in_range(value, where, *THREADS_RANGE)


@dataclass(frozen=True)
class Rule:
    """The range of a number (``lo``/``hi``, open with ``lo_open``/``hi_open``; an integer's ``hi`` defaults to
    :data:`COUNT_RANGE`'s), the ``choices`` of a string, the rule of each item of a list (``each``, a Rule with its
    own ``kind``) and a ``hint`` said after the rule in an error."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    each: Rule | None = None
    hint: str = ""
    kind: str = ""  # for ``each``: "int" or "float"

    def bounds(self, integer: bool, full: bool = False) -> str:
        """How the range is said: an integer's default highest value only when ``full``."""
        hi = self.hi if self.hi is not None or not integer else COUNT_RANGE[1]
        lo, hi = (self.lo, hi) if integer else (_g(self.lo), _g(hi))
        if self.lo is not None and hi is not None and (full or not integer or self.hi is not None):
            return f" in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f" {'>' if self.lo_open else '>='} {lo}"
        return f" {'<' if self.hi_open else '<='} {hi}" if hi is not None else ""

    def fits(self, v: float, integer: bool) -> bool:
        hi = self.hi if self.hi is not None or not integer else COUNT_RANGE[1]
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (hi is None or (v < hi if self.hi_open else v <= hi)))


def _g(v: float | None) -> str | None:
    return None if v is None else f"{v:g}"


def setting(default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with ``default`` and its :class:`Rule` (``lo``, ``hi``, ``choices``, ``each``, ``hint``):
    the one declaration of a setting's type (the annotation), range and default."""
    return dataclasses.field(default=default, metadata={"rule": Rule(**rule)})


def _kinds(annotation: Any) -> set[str]:
    """The plain kinds of a field's annotation (``"float | None"`` -> {"float", "None"}); others are left out."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return {k.strip().split("[")[0] for k in text.split("|")}


def is_integer(v: Any) -> bool:
    """An int that is not a bool (the one test of an integer setting or record field)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown(v: Any) -> str:
    if is_integer(v) and abs(v).bit_length() >= 200:
        return f"an integer of {abs(v).bit_length()} bits"
    return str(v)[:40] if is_number(v) else repr(v)[:60]


def check_value(value: Any, annotation: Any, rule: Rule | None, name: str) -> Any:
    """``value`` checked against its field's annotation and ``rule`` (a list becomes a tuple, an integer given for a
    float a float); else :class:`ConfigError` saying what ``name`` must be."""
    kinds, rule = _kinds(annotation), rule or Rule()
    if value is None and "None" in kinds:
        return value
    hint = rule.hint

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{name} must be {what}{hint}, got {_shown(value)}")

    if "bool" in kinds and isinstance(value, bool):
        return value
    if "int" in kinds and "float" not in kinds and is_integer(value):
        if not rule.fits(value, True):
            raise refuse(f"an integer{rule.bounds(True, full=value > COUNT_RANGE[1])}")
        return value
    if "float" in kinds and is_number(value):
        if not rule.fits(value, False):
            raise refuse(f"a finite number{rule.bounds(False)}")
        return value if "int" in kinds else float(value)  # ``float | int``: a number kept as written
    if "str" in kinds and isinstance(value, str):
        if rule.choices is not None and value not in rule.choices:
            number = "an integer or " if "int" in kinds else "a finite number or " if "float" in kinds else ""
            raise refuse(f"{number}one of {', '.join(map(str, rule.choices))}")
        return value
    if "tuple" in kinds and isinstance(value, (list, tuple)):
        if rule.each is not None:
            each = rule.each
            try:
                return tuple(check_value(v, each.kind, each, name) for v in value)
            except ConfigError:
                raise refuse(f"a list of {'integers' if each.kind == 'int' else 'finite numbers'}"
                             f"{each.bounds(each.kind == 'int')}") from None
        return tuple(value)
    if kinds <= {"bool", "int", "float", "str", "tuple", "None"}:
        said = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "a string",
                "tuple": "a list", "None": "left out"}
        raise refuse(" or ".join(said[k] for k in ("bool", "int", "float", "str", "tuple", "None")
                                 if k in kinds and not (k == "int" and "float" in kinds)))
    return value  # an annotation without a plain kind (a table, a callable): its owner checks it


def typed(table: dict, key: str, where: str, kind: str = "int", **rule: Any) -> Any:
    """``table[key]`` checked as a ``kind`` ("int", "float", "bool", "str") with the :class:`Rule` ``rule``."""
    return check_value(table.get(key), kind, Rule(**rule), f"{where}.{key}")


def check_fields(obj: Any, where: str = "", name=None) -> None:
    """Check every field of the frozen dataclass ``obj`` by :func:`check_value` (in place: a list becomes a
    tuple); ``where`` prefixes the names in errors, ``name`` maps a field's name to how the user wrote it."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        said = name(f.name) if name else f"{where}{f.name}"
        checked = check_value(value, f.type, f.metadata.get("rule"), said)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def load(cls: type, table: Any, where: str):
    """An instance of dataclass ``cls`` from ``table`` (a preset's table, ``--set`` values or saved JSON): unknown
    keys refused with the closest valid name, then every field checked by ``cls`` itself."""
    known = [f.name for f in dataclasses.fields(cls)]
    check_keys(table, known, where)
    try:
        return cls(**table)
    except TypeError as e:  # a required field left out
        raise ConfigError(f"bad [{where}] settings: {e}") from None


# -- command-line types (argparse turns their ValueError into one line and exit status 2) ------------------
def int_arg(lo: int, hi: int):
    """An argparse ``type`` for an integer option in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(text) from None
        if not lo <= value <= hi:
            import argparse

            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text[:40]}")
        return value

    parse.__name__ = "integer"
    return parse


def float_arg(lo: float, hi: float, *, low_open: bool = False):
    """An argparse ``type`` for a finite number in [lo, hi] (or (lo, hi] with ``low_open``)."""

    def parse(text: str) -> float:
        import argparse

        try:
            value = float(text)
        except ValueError:
            raise ValueError(text) from None
        if not (math.isfinite(value) and (lo < value if low_open else lo <= value) and value <= hi):
            raise argparse.ArgumentTypeError(f"must be a number in {'(' if low_open else '['}{lo:g}, {hi:g}], "
                                             f"got {text[:40]}")
        return value

    parse.__name__ = "number"
    return parse


#: a seed option; any other integer option (its own checks say more); a thread count; a TCP port
seed_arg = int_arg(*SEED_RANGE)
int64_arg = int_arg(-(2**63), 2**63 - 1)
threads_arg = int_arg(1, THREADS_RANGE[1])
port_arg = int_arg(0, 65535)
