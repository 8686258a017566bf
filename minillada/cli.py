"""The `minillada` command line: one subcommand per job, each defined in `minillada.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module in minillada.commands exposing `add_parser(subparsers)`; each parser
# sets `func` to its handler. Modules are imported on demand so `minillada rope` stays fast.
COMMANDS = {
    "rope": "minillada.commands.rope",
    "train": "minillada.commands.train",
    "eval": "minillada.commands.eval",
    "reproduce": "minillada.commands.reproduce",
}


def build_parser(names: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minillada", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in names:
        importlib.import_module(COMMANDS[name]).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the requested subcommand (torch-heavy modules stay unloaded).
    first = next((a for a in given if not a.startswith("-")), None)
    names = [first] if first in COMMANDS else list(COMMANDS)
    args = build_parser(names).parse_args(given)
    return int(args.func(args) or 0)
