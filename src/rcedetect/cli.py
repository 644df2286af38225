"""The ``rce`` command line: thin. Parse, call the library, say where outputs went.

Each subcommand lives in ``rcedetect.commands.<name>`` with ``add_parser(subparsers)`` and ``run(args)``.
Any :class:`RceError` (bad input, unknown name, missing file, broken checkpoint) becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .commands import HelpFormatter
from .core.errors import RceError
from .core.io import package_version


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # every command's help shows each option's default
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2 (argparse's status for usage errors)
        self.exit(2, f"rce: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rce", description="Robust detection of adversarial examples (Pang et al. 2018).")
    parser.add_argument("--version", action="version", version=f"rcedetect {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                help="one of the commands below; rce COMMAND --help lists its options")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def _speaks() -> bool:
    """Under torchrun every rank meets the same bad input: only rank 0 says so."""
    from .core.distributed import world

    return world().main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except RceError as e:
        if _speaks():
            print(f"rce {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: disk full, permissions, a file where a folder should be
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        if _speaks():
            print(f"rce {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rce {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
