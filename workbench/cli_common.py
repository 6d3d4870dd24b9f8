"""What every subcommand of the command line shares: parsing, checks, output, model loading.

Checks here run before any model loads, so bad input costs no model load and ends in one
line on stderr. Nothing heavy (torch, transformers) is imported at module level:
building the parser must stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import stat
import sys
import textwrap
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from .files import user_path, write_target
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


def path_arg(text: str) -> Path:
    """argparse type of every path option: ``~`` expanded, an empty path refused.

    Example:
        >>> path_arg("~/v.safetensors") == Path.home() / "v.safetensors"
        True
    """
    try:
        return user_path(text)
    except WorkbenchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_force(parser: argparse.ArgumentParser) -> None:
    """``--force``: consent to replace an existing output file of another kind."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file of another kind (never one of the inputs)",
    )


def _not_regular(path: Path) -> str | None:
    """What `path` is when it exists and is not a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def input_file(path: Path, what: str, *, pipe: bool = False) -> Path:
    """`path` if it is an existing regular file, else an error naming it as `what`.

    A FIFO is refused rather than read (reading one waits for a writer, forever),
    unless `pipe`: a prompts file may be one, as ``--prompts-file <(...)`` gives.
    """
    kind = _not_regular(path)
    if pipe and kind == "a FIFO":
        return path
    if kind is not None:
        raise InvalidArgumentError(f"{what} {str(path)!r} is {kind}, not a file")
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
        kind = file_kind(path)
    except OSError as e:
        raise InvalidArgumentError(f"sweep file {str(path)!r} cannot be read: {e}") from e
    if kind != "sweep":
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
    if str(path) == "-":
        raise InvalidArgumentError(f"{flag} '-': output to stdout is not supported; give a file")
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


# The format names in the headers of vector and sweep files
# (workbench.vector_files.FORMAT_NAME and workbench.sweep_files.SWEEP_FORMAT; a test
# keeps them in step: importing those modules here would import torch and pandas).
VECTOR_FORMAT = "workbench.instruction_vector"
SWEEP_FORMAT = "workbench.sweep"
# What `file_kind` finds, in words; the first four are the kinds commands write.
KINDS = {
    "vector": "a workbench vector file",
    "gguf": "a GGUF file",
    "html": "an HTML page",
    "sweep": "a sweep file",
    "safetensors": "a safetensors file that is not a workbench vector (model weights?)",
    "other": "a file of another kind",
}
# safetensors refuses larger headers; a bigger length means "not safetensors".
_MAX_HEADER = 100_000_000


def file_kind(path: Path) -> str:
    """What the existing file `path` holds, judged by its content, not its name.

    One of ``"empty"``, ``"vector"`` (safetensors with workbench metadata),
    ``"safetensors"`` (any other), ``"gguf"`` (the GGUF magic), ``"sweep"`` (a sweep
    header line), ``"html"`` (a doctype or ``<html>`` first) or ``"other"``. Raises
    OSError when it cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if not head:
            return "empty"
        if head[:4] == b"GGUF":
            return "gguf"
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if 1 < size <= min(_MAX_HEADER, os.fstat(f.fileno()).st_size - 8):
            try:
                header = json.loads(f.read(size))
            except ValueError:
                header = None
            if isinstance(header, dict):
                meta = header.get("__metadata__")
                try:
                    found = json.loads(meta["workbench"]).get("format")
                except (TypeError, KeyError, ValueError, AttributeError):
                    found = None
                return "vector" if found == VECTOR_FORMAT else "safetensors"
        f.seek(0)
        first = f.readline()
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if isinstance(header, dict) and header.get("format") == SWEEP_FORMAT:
        return "sweep"
    text = first[:1024].decode("utf-8", "replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype html", "<html")):
        return "html"
    return "other"


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: one real path (symlinks followed) or one inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: Path, directory: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, top]) == top


def distinct_files(paths: Sequence[Path], flag: str) -> None:
    """Refuse a list of input files that names one file twice (by path, link or inode)."""
    for i, path in enumerate(paths):
        for earlier in paths[:i]:
            if _same_file(path, earlier):
                same = "" if str(path) == str(earlier) else f" (the same file as {str(earlier)!r})"
                raise InvalidArgumentError(
                    f"{flag} {str(path)!r}{same} is given twice; name each file once"
                )


def model_input(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """--model as an input of `check_outputs` when it names a local checkpoint."""
    if getattr(args, "model", None) is None:
        return []
    path = Path(args.model).expanduser()
    return [("model", path)] if path.exists() else []


def check_outputs(
    args: argparse.Namespace,
    inputs: Sequence[tuple[str, Path | None]],
    outputs: Sequence[tuple[str, Path, str]],
) -> list[Path]:
    """Refuse, before any work, every output a command must not write.

    `inputs` are ``(what, path)`` (a local model directory counts with every file in
    it); `outputs` are ``(flag, path, kind)`` with kind one of ``vector``, ``gguf``,
    ``html``, ``sweep``. An output is refused when:

    - its directory does not exist, or it is a directory, a FIFO, a device, a socket or
      a dangling symlink (a symlink to a regular file is fine: the file is written);
    - it is one of the inputs: the same real path, or a hard link to it;
    - an earlier output is the same file;
    - it exists, is not empty, and holds another kind of file than `kind` (judged by
      `file_kind`), unless ``args.force`` is set.

    Returns the outputs of another kind that ``--force`` lets the command replace.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "s.jsonl").write_text('{"format": "workbench.sweep"}\\n')
        >>> args = argparse.Namespace(force=False)
        >>> check_outputs(args, [], [("--out", d / "s.jsonl", "vector")])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --out '.../s.jsonl' holds a sweep file, not a workbench vector file; pass --force to replace it, or write to another file
    """
    force = getattr(args, "force", None)
    written: list[tuple[str, Path, Path]] = []
    replaced: list[Path] = []
    for flag, path, kind in outputs:
        output_path(path, flag)
        real = write_target(path, flag)
        for what, given in inputs:
            if given is None or str(given) == "-":
                continue
            if given.is_dir() and real.exists() and _inside(real, given):
                raise InvalidArgumentError(
                    f"{flag} {str(path)!r} is a file of the {what} {str(given)!r}, which this "
                    "command reads; write to another file"
                )
            if _same_file(path, given):
                raise InvalidArgumentError(
                    f"{flag} {str(path)!r} is the {what} {str(given)!r}, which this command "
                    "reads; write to another file"
                )
        for other_flag, other, _ in written:
            if _same_file(path, other):
                raise InvalidArgumentError(
                    f"{flag} {str(path)!r} is the same file as {other_flag} {str(other)!r}; "
                    "give each output its own file"
                )
        written.append((flag, path, real))
        if not real.exists():
            continue
        try:
            found = file_kind(real)
        except OSError as e:
            raise InvalidArgumentError(
                f"{flag} {str(path)!r} exists and cannot be read ({e.strerror or e}); "
                "refusing to replace a file of unknown kind"
            ) from e
        if found in ("empty", kind):
            continue
        if not force:
            hint = "pass --force to replace it, or " if force is not None else ""
            raise InvalidArgumentError(
                f"{flag} {str(path)!r} holds {KINDS[found]}, not {KINDS[kind]}; "
                f"{hint}write to another file"
            )
        replaced.append(real)
    return replaced


def start_afresh(paths: Sequence[Path]) -> None:
    """Empty the files `check_outputs` let ``--force`` replace, for outputs that are
    appended to (sweep files): a sweep starts an empty file afresh. Called once the
    model has loaded, just before the work."""
    for path in paths:
        try:
            with open(path, "r+b") as f:
                f.truncate(0)
        except OSError as e:
            raise InvalidArgumentError(f"cannot replace {str(path)!r}: {e.strerror or e}") from e


def read_prompts(args_prompts: Sequence[str], prompts_file: Path | None) -> list[str]:
    """Prompts from arguments, then from a file with one prompt a line (``-``: stdin)."""
    prompts = list(args_prompts)
    if prompts_file is not None:
        if str(prompts_file) == "-":
            try:
                raw = getattr(sys.stdin, "buffer", None)  # absent on a StringIO stdin
                text = raw.read().decode("utf-8") if raw is not None else sys.stdin.read()
            except (OSError, UnicodeDecodeError) as e:
                raise InvalidArgumentError(f"cannot read prompts from stdin: {e}") from e
        else:
            try:
                file = input_file(prompts_file, "prompts file", pipe=True)
                text = file.read_text(encoding="utf-8")
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
