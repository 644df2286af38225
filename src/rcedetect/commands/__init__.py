"""CLI subcommands: each module defines add_parser(subparsers) and run(args) -> int.

Layer: above :mod:`rcedetect.serve`, below :mod:`rcedetect.cli` (which discovers them); a command may import
every part of the package, and nothing but the CLI imports a command.
"""
