"""The one typed settings layer (core/settings.py): a field's annotation and Rule decide what it takes, for every
dataclass that declares its settings with ``setting(...)``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from rcedetect import attacks
from rcedetect.core.errors import ConfigError
from rcedetect.core.settings import COUNT_RANGE, Rule, check_fields, check_value, load, setting


@dataclass(frozen=True)
class Example:
    steps: int = setting(3, lo=1)
    rates: tuple = setting((0.1,), each=Rule(lo=0, lo_open=True, kind="float"))
    momentum: float = setting(0.9, lo=0, hi=1, hi_open=True)
    mode: str = setting("a", choices=("a", "b"))
    per_class: int | str = setting(10, lo=1, choices=("all",))
    scale: float | None = setting(None, lo=0)
    flag: bool = False

    def __post_init__(self):
        check_fields(self, "ex.")


@pytest.mark.parametrize("kwargs, said", [
    ({"steps": 0}, "ex.steps must be an integer >= 1, got 0"),
    ({"steps": 2.0}, "ex.steps must be an integer, got 2.0"),
    ({"steps": True}, "ex.steps must be an integer, got True"),
    ({"steps": 2**300}, f"ex.steps must be an integer in [1, {COUNT_RANGE[1]}], got an integer of 301 bits"),
    ({"rates": [0.1, 0]}, "ex.rates must be a list of finite numbers > 0, got [0.1, 0]"),
    ({"rates": 0.1}, "ex.rates must be a list, got 0.1"),
    ({"momentum": 1.0}, "ex.momentum must be a finite number in [0, 1), got 1.0"),
    ({"momentum": float("nan")}, "ex.momentum must be a finite number, got nan"),
    ({"mode": "c"}, "ex.mode must be one of a, b, got 'c'"),
    ({"per_class": "most"}, "ex.per_class must be an integer or one of all, got 'most'"),
    ({"per_class": 0}, "ex.per_class must be an integer >= 1, got 0"),
    ({"scale": -1}, "ex.scale must be a finite number >= 0, got -1"),
    ({"flag": 1}, "ex.flag must be true or false, got 1"),
])
def test_a_value_outside_its_fields_rule_is_refused_with_what_it_must_be(kwargs, said):
    with pytest.raises(ConfigError) as e:
        Example(**kwargs)
    assert str(e.value) == said


def test_values_inside_the_rule_are_taken_and_normalised():
    ex = Example(steps=COUNT_RANGE[1], rates=[1, 0.5], momentum=0, per_class="all", scale=None, flag=True)
    assert ex.rates == (1.0, 0.5) and all(type(r) is float for r in ex.rates)  # a TOML list becomes a tuple
    assert ex.momentum == 0.0 and type(ex.momentum) is float
    assert ex.per_class == "all" and ex.scale is None
    assert check_value(3, "float | int", Rule(lo=0), "x") == 3 and type(check_value(3, "float | int", None, "x")) is int


def test_load_refuses_an_unknown_key_with_the_closest_name_and_a_missing_one():
    with pytest.raises(ConfigError, match="unknown setting 'stpes' in \\[ex\\]; did you mean `steps`"):
        load(Example, {"stpes": 3}, "ex")

    @dataclass(frozen=True)
    class Needs:
        eps: float = setting(lo=0)

    with pytest.raises(ConfigError, match="eps"):
        load(Needs, {}, "needs")
    assert load(Example, {"steps": 5}, "ex").steps == 5


def _ruled_fields(cls):
    return [f for f in dataclasses.fields(cls) if f.metadata.get("rule") is not None]


@pytest.mark.parametrize("name", sorted(attacks.REGISTRY))
def test_every_attacks_declared_counts_refuse_zero_and_a_bool(name):
    """Each integer setting of a registered attack with a least value refuses one below it and a bool, at
    construction (before any work)."""
    spec = attacks.spec(name)
    base = {"eps": 0.1} if spec.takes_eps else {}
    if spec.needs_detector:
        pytest.skip("needs a detector term to build")
    ints = [f for f in _ruled_fields(spec.cls) if f.type == "int" and f.metadata["rule"].lo is not None]
    if not ints:
        pytest.skip("no integer setting with a range")
    for f in ints:
        low = f.metadata["rule"].lo
        for bad in (int(low) - 1, True):
            with pytest.raises(ConfigError, match=f.name):
                spec.create(**base, **{f.name: bad})
