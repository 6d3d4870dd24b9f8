"""Paths the user gives, and atomic file writes (vector files, GGUF, figures, the model cache).

Every path argument goes through `user_path`: ``~`` is expanded, and an empty path or
one of another type is refused with a one-line error.

A file is written under a temporary name beside its target and renamed into place,
so a reader sees the old file or the new one, never half of one. The rules of what
may be written over (`write_target`):

- a symlink to a regular file is followed: the file it points to is written and the
  link stays;
- anything that exists and is not a regular file (a directory, a FIFO, a device such
  as ``/dev/null``, a socket, a dangling link) is refused, never replaced.

The new file gets the permissions an ordinary ``open(path, "w")`` would give it: the
target's own mode when it is overwritten, else 0666 less the umask. Errors name the
target.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import ArgumentTypeError, FileWriteError, InvalidArgumentError

_TMP_TAG = ".tmp-"


def user_path(path: object, what: str = "path") -> Path:
    """`path` as a `Path` with ``~`` expanded; an empty path or a non-path is refused.

    Example:
        >>> user_path("~/v.safetensors") == Path.home() / "v.safetensors"
        True
        >>> user_path("", "out")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: out '' is empty; give a file name
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise ArgumentTypeError(f"{what} must be a str or Path, got {type(path).__name__} {path!r}")
    if not path.strip():
        raise InvalidArgumentError(f"{what} {path!r} is empty; give a file name")
    if "\0" in path:
        raise InvalidArgumentError(f"{what} {path!r} holds a NUL character")
    return Path(path).expanduser()


def write_target(path: object, what: str = "path") -> Path:
    """The regular file a write to `path` replaces or creates (symlinks followed).

    Refuses anything that exists and is not a regular file: a directory, a FIFO, a
    character or block device, a socket, or a symlink that leads to one of those or
    nowhere.

    Example:
        >>> write_target("/dev/null")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: path '/dev/null' is a character device, not a regular file; refusing to replace it
    """
    path = user_path(path, what)
    if not os.path.lexists(path):
        return path
    try:
        real = Path(os.path.realpath(path))
        mode = real.stat().st_mode
    except OSError:
        raise InvalidArgumentError(
            f"{what} {str(path)!r} is a symlink to {os.readlink(path)!r}, which does not "
            "exist; refusing to replace the link"
        ) from None
    if not stat.S_ISREG(mode):
        raise InvalidArgumentError(
            f"{what} {str(path)!r} is {file_type(mode)}, not a regular file; refusing to replace it"
        )
    return real


def file_type(mode: int) -> str:
    """What a file of `mode` is, in words ("a FIFO", "a directory", "a regular file")."""
    if stat.S_ISREG(mode):
        return "a regular file"
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


def temp_name(path: Path) -> Path:
    """A unique temporary sibling of `path` that records the host and process writing it."""
    host = socket.gethostname().replace(".", "_").replace("-", "_")
    tag = f"{_TMP_TAG}{host}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{tag}")


# (workbench.vectors.storage.FORMAT_NAME and workbench.evaluation.sweep_files.SWEEP_FORMAT; a test
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


def check_kind(path: Path, kind: str, force: bool, what: str = "path") -> None:
    """Refuse to replace an existing file of another kind than `kind`, unless `force`.

    An empty file may always be replaced, and so may one of the same kind.

    Example:
        >>> import tempfile
        >>> notes = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = notes.write_text("keep me")
        >>> check_kind(notes, "vector", force=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: path '...notes.txt' holds a file of another kind, not a workbench vector file; choose another path, or pass force=True to replace it
    """
    if force or not path.is_file():
        return
    try:
        found = file_kind(path)
    except OSError:
        return  # the write itself reports what is wrong
    if found not in ("empty", kind):
        raise InvalidArgumentError(
            f"{what} {str(path)!r} holds {KINDS[found]}, not {KINDS[kind]}; choose another "
            "path, or pass force=True to replace it"
        )


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, kind: str | None = None, force: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`.

    `path` follows the rules of `write_target`: a symlink's target is written, and
    anything other than a regular file is refused before anything is written; with
    `kind`, so is a file of another kind unless `force` (`check_kind`).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = write_target(path)
    if kind is not None:
        check_kind(path, kind, force)
    tmp = temp_name(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # os.open applies the umask, as an ordinary write would.
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            if path.is_file():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        except OSError as e:
            raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    finally:
        # Gone after the rename; unreachable when the directory could not be made.
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_atomic(
    path: str | Path, data: bytes, *, kind: str | None = None, force: bool = False
) -> Path:
    """Write `data` to `path` atomically and durably; returns `path` (``~`` expanded).

    With `kind` (a key of `KINDS`), an existing file of another kind is replaced only
    with `force` (see `check_kind`).
    """
    given = user_path(path)
    path = write_target(given)
    with atomic_path(path, kind=kind, force=force) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    return given


def _writer_gone(name: str, max_age_s: float, mtime: float) -> bool:
    """Whether the process that made temporary `name` can no longer be writing it."""
    if time.time() - mtime > max_age_s:
        return True
    try:
        host, pid, _ = name.rsplit(_TMP_TAG, 1)[1].split("-")
        if host != socket.gethostname().replace(".", "_").replace("-", "_"):
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError, OSError):
        return False
    return False


def remove_stale_temps(path: str | Path, *, max_age_s: float = 86400.0) -> list[Path]:
    """Delete temporaries of `path` left by writers that died (same host, pid gone).

    Temporaries from other hosts are removed only once older than `max_age_s`.
    Returns what was removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for child in path.parent.glob(f".{path.name}{_TMP_TAG}*"):
        try:
            mtime = child.lstat().st_mtime
        except FileNotFoundError:
            continue
        if _writer_gone(child.name, max_age_s, mtime):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed
