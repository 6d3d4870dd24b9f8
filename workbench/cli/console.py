"""The workbench command line: instruction vectors from extraction to report.

Typical run (each step's ``--help`` shows its options and an example):

  workbench list                                                # instructions, models
  workbench extract one_sentence --out one_sentence.safetensors # pairs -> vector
  workbench sweep one_sentence.safetensors --layers 10,14,18 --queries 8 --out one_sentence.jsonl
  workbench select one_sentence.jsonl --vector one_sentence.safetensors --write
  workbench steer one_sentence.safetensors "Describe a forest."  # selected setting
  workbench report one_sentence.safetensors --sweep one_sentence.jsonl --out one_sentence.html
  workbench evaluate one_sentence                               # the whole protocol

Bad input ends in one line on stderr and exit status 2, never a traceback. Every
check runs before any model loads and before any file is written.

Output files: a command never writes over one of its inputs, never writes two
outputs to one file, and never replaces anything but a regular file (a symlink to
one has its target written). An existing file of another kind than the output (a
sweep file where a vector goes, say; judged by content) is replaced only with
--force. ``~`` is expanded in every path.
--json prints machine-readable output (JSONL for row streams) on stdout; progress
bars and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from typing import Any

from workbench._version import __version__
from workbench.errors import WorkbenchError
from workbench.vectors.checks import checks_once

from . import commands, evaluate, report, steer, sweep
from .output import output_to
from .parser import OneLineParser

# Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
TRACEBACK_ENV = "WORKBENCH_TRACEBACK"
# In workflow order, as --help lists them.
_REGISTER = (
    commands.register_first,
    sweep.register,
    steer.register,
    evaluate.register,
    report.register,
    commands.register_last,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (cheap: no model code is imported).

    Example:
        >>> sub = build_parser()._subparsers._group_actions[0].choices
        >>> list(sub)[:4]
        ['list', 'extract', 'sweep', 'select']
    """
    parser = OneLineParser(
        prog="workbench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTER:
        register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for bad input, 1 otherwise).

    Example:
        >>> main(["list", "--json"]) == 0  # doctest: +ELLIPSIS
        {"instructions": ...
        True
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"workbench {args.command}"
    stdout = sys.stdout

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    try:
        # checks_once: the command checks a vector against its model, and so does every
        # library call it makes (one generate per batch); the first check is the one.
        with warnings.catch_warnings(), output_to(stdout), checks_once():
            # Library deprecation notices are not the user's business; the workbench's
            # own warnings (a vector used on other weights, say) are, in one line.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.showwarning = show
            # With --json, whatever a library prints goes to stderr: stdout holds only JSON.
            quiet = (
                contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
            )
            with quiet:
                args.func(args)
    except WorkbenchError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:
        # The reader went away (`workbench list | head`): stop quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as e:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(
            f"{prog}: error: unexpected {type(e).__name__}: {_one_line(e)} "
            f"(set {TRACEBACK_ENV}=1 for the traceback)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0
