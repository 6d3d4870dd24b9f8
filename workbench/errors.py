"""Exception types the workbench raises for bad input.

Each subclasses the builtin a user would expect (`ValueError`, `LookupError`, ...)
so existing `except` clauses keep working.
"""


class WorkbenchError(Exception):
    """Base class of every workbench error."""


class UnknownModelError(WorkbenchError, ValueError):
    """A model name that is neither embedded, a local directory, nor a hub id."""


class EmbeddedModelMissingError(WorkbenchError, ImportError):
    """The package that ships an embedded model's weights is not installed."""


class UnsupportedBackendError(WorkbenchError, ValueError):
    """The requested TransformerLens backend cannot load this model."""


class PromptFormatError(WorkbenchError, ValueError):
    """A prompt cannot be formatted the way that was asked (e.g. no chat template)."""
