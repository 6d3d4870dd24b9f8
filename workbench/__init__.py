"""Activation-steering workbench: instruction vectors on TransformerLens models.

The public API is the short list below. The rest lives in one folder per stage of
the pipeline, each importing only the stages before it:

- `workbench.model`: loading, embedded weights, prompts, KV and fast decode, hook checks;
- `workbench.vectors`: pairs, reading activations, extraction, `InstructionVector` and
  its files, diagnostics;
- `workbench.steering`: terms, settings, steering hooks, generation, the reference loop;
- `workbench.evaluation`: scoring, the quality guard, sweeps, selection, the protocol;
- `workbench.cli`: the console script (the only wing that may use `analyses`).

`errors`, `options` and `files` sit at the root, below every wing.

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
    "read_residuals": ".vectors.activations",
    "separability": ".vectors.diagnostics",
    "stability_curve": ".vectors.diagnostics",
    "WorkbenchError": ".errors",
    "compute_instruction_vector": ".vectors.extraction",
    "Generation": ".steering.generation",
    "Sampling": ".steering.decoding",
    "generate": ".steering.generation",
    "load_model": ".model.loading",
    "model_info": ".model.info",
    "Pair": ".vectors.pairs",
    "base_queries": ".vectors.pairs",
    "instruction": ".vectors.pairs",
    "instruction_names": ".vectors.pairs",
    "make_pairs": ".vectors.pairs",
    "format_prompt": ".model.prompts",
    "score": ".evaluation.scoring",
    "select": ".evaluation.selection",
    "steer": ".steering.plan",
    "merge_sweeps": ".evaluation.sweep_files",
    "sweep": ".evaluation.sweeps",
    "PerRow": ".steering.terms",
    "SteeringTerm": ".steering.terms",
    "InstructionVector": ".vectors.instruction_vector",
}

if TYPE_CHECKING:
    from .errors import WorkbenchError
    from .evaluation.scoring import score
    from .evaluation.selection import select
    from .evaluation.sweep_files import merge_sweeps
    from .evaluation.sweeps import sweep
    from .model.info import model_info
    from .model.loading import load_model
    from .model.prompts import format_prompt
    from .steering.decoding import Sampling
    from .steering.generation import Generation, generate
    from .steering.plan import steer
    from .steering.terms import PerRow, SteeringTerm
    from .vectors.activations import read_residuals
    from .vectors.diagnostics import separability, stability_curve
    from .vectors.extraction import compute_instruction_vector
    from .vectors.instruction_vector import InstructionVector
    from .vectors.pairs import Pair, base_queries, instruction, instruction_names, make_pairs


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
