"""Atomic file writes, shared by vector files, GGUF exports, figures and the model cache.

A file is written under a temporary name beside its target and renamed into place,
so a reader sees the old file or the new one, never half of one. The new file gets
the permissions an ordinary ``open(path, "w")`` would give it: the target's own
mode when it is overwritten, else 0666 less the umask. Errors name the target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import FileWriteError

_TMP_TAG = ".tmp-"


def temp_name(path: Path) -> Path:
    """A unique temporary sibling of `path` that records the host and process writing it."""
    host = socket.gethostname().replace(".", "_").replace("-", "_")
    tag = f"{_TMP_TAG}{host}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{tag}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
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


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    return path


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
