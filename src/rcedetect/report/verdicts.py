"""The one comparison behind every verdict of the report, and the words verdicts are said in.

Two numbers are told apart only where their 95 % intervals are: one interval wholly above the other
(:func:`compare`); where they overlap, or one has no interval, the run cannot tell them apart and the words say
"not resolved". A claim's verdict is True (holds), False (does not hold) or None (not resolved, not decided), and
its sentence opens with the claim, then the verdict (:func:`verdict_of` reads it back).
"""

from __future__ import annotations

from collections.abc import Sequence

HIGHER, LOWER, OVERLAP = "higher", "lower", "overlap"
#: a verdict at this scale, by its truth value
AT_SCALE = {True: "holds at this scale", False: "does not hold at this scale", None: "not resolved at this scale"}
#: the same, inside a sentence ("… so the claim that RCE is harder to fool holds at this scale")
SAID = {True: "holds", False: "does not hold", None: "is not resolved"}
#: whether the higher of two numbers stands apart from the other (:func:`compare` says "higher")
APART = {True: "the intervals apart", False: "within the intervals of each other: not resolved"}


def compare(a: Sequence | None, b: Sequence | None) -> str:
    """"higher" where the interval ``a`` = (lo, hi) lies wholly above ``b``, "lower" wholly below it, else
    "overlap" (a missing interval or end included)."""
    (a_lo, a_hi), (b_lo, b_hi) = a or (None, None), b or (None, None)
    if a_lo is not None and b_hi is not None and a_lo > b_hi:
        return HIGHER
    return LOWER if a_hi is not None and b_lo is not None and a_hi < b_lo else OVERLAP


def split(rows, a, b) -> tuple[list, list]:
    """(the rows where the interval ``a(row)`` lies wholly above ``b(row)``, those where it lies wholly below)."""
    found = [(r, compare(a(r), b(r))) for r in rows]
    return [r for r, c in found if c == HIGHER], [r for r, c in found if c == LOWER]


def by_direction(table: dict[tuple[bool, bool], str], up: list[str], down: list[str]) -> str:
    """The words of ``table`` for (any apart above, any apart below), with ``{up}`` and ``{down}`` filled in."""
    return table[(bool(up), bool(down))].format(up=", ".join(up), down=", ".join(down))


def verdict_of(sentence: str) -> bool | None:
    """True where a claim's sentence says it holds, False where it does not, None where it is not resolved or
    not decided."""
    verdict = sentence.split(": ", 1)[-1]
    return False if verdict.startswith("does not hold") else True if verdict.startswith("holds") else None
