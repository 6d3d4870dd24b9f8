"""Input checks on steering hooks, vector fields and vector files: per-row steering
under code that batches on its own, hooks of another shape, NaN from a custom
function, empty prompts, numbers too large, GGUF export and files that are not vectors;
each refused with a WorkbenchError naming it, before it can become a silent wrong result."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import LOWERCASE_PAIRS
from workbench import (
    InstructionVector,
    PerRow,
    Sampling,
    SteeringTerm,
    compute_instruction_vector,
    format_prompt,
    generate,
    read_residuals,
    separability,
    stability_curve,
    steer,
)
from workbench.errors import (
    ArgumentTypeError,
    FileWriteError,
    InvalidArgumentError,
    VectorError,
    VectorFileError,
)


def _hooks_left(model) -> bool:
    return any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_per_row_steer_refuses_code_that_batches_on_its_own(tiny_model, tiny_vec):
    rows = PerRow([SteeringTerm(tiny_vec, layer=1, mode="add"), None])
    prompts = [format_prompt(tiny_model, p) for p in ["a", "b", "c", "d"]]
    with steer(tiny_model, rows):
        with pytest.raises(
            InvalidArgumentError, match=r"generate runs inside steer\(model, PerRow"
        ):
            generate(tiny_model, ["a", "b", "c", "d"], batch_size=2, max_new_tokens=2)
        with pytest.raises(InvalidArgumentError, match="read_residuals runs inside steer"):
            read_residuals(tiny_model, prompts, batch_size=2)
    # Shared terms under steer() stay usable with generate.
    with steer(tiny_model, rows[0]):
        assert len(generate(tiny_model, ["a", "b"], max_new_tokens=2)) == 2
    assert not _hooks_left(tiny_model)


def test_a_custom_function_returning_nan_is_an_error_not_empty_text(tiny_model, tiny_vec):
    def poison(x, u):
        return x * float("nan")

    with pytest.raises(InvalidArgumentError, match="returned NaN or inf"):
        generate(tiny_model, ["hi"], steering=SteeringTerm(tiny_vec, layer=1, mode=poison))
    assert not _hooks_left(tiny_model)


@pytest.mark.parametrize(
    "hook", ["blocks.{layer}.mlp.hook_pre", "blocks.{layer}.attn.hook_pattern"]
)
def test_steering_or_reading_a_hook_of_another_shape_is_named(tiny_model, tiny_vec, hook):
    if not any(name.endswith(hook.split("}", 1)[1]) for name in tiny_model.hook_dict):
        pytest.skip(f"{hook} is not a hook of this backend")
    term = SteeringTerm(tiny_vec, layer=1, mode="add", hook_name=hook)
    with pytest.raises(
        InvalidArgumentError, match=r"needs a \[batch, pos, d_model=32\] activation"
    ):
        generate(tiny_model, ["hi"], steering=term, max_new_tokens=2)
    with pytest.raises(
        InvalidArgumentError, match=r"needs a \[batch, pos, d_model=32\] activation"
    ):
        read_residuals(tiny_model, [format_prompt(tiny_model, "hi")], layers=[1], hook_name=hook)
    assert not _hooks_left(tiny_model)


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.{layer}.{x}", 3, "{}"])
def test_hook_templates_are_checked_once_everywhere(tiny_model, tiny_vec, hook):
    with pytest.raises(InvalidArgumentError, match="must be a template with '{layer}'"):
        read_residuals(tiny_model, [format_prompt(tiny_model, "hi")], hook_name=hook)
    with pytest.raises(InvalidArgumentError, match="must be a template with '{layer}'"):
        SteeringTerm(tiny_vec, layer=1, hook_name=hook)
    with pytest.raises(VectorError, match="hook_name: hook_name"):
        dataclasses.replace(tiny_vec, hook_name=hook)


def test_a_prompt_that_tokenizes_to_nothing_is_refused(tiny_model):
    with pytest.raises(InvalidArgumentError, match=r"prompts \[0\] tokenize to no tokens"):
        generate(tiny_model, [""], formatted=True, max_new_tokens=2)
    with pytest.raises(InvalidArgumentError, match="tokenize to no tokens"):
        read_residuals(tiny_model, [""])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Sampling(seed=2**64), InvalidArgumentError, r"seed 18446744073709551616 is out"),
        (lambda: Sampling(temperature=10**400), InvalidArgumentError, "temperature must be > 0"),
        (
            lambda: SteeringTerm(torch.ones(4), layer=0, mode="add", weight=2**2000),
            InvalidArgumentError,
            "not a finite",
        ),
        (
            lambda: SteeringTerm(torch.ones(4, dtype=torch.long), layer=0, mode="add"),
            InvalidArgumentError,
            "float tensor",
        ),
    ],
)
def test_numbers_too_large_for_the_machine_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_directions_must_agree_with_diffs(tiny_vec):
    rolled = tiny_vec.directions.roll(1, dims=-1)
    with pytest.raises(VectorError, match=r"directions: rows must be diffs / \|diffs\|"):
        dataclasses.replace(tiny_vec, directions=rolled)


@pytest.mark.parametrize(
    ("key", "value"),
    [("selected_layer", 1.0), ("selected_layer", True), ("prompt_style", "position")],
)
def test_vector_fields_are_named_by_their_own_key(tiny_vec, key, value):
    with pytest.raises(VectorError, match=f"^{key}: "):
        dataclasses.replace(tiny_vec, **{key: value})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [1, 1]}, InvalidArgumentError, r"layers \[1, 1\] contain duplicates"),
        ({"layers": 5}, ArgumentTypeError, "layers must be a list such as \\[1, 2\\], got int 5"),
        ({"scale": 1e39}, InvalidArgumentError, "scale 1e[+]39 overflows float32"),
    ],
)
def test_gguf_export_refuses_what_it_cannot_write(tiny_vec, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_vec.to_gguf(tmp_path / "v.gguf", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_gguf_write_errors_name_the_target(tiny_vec, tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "v.gguf"
    with pytest.raises(FileWriteError, match=f"cannot write '{target}'"):
        tiny_vec.to_gguf(target)


@pytest.mark.parametrize("where", ["missing.safetensors", ".", 7])
def test_loading_something_that_is_not_a_vector_file_says_so(tmp_path, where):
    path = where if isinstance(where, int) else tmp_path / where
    with pytest.raises(VectorFileError, match="cannot read vector file|must be a str or Path"):
        InstructionVector.load(path)


class _Counter:
    calls = 0

    def __call__(self, x, hook):
        _Counter.calls += 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kwargs": {"a": object()}}, InvalidArgumentError, "cannot be stored as JSON"),
        ({"kwargs": [1]}, ArgumentTypeError, "kwargs must be a mapping"),
        ({"instruction_id": 5}, ArgumentTypeError, "instruction_id must be a str"),
    ],
)
def test_vector_labels_are_checked_before_reading(tiny_model, kwargs, error, match):
    _Counter.calls = 0
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", _Counter())]):
        with pytest.raises(error, match=match):
            compute_instruction_vector(tiny_model, LOWERCASE_PAIRS, **kwargs)
    assert _Counter.calls == 0


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        ([[[1.0]]], {}, ArgumentTypeError, "got list"),
        (torch.ones(4, 2, 3, dtype=torch.long), {}, InvalidArgumentError, "float"),
        (torch.randn(8, 2, 4), {"n_draws": 0}, InvalidArgumentError, "n_draws 0 is out of range"),
        (torch.randn(8, 2, 4), {"sizes": [1.5]}, ArgumentTypeError, "subset size must be an int"),
        (torch.randn(8, 2, 4), {"sizes": 1}, ArgumentTypeError, "sizes must be a list"),
    ],
)
def test_stability_curve_checks_its_input(source, kwargs, error, match):
    with pytest.raises(error, match=match):
        stability_curve(source, **kwargs)


def test_separability_needs_a_vector_and_two_pairs(tiny_model, tiny_vec):
    with pytest.raises(ArgumentTypeError, match="vec must be an InstructionVector, got str"):
        separability(tiny_model, "vec", LOWERCASE_PAIRS)
    with pytest.raises(InvalidArgumentError, match="at least 2 held-out pairs"):
        separability(tiny_model, tiny_vec, LOWERCASE_PAIRS[:1])


def test_stop_must_be_strings(tiny_model):
    with pytest.raises(ArgumentTypeError, match="stop must be a string or a list"):
        generate(tiny_model, ["hi"], stop=5, max_new_tokens=2)
