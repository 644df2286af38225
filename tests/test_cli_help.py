"""Every option of every ``rce`` command says what it does; ``rce attack --attack`` offers the whole registry."""

from __future__ import annotations

import argparse

import pytest

from rcedetect import attacks
from rcedetect.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_the_top_level_options_have_help():
    parser = build_parser()
    assert all((a.help or "").strip() for a in parser._actions)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert all((c.help or "").strip() for c in sub._choices_actions), "every command has a one-line help"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_argument_has_help(command):
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in subcommands()[command]._actions if not (a.help or "").strip()]
    assert not missing, f"rce {command}: no help for {missing}"


def test_attack_offers_every_registered_attack():
    p = subcommands()["attack"]
    (action,) = [a for a in p._actions if "--attack" in a.option_strings]
    assert list(action.choices) == list(attacks.REGISTRY) and len(attacks.REGISTRY) >= 14
    text = p.format_help()
    assert all(name in text for name in attacks.REGISTRY)
    (eps,) = [a for a in p._actions if "--eps" in a.option_strings]
    assert "L∞" in eps.help and "[0, 1]" in eps.help and "L2" in eps.help
    args = p.parse_args(["RUN", "--attack", "torchattacks:PGD"])  # a library's attack is checked when built
    assert args.attack == "torchattacks:PGD"
