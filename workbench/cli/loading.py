"""Models and vector files a command reads, with errors a user can cause as one line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from workbench.errors import InvalidArgumentError, WorkbenchError

from .parser import DEFAULT_MODEL
from .paths import input_file


def load_model_from(args: argparse.Namespace, name: str | None = None) -> Any:
    """The model named by --model (or `name`), loaded without progress bars or log lines
    of the loaders; a line on stderr says what loads before the (seconds of) imports, and
    another how long it took.

    Errors a user can cause (a missing checkpoint, no network for a hub id, an
    unavailable device) end as one `WorkbenchError` line.
    """
    name = args.model if args.model is not None else name
    shown = name if name is not None else DEFAULT_MODEL
    print(f"loading {shown}…", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    model = _load(args, name)
    print(f"loaded {shown} in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    return model


def _load(args: argparse.Namespace, name: str | None) -> Any:
    import transformers

    from workbench.model.loading import load_model

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
