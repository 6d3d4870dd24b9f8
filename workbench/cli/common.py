"""What every subcommand of the command line shares: parsing, argument types, output, model loading.

Checks here run before any model loads, so bad input costs no model load and ends in one
line on stderr. Nothing heavy (torch, transformers) is imported at module level:
building the parser must stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import textwrap
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.options import Backend, choices

from .paths import input_file

DEFAULT_MODEL = "smollm2-135m-instruct"
# load_model's dtypes (workbench.model.loading._DTYPES); a test keeps the two in step.
DTYPES = ("float32", "float16", "bfloat16", "float64")
_LAYER_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
_SHARD = re.compile(r"^(\d+)/(\d+)$")
# Where commands print their results; `main` points it at the real stdout, so that with
# --json library chatter (print calls while a model loads, say) can go to stderr.
_out: list[IO[str]] = []


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


def positive_int(text: str) -> int:
    """argparse type: an int of at least 1.

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: '0' is not a positive int
    """
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive int")
    return int(text)


def finite_float(text: str) -> float:
    """argparse type: a finite float.

    Example:
        >>> finite_float("1e3"), finite_float("-0.5")
        (1000.0, -0.5)
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_layers(text: str, flag: str = "--layers") -> list[int]:
    """Parse ``"10,12,14"`` or ``"8-20"`` into distinct layer indices, in order.

    Example:
        >>> parse_layers("8-10,14")
        [8, 9, 10, 14]
        >>> parse_layers("")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --layers '' is empty; give layers such as 14, 10,14 or 8-20
    """
    if not text.strip():
        raise InvalidArgumentError(
            f"{flag} {text!r} is empty; give layers such as 14, 10,14 or 8-20"
        )
    layers: list[int] = []
    for part in text.split(","):
        match = _LAYER_PART.match(part.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise InvalidArgumentError(
                f"{flag} {text!r}: {part!r} is not a layer (e.g. 14) or an ascending range "
                "(e.g. 8-20)"
            )
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        layers.extend(range(lo, hi + 1))
    repeated = sorted({x for x in layers if layers.count(x) > 1})
    if repeated:
        raise InvalidArgumentError(f"{flag} {text!r} names layer(s) {repeated} twice")
    return layers


def check_layers_in(layers: Sequence[int], held: Sequence[int], flag: str = "--layers") -> None:
    """Refuse layers the vector does not hold, naming the ones it does."""
    missing = [layer for layer in layers if layer not in held]
    if missing:
        raise InvalidArgumentError(f"{flag}: the vector holds layers {list(held)}, not {missing}")


def check_model_layers(layers: Sequence[int], n_layers: int, flag: str = "--layers") -> None:
    """Refuse layers the model does not have (before any vector exists).

    Example:
        >>> check_model_layers([1, 99], 3)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --layers: the model has layers 0..2, not [99]
    """
    missing = [layer for layer in layers if not 0 <= layer < n_layers]
    if missing:
        raise InvalidArgumentError(f"{flag}: the model has layers 0..{n_layers - 1}, not {missing}")


def check_distinct(items: Sequence[Any], what: str) -> None:
    """Refuse a list that names an item twice (it would be counted twice).

    Example:
        >>> check_distinct(["title", "concise", "title"], "instruction")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: instruction 'title' is given twice; name each once
    """
    for i, item in enumerate(items):
        if item in items[:i]:
            raise InvalidArgumentError(f"{what} {item!r} is given twice; name each once")


def parse_list(text: str, flag: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list of distinct names, each one of `allowed` when given.

    Example:
        >>> parse_list("add,project", "--modes", ("add", "project", "ablate"))
        ['add', 'project']
        >>> parse_list("add,add", "--modes", ("add", "project", "ablate"))
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --modes 'add,add' names 'add' twice; name each once
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidArgumentError(f"{flag} {text!r} is not a comma-separated list")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        raise InvalidArgumentError(f"{flag} {text!r}: {bad} not among {tuple(allowed or ())}")
    _no_repeats(items, items, flag, text)
    return items


def _no_repeats(values: Sequence[Any], items: Sequence[str], flag: str, text: str) -> None:
    # values[i] is items[i] parsed: "1" and "1.0" are one strength.
    for i, value in enumerate(values):
        if value in values[:i]:
            raise InvalidArgumentError(f"{flag} {text!r} names {items[i]!r} twice; name each once")


def parse_floats(text: str, flag: str) -> list[float]:
    """Comma-separated distinct finite numbers.

    Example:
        >>> parse_floats("0.5,1", "--strengths")
        [0.5, 1.0]
        >>> parse_floats("1,1.0", "--strengths")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --strengths '1,1.0' names '1.0' twice; name each once
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidArgumentError(f"{flag} {text!r} is not a comma-separated list")
    values = []
    for item in items:
        try:
            values.append(finite_float(item))
        except argparse.ArgumentTypeError:
            raise InvalidArgumentError(
                f"{flag} {text!r}: {item!r} is not a finite number"
            ) from None
    _no_repeats(values, items, flag, text)
    return values


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --shard '4/4' is not a shard: give I/N, part I of N parts with 0 <= I < N, e.g. 0/4
    """
    match = _SHARD.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise InvalidArgumentError(
            f"--shard {text!r} is not a shard: give I/N, part I of N parts with 0 <= I < N, "
            "e.g. 0/4"
        )
    return int(match[1]), int(match[2])


def check_count(n: int | None, available: int, flag: str, what: str) -> None:
    """Refuse asking for more items than there are (a smaller n would pass silently).

    Example:
        >>> check_count(30, 24, "--queries", "validation queries")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --queries 30: there are only 24 validation queries
    """
    if n is not None and n > available:
        raise InvalidArgumentError(f"{flag} {n}: there are only {available} {what}")


def parse_settings(items: Sequence[str], instruction: str) -> dict[str, Any]:
    """``--set NAME=VALUE`` items, each parsed by its placeholder's declared type.

    Example:
        >>> parse_settings(["num_bullets=4"], "bullets")
        {'num_bullets': 4}
        >>> parse_settings(["num_bullets=-3"], "bullets")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --set 'num_bullets=-3': instruction 'bullets': placeholder num_bullets must be an int in [1..10], got -3
    """
    from workbench.vectors.pairs import _bundled

    instr = _bundled(instruction)
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise InvalidArgumentError(f"--set expects NAME=VALUE, got {item!r}")
        name = name.strip()
        if name in values:
            raise InvalidArgumentError(f"--set {name} is given twice")
        where = f"--set {item!r}: instruction {instruction!r}: "
        values[name] = instr.placeholder(name).parse(text, where)
    return values


@contextlib.contextmanager
def output_to(stream: IO[str]) -> Iterator[None]:
    """Send `say`/`emit_json` output to `stream` for the duration."""
    _out.append(stream)
    try:
        yield
    finally:
        _out.pop()


def say(text: str = "") -> None:
    """Print a line of the command's output (for people)."""
    stream = _out[-1] if _out else sys.stdout
    print(text, file=stream, flush=True)


def emit_json(value: Any) -> None:
    """Print `value` as one line of JSON (a JSONL row, or the whole answer)."""
    say(json.dumps(value, allow_nan=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    # json.dumps expects a TypeError here; ArgumentTypeError is one.
    raise ArgumentTypeError(f"{type(value).__name__} is not JSON serialisable")


def frame_records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as JSON-ready dicts (missing values as None)."""
    return json.loads(frame.to_json(orient="records", double_precision=15))


def progress(iterable: Iterable[Any], args: argparse.Namespace, **kw: Any) -> Any:
    """A tqdm bar on stderr unless --quiet."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=args.quiet, file=sys.stderr, **kw)


def load_model_from(args: argparse.Namespace, name: str | None = None) -> Any:
    """The model named by --model (or `name`), loaded without progress bars or log lines.

    Errors a user can cause (a missing checkpoint, no network for a hub id, an
    unavailable device) end as one `WorkbenchError` line.
    """
    import transformers

    from workbench.model.loading import load_model

    name = args.model if args.model is not None else name
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        # Some loaders print; stdout is reserved for the command's own output.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_model(name, backend=args.backend, device=args.device, dtype=args.dtype)
    except WorkbenchError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidArgumentError(f"cannot load model {name!r}: {first}") from e


def read_vector(path: Path) -> Any:
    """The vector file at `path` (existence checked first, so the message names it)."""
    from workbench.vectors.instruction_vector import InstructionVector

    return InstructionVector.load(input_file(path, "vector file"))


def check_fits(vec: Any, path: Path, model: Any) -> None:
    """Refuse a vector made for another model shape, naming the file."""
    from workbench.errors import VectorMismatchError

    try:
        vec.check_model(model)
    except VectorMismatchError as e:
        raise VectorMismatchError(f"vector {str(path)!r} does not fit this model: {e}") from e


def percent(value: float) -> str:
    """``0.25`` -> ``'25%'``."""
    return f"{100 * value:.0f}%"
