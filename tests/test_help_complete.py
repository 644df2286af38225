"""``rce COMMAND --help`` is as good as the errors: a description per command, every option with help that shows
its choices and its default, one name for the run folder (RUN_DIR), each command's own presets listed from the
package, and SR@5 / robust accuracy with rejection spelled out where `rce adaptive` reports them."""

from __future__ import annotations

import argparse
import re

import pytest

from rcedetect.cli import build_parser
from rcedetect.commands import preset_names

SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def action_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """What ``--help`` prints for one option: its invocation (with metavar or choices) and its help."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return formatter.format_help()


def has_default(action: argparse.Action) -> bool:
    """argparse has a default worth showing: not None, not a flag's False, not an empty list."""
    d = action.default
    return bool(action.option_strings) and d is not None and d is not argparse.SUPPRESS \
        and not isinstance(d, bool) and d != []


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_option_shows_its_help_choices_and_default(command):
    parser = subcommands()[command]
    assert (parser.description or "").strip(), f"rce {command} has no description line"
    assert "%%" not in parser.format_help(), f"rce {command}: a literal %% in its help"
    problems = []
    for action in parser._actions:
        if isinstance(action, SKIP):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        text = action_text(parser, action)
        if not (action.help or "").strip():
            problems.append(f"{name}: no help")
        if action.choices is not None and not all(str(c) in text for c in action.choices):
            problems.append(f"{name}: choices not shown")
        if has_default(action) and "default" not in text.lower():
            problems.append(f"{name}: default {action.default!r} not shown")
    assert not problems, f"rce {command} --help: " + "; ".join(problems)


def test_the_checker_catches_what_it_should():
    p = argparse.ArgumentParser()
    for args, kw in ((("--a",), {"default": 3, "help": "an a"}), (("--b",), {"choices": ("x", "y"), "metavar": "B",
                                                                          "help": "a b"})):
        p.add_argument(*args, **kw)
    a, b = p._actions[1:]
    assert has_default(a) and "default" not in action_text(p, a).lower()  # the plain formatter hides it
    assert "x" not in action_text(p, b)  # a metavar hides the choices


def test_the_run_folder_has_one_name():
    for command, parser in subcommands().items():
        for action in parser._actions:
            if action.dest in ("run_dir", "out_dir", "resume", "init", "out") and action.metavar is not None:
                assert action.metavar == "RUN_DIR", f"rce {command} {action.dest}: metavar {action.metavar}"
            if not action.option_strings and action.dest.endswith("_dir"):
                assert action.metavar == "RUN_DIR", f"rce {command}: positional {action.dest} is not RUN_DIR"


def test_each_command_lists_its_own_presets():
    train, reproduce = preset_names("train"), preset_names("reproduce")
    assert "cpu-mnist5k-rce" in train and "tiny" in reproduce and not set(train) & set(reproduce)
    helps = {c: re.sub(r"-\s+", "-", " ".join(p.format_help().split())) for c, p in subcommands().items()}
    assert all(n in helps["train"] for n in train) and not any(f" {n}," in helps["train"] for n in ("demo", "tiny"))
    assert all(n in helps["reproduce"] for n in reproduce) and "cpu-mnist5k-rce," not in helps["reproduce"]
    assert "see configs/" not in helps["train"] + helps["reproduce"]


def test_adaptive_help_spells_out_its_measures():
    text = " ".join(subcommands()["adaptive"].format_help().split())
    assert "SR@5" in text and "misclassified AND accepted" in text
    assert "robust accuracy with rejection" in text and "rejected" in text
