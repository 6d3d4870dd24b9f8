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

from ._version import __version__
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
