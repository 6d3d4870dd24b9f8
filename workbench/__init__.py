"""Activation-steering workbench: instruction vectors on TransformerLens models.

Example:
    >>> from workbench import load_model, make_pairs, compute_instruction_vector
    >>> from workbench import SteeringTerm, generate
    >>> model = load_model()  # doctest: +SKIP
    >>> vec = compute_instruction_vector(model, make_pairs("one_sentence", n=32))  # doctest: +SKIP
    >>> generate(model, ["Describe a forest."], steering=SteeringTerm(vec, layer=14))  # doctest: +SKIP
"""

from ._version import __version__
from .activations import read_residuals
from .diagnostics import (
    d_prime,
    pairs_to_settle,
    separability,
    separability_from_activations,
    stability_curve,
)
from .embedded import EMBEDDED_MODELS, cache_dir, ensure_checkpoint
from .errors import (
    EmbeddedModelMissingError,
    PromptFormatError,
    UnknownModelError,
    UnsupportedBackendError,
    WorkbenchError,
)
from .generation import Generation, generate
from .models import ModelInfo, load_model, model_info
from .pairs import (
    BaseQuery,
    Instruction,
    Pair,
    as_pairs,
    base_queries,
    instruction,
    instruction_names,
    make_pairs,
)
from .prompts import format_prompt, tokenize_prompts
from .steering import SteeringTerm, steer
from .vectors import (
    InstructionVector,
    VectorFileError,
    VectorMismatchError,
    compute_instruction_vector,
    difference_stats,
    pair_activations,
)

__all__ = [
    "EMBEDDED_MODELS",
    "BaseQuery",
    "EmbeddedModelMissingError",
    "Generation",
    "Instruction",
    "InstructionVector",
    "ModelInfo",
    "Pair",
    "PromptFormatError",
    "SteeringTerm",
    "UnknownModelError",
    "UnsupportedBackendError",
    "VectorFileError",
    "VectorMismatchError",
    "WorkbenchError",
    "__version__",
    "as_pairs",
    "base_queries",
    "cache_dir",
    "compute_instruction_vector",
    "d_prime",
    "difference_stats",
    "ensure_checkpoint",
    "format_prompt",
    "generate",
    "instruction",
    "instruction_names",
    "load_model",
    "make_pairs",
    "model_info",
    "pair_activations",
    "pairs_to_settle",
    "read_residuals",
    "separability",
    "separability_from_activations",
    "stability_curve",
    "steer",
    "tokenize_prompts",
]
