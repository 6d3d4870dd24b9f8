"""Exception types the workbench raises for bad input.

Every error derives from `WorkbenchError` and from the builtin a user would expect
(`ValueError`, `KeyError`, `TypeError`, ...), so existing ``except`` clauses keep
working. Messages name the offending value and list the valid choices.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """Base class of every workbench error."""


class InvalidArgumentError(WorkbenchError, ValueError):
    """An argument whose value is not one the function accepts."""


class ArgumentTypeError(WorkbenchError, TypeError):
    """An argument of the wrong type (e.g. bytes where a prompt string was expected)."""


class UnknownNameError(WorkbenchError, KeyError):
    """A name (instruction, hook, embedded model) that is not among the known ones."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument (quotes and escaped
        # newlines); the message is meant to be read as written.
        return str(self.args[0]) if self.args else ""


class UnknownModelError(WorkbenchError, ValueError):
    """A model name that is neither embedded, a local directory, nor a hub id."""


class EmbeddedModelMissingError(WorkbenchError, ImportError):
    """The package that ships an embedded model's weights is not installed."""


class UnsupportedBackendError(WorkbenchError, ValueError):
    """The requested TransformerLens backend cannot load this model."""


class PromptFormatError(WorkbenchError, ValueError):
    """A prompt cannot be formatted the way that was asked (e.g. no chat template)."""


class VectorError(WorkbenchError, ValueError):
    """An instruction vector whose fields contradict each other or are not finite."""


class VectorFileError(VectorError):
    """A vector file that is truncated, corrupt, foreign, or holds invalid metadata."""


class VectorMismatchError(WorkbenchError, ValueError):
    """A vector whose shape, layers or hook do not fit the model it is used with."""


class PositionsError(WorkbenchError, RuntimeError):
    """Position-restricted steering used where prompt and generated tokens are unknown."""


class FileWriteError(WorkbenchError, OSError):
    """A file could not be written; the message names the target path."""


def nearest(value: object, choices: Iterable[str], n: int = 5) -> list[str]:
    """The valid choices closest to `value`, for "did you mean" messages."""
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=n, cutoff=0.5)
    return close or choices[:n]


class NumericalError(WorkbenchError, ArithmeticError):
    """A computation that turned NaN or inf (e.g. logits under an overflowing steer)."""


class SweepFileError(WorkbenchError, ValueError):
    """A sweep results file that is corrupt or belongs to another sweep."""


class ExecutorError(WorkbenchError, RuntimeError):
    """A distributed run that cannot start or go on: an unreachable cluster, workers
    that cannot load the model, a part that failed on every try."""
