"""The command line's parser: one-line usage errors, subcommands and their shared options.

Nothing heavy (torch, transformers) is imported here: building the parser must stay
cheap, so ``workbench --help`` loads no model code.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from typing import Any

from workbench.options import Backend, Dtype, choices

from .arguments import positive_int

DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES: tuple[str, ...] = choices(Dtype)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2).

    argparse prints the whole usage block before the error; the command line's rule
    is one clear line, so the usage is left to ``--help``.
    """

    def error(self, message: str) -> Any:
        one_line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._attach_dash_values(words), namespace)

    def _attach_dash_values(self, words: list[str]) -> list[str]:
        """``--shard -1/2`` as ``--shard=-1/2``.

        argparse takes a word that starts with ``-`` for an option unless it looks like
        a plain negative number, so ``--shard -1/2`` or ``--strengths -1,2`` would end
        in "expected one argument" instead of the option's own check of the value.
        """
        takes_value = {
            flag
            for action in self._actions
            if action.nargs is None
            for flag in action.option_strings
            if flag.startswith("--")
        }
        out: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--":
                return out + words[i:]
            value = words[i + 1] if i + 1 < len(words) else ""
            if (
                word in takes_value
                and re.match(r"-[^-]", value)
                and value not in self._option_string_actions
            ):
                out.append(f"{word}={value}")
                i += 2
                continue
            out.append(word)
            i += 1
        return out


def add_command(
    sub: Any, name: str, summary: str, example: str, description: str | None = None
) -> OneLineParser:
    """A subcommand whose ``--help`` ends with `example` (verbatim), with --json and --quiet."""
    parser = sub.add_parser(
        name,
        help=summary,
        # The raw formatter keeps the example's lines; the description is wrapped here.
        description="\n\n".join(textwrap.fill(t, 79) for t in (summary, description) if t),
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON (JSONL for row streams)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_model_options(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """--model, --backend, --device and --dtype; `what` says what the default model is."""
    parser.add_argument("--model", default=default, help=f"model name or path (default: {what})")
    parser.add_argument("--backend", default="bridge", choices=choices(Backend))
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="(default: float32)")


def count_option(parser: Any, flag: str, default: int) -> None:
    """Declare a positive-integer option (`--max-new-tokens`, `--batch-size`) showing its default."""
    parser.add_argument(
        flag, type=positive_int, default=default, metavar="N", help="(default: %(default)s)"
    )
