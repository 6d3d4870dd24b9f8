"""What a command prints: lines for people, JSON for programs, progress bars on stderr."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from workbench.errors import ArgumentTypeError

# Where commands print their results; `main` points it at the real stdout, so that with
# --json library chatter (print calls while a model loads, say) can go to stderr.
_out: list[IO[str]] = []


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


def progress(items: Sequence[Any], args: argparse.Namespace, **kw: Any) -> Iterator[Any]:
    """Yield ``items`` under a tqdm bar on stderr unless --quiet; its last line is drawn once."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), disable=args.quiet, file=sys.stderr, **kw)
    try:
        for item in items:
            yield item
            if bar.n + 1 < len(items):
                bar.update(1)
            else:
                # Counted without drawing: close() draws the finished bar, and a bar
                # drawn here too would print its last line twice in a log.
                bar.n = len(items)
    finally:
        bar.close()


def percent(value: float) -> str:
    """``0.25`` -> ``'25%'``."""
    return f"{100 * value:.0f}%"
