"""Activation-steering workbench: instruction vectors on TransformerLens models.

The public API is the short list below; plumbing lives in submodules
(`workbench.errors`, `workbench.embedded`, `workbench.extraction`, ...).

Example:
    >>> from workbench import SteeringTerm, compute_instruction_vector, generate, make_pairs
    >>> vec = compute_instruction_vector(model, make_pairs("one_sentence", n=4))
    >>> out = generate(model, ["Describe a forest."], steering=SteeringTerm(vec, layer=1), max_new_tokens=4)
    >>> len(out)
    1
"""

from typing import TYPE_CHECKING

from ._version import __version__

# Names load on first use (PEP 562), so `import workbench` and the `workbench` console
# script start without importing torch; `from workbench import x` works as usual.
_EXPORTS = {
    "read_residuals": ".activations",
    "separability": ".diagnostics",
    "stability_curve": ".diagnostics",
    "WorkbenchError": ".errors",
    "compute_instruction_vector": ".extraction",
    "Generation": ".generation",
    "Sampling": ".generation",
    "generate": ".generation",
    "load_model": ".models",
    "model_info": ".models",
    "Pair": ".pairs",
    "base_queries": ".pairs",
    "instruction": ".pairs",
    "instruction_names": ".pairs",
    "make_pairs": ".pairs",
    "format_prompt": ".prompts",
    "score": ".scoring",
    "select": ".selection",
    "steer": ".steering",
    "merge_sweeps": ".sweep_files",
    "sweep": ".sweeps",
    "PerRow": ".terms",
    "SteeringTerm": ".terms",
    "InstructionVector": ".vectors",
}

if TYPE_CHECKING:
    from .activations import read_residuals
    from .diagnostics import separability, stability_curve
    from .errors import WorkbenchError
    from .extraction import compute_instruction_vector
    from .generation import Generation, Sampling, generate
    from .models import load_model, model_info
    from .pairs import Pair, base_queries, instruction, instruction_names, make_pairs
    from .prompts import format_prompt
    from .scoring import score
    from .selection import select
    from .steering import steer
    from .sweep_files import merge_sweeps
    from .sweeps import sweep
    from .terms import PerRow, SteeringTerm
    from .vectors import InstructionVector


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        from importlib import import_module

        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "Generation",
    "InstructionVector",
    "Pair",
    "PerRow",
    "Sampling",
    "SteeringTerm",
    "WorkbenchError",
    "__version__",
    "base_queries",
    "compute_instruction_vector",
    "format_prompt",
    "generate",
    "instruction",
    "instruction_names",
    "load_model",
    "make_pairs",
    "merge_sweeps",
    "model_info",
    "read_residuals",
    "score",
    "select",
    "separability",
    "stability_curve",
    "steer",
    "sweep",
]
