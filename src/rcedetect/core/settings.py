"""One place for how settings are refused: an unknown key (with the closest valid name), an integer outside its
range, and the command-line number types built on the same ranges.

A typo in a preset (``threds = 1``, ``[detectr]``) is refused as the same typo in ``--set`` is, before any work;
seeds and thread counts that do not fit the 64-bit integers torch takes are refused here, not deep inside torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
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
