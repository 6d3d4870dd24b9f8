"""What every subcommand of the command line shares: parsing, checks, output, model loading.

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

from .errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from .options import Backend, choices

DEFAULT_MODEL = "smollm2-135m-instruct"
# load_model's dtypes (workbench.models._DTYPES); a test keeps the two in step.
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


def parse_list(text: str, flag: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list of names, each one of `allowed` when given.

    Example:
        >>> parse_list("add,project", "--modes", ("add", "project", "ablate"))
        ['add', 'project']
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidArgumentError(f"{flag} {text!r} is not a comma-separated list")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        raise InvalidArgumentError(f"{flag} {text!r}: {bad} not among {tuple(allowed or ())}")
    return items


def parse_floats(text: str, flag: str) -> list[float]:
    """Comma-separated finite numbers.

    Example:
        >>> parse_floats("0.5,1", "--strengths")
        [0.5, 1.0]
    """
    values = []
    for item in parse_list(text, flag):
        try:
            values.append(finite_float(item))
        except argparse.ArgumentTypeError:
            raise InvalidArgumentError(
                f"{flag} {text!r}: {item!r} is not a finite number"
            ) from None
    return values


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --shard '4/4' must be i/n with 0 <= i < n, e.g. 0/4
    """
    match = _SHARD.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise InvalidArgumentError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. 0/4")
    return int(match[1]), int(match[2])


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
    from .pairs import _bundled

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


def input_file(path: Path, what: str) -> Path:
    """`path` if it is an existing file, else an error naming it as `what`."""
    if path.is_dir():
        raise InvalidArgumentError(f"{what} {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise InvalidArgumentError(f"{what} {str(path)!r} does not exist")
    return path


def sweep_file(path: Path) -> Path:
    """`path` if it exists and starts with a sweep header.

    Checked here because `workbench.sweep_files.read_rows` cuts a file's unparsable
    last line off in place (a torn write, for a sweep file): given some other file by
    mistake, it would change the user's file.
    """
    input_file(path, "sweep file")
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError as e:
        raise InvalidArgumentError(f"sweep file {str(path)!r} cannot be read: {e}") from e
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != "workbench.sweep":
        raise InvalidArgumentError(
            f"{str(path)!r} is not a sweep file (written by `workbench sweep`): no sweep header"
        )
    return path


def output_path(path: Path, flag: str = "--out") -> Path:
    """`path` if its directory exists; directories are never created silently.

    Example:
        >>> output_path(Path("no_such_dir/v.safetensors"))
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --out 'no_such_dir/v.safetensors': directory 'no_such_dir' does not exist; create it first
    """
    if path.is_dir():
        raise InvalidArgumentError(f"{flag} {str(path)!r} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise InvalidArgumentError(
            f"{flag} {str(path)!r}: directory {str(parent)!r} does not exist; create it first"
        )
    return path


def output_dir(path: Path, flag: str) -> Path:
    """`path` if it is an existing directory."""
    if not path.is_dir():
        raise InvalidArgumentError(f"{flag} {str(path)!r} is not an existing directory")
    return path


def read_prompts(args_prompts: Sequence[str], prompts_file: Path | None) -> list[str]:
    """Prompts from arguments, then from a file with one prompt a line (``-``: stdin)."""
    prompts = list(args_prompts)
    if prompts_file is not None:
        if str(prompts_file) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = input_file(prompts_file, "prompts file").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise InvalidArgumentError(
                    f"cannot read prompts file {str(prompts_file)!r}: {e}"
                ) from e
        prompts += [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InvalidArgumentError("no prompts: give PROMPT arguments or --prompts-file FILE")
    return prompts


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

    from .models import load_model

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
    from .vectors import InstructionVector

    return InstructionVector.load(input_file(path, "vector file"))


def check_fits(vec: Any, path: Path, model: Any) -> None:
    """Refuse a vector made for another model shape, naming the file."""
    from .errors import VectorMismatchError

    try:
        vec.check_model(model)
    except VectorMismatchError as e:
        raise VectorMismatchError(f"vector {str(path)!r} does not fit this model: {e}") from e


def percent(value: float) -> str:
    """``0.25`` -> ``'25%'``."""
    return f"{100 * value:.0f}%"
