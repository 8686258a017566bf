"""The `minillada` command line: one subcommand per job, each defined in `minillada.commands`.

Only the module of the requested subcommand is imported, and each keeps torch out of its top-level
imports, so `minillada --help`, `minillada --version` and argument errors answer in well under a
second. A user error prints one line, `minillada <command>: error: <what, the value, what is
allowed>`, and exits 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from minillada import __version__

# Subcommand -> (module in minillada.commands exposing `add_parser(subparsers)`, one-line help).
COMMANDS = {
    "rope": ("minillada.commands.rope", "RoPE calculator: critical dimension, scale, new base"),
    "train": ("minillada.commands.train",
              "pre-train a mini LLaDA or extend its context window by post-training"),
    "eval": ("minillada.commands.eval", "evaluate a checkpoint: loss, PPL, NIAH, passkey, RULER"),
    "prepare": ("minillada.commands.prepare",
                "tokenize a corpus once into the token cache training reads"),
    "reproduce": ("minillada.commands.reproduce", "run the study notebooks through papermill"),
    "gate": ("minillada.commands.gate",
             "train bases and judge each by the instrument gate (gate.csv)"),
}
# What a handler raises for bad input (names the value and what is allowed): one line, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `<prog>: error: <message>`, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(names: Sequence[str] = tuple(COMMANDS)) -> Parser:
    """The parser; subcommands in `names` get their full parser (importing their module), the
    others only their name and help line."""
    parser = Parser(prog="minillada", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"minillada {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (anywhere on the line)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name in names:
            importlib.import_module(module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in given  # accepted anywhere on the line, not only before the command
    given = [a for a in given if a != "--debug"]
    # The top level takes no option with a value, so the first word is the command.
    first = next((a for a in given if not a.startswith("-")), None)
    args = build_parser([first] if first in COMMANDS else []).parse_args(given)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        if debug:
            raise
        message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) \
            else str(error)
        print(f"minillada {args.command}: error: {message}", file=sys.stderr)
        return 2
