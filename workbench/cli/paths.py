"""What the command line reads and writes: path options, input files, and the output rule.

The output rule (`check_outputs`), checked before any model loads: a command never
writes over one of its own inputs, never writes two outputs to one file, never
replaces an existing file of another kind (a sweep file with a vector, a vector with
HTML) without ``--force``, and never replaces anything that is not a regular file.
A symlink to a regular file is followed, and ``~`` is expanded in every path option.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import InvalidArgumentError, WorkbenchError
from workbench.files import KINDS, file_kind, file_type, user_path, write_target


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
    return None if stat.S_ISREG(mode) else file_type(mode)


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

    Checked here because `workbench.evaluation.sweep_files.read_rows` cuts a file's unparsable
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


def output_dir(path: Path, flag: str, *, missing_ok: bool = False) -> bool:
    """Whether `path` is an existing directory (True) or, with `missing_ok`, one that
    does not exist yet and can be made with its parents (False); anything else (a
    file, or a file or dangling link in its way) is refused. Nothing is made here: the
    command makes it once its checks have passed and its model has loaded.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> output_dir(d, "--out-dir"), output_dir(d / "new" / "raw", "--out-dir", missing_ok=True)
        (True, False)
        >>> _ = (d / "notes").write_text("keep me")
        >>> output_dir(d / "notes" / "raw", "--out-dir", missing_ok=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --out-dir '.../notes/raw' cannot be made: '.../notes' is not a directory
    """
    if path.is_dir():
        return True
    if not missing_ok or path.exists() or path.is_symlink():
        raise InvalidArgumentError(f"{flag} {str(path)!r} is not an existing directory")
    parent = path.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidArgumentError(
            f"{flag} {str(path)!r} cannot be made: {str(parent)!r} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"{flag} {str(path)!r} cannot be made: {str(parent)!r} is not writable"
        )
    return False


def make_output_dir(path: Path, flag: str) -> None:
    """Make the directory `output_dir` found missing (and its parents)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {str(path)!r} cannot be made: {e.strerror or e}") from e


# The format names in the headers of vector and sweep files
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
