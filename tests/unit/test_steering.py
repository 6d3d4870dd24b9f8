"""Steering hooks and steered generation on tiny models: exactness and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench import (
    PerRow,
    Sampling,
    SteeringTerm,
    format_prompt,
    generate,
    steer,
)
from workbench.errors import ArgumentTypeError, InvalidArgumentError, VectorMismatchError
from workbench.model.prompts import tokenize_prompts
from workbench.steering.reference import reference_generate

PROMPTS = ["hello there", "a", "tell me a story about owls", "why?", "abc def ghi", "zz"]
N_NEW = 10


def _tokens(model, prompts=PROMPTS, **kwargs):
    kwargs.setdefault("max_new_tokens", N_NEW)
    return generate(model, prompts, return_tokens=True, **kwargs).tokens


def _no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


TERM_SETS = {
    "none": lambda v: None,
    "add": lambda v: SteeringTerm(v, layer=1, mode="add", weight=6.0),
    "project": lambda v: SteeringTerm(v, layer=1, mode="project"),
    "ablate": lambda v: SteeringTerm(v, layer=0, mode="ablate"),
    "two_terms": lambda v: [
        SteeringTerm(v, layer=0, mode="add", weight=4.0),
        SteeringTerm(v, layer=2, mode="project", target=-3.0),
    ],
    "prompt_only": lambda v: SteeringTerm(v, layer=1, mode="add", weight=8.0, positions="prompt"),
    "generated_only": lambda v: SteeringTerm(
        v, layer=1, mode="add", weight=8.0, positions="generated"
    ),
}


@pytest.mark.parametrize("name", TERM_SETS)
def test_kv_cached_batched_generation_equals_reference_loop(tiny_model, tiny_vec, name):
    terms = TERM_SETS[name](tiny_vec)
    ours = _tokens(tiny_model, steering=terms)
    oracle = [reference_generate(tiny_model, p, terms, N_NEW) for p in PROMPTS]
    assert ours == oracle


def test_steering_changes_the_output(tiny_model, tiny_vec):
    v = tiny_vec
    assert _tokens(tiny_model, steering=SteeringTerm(v, layer=1, mode="add", weight=8.0)) != (
        _tokens(tiny_model)
    )


def test_prompt_and_generated_positions_split_all(tiny_model, tiny_vec):
    """Under a cache, 'all' = 'prompt' on the prompt pass + 'generated' afterwards."""
    v = tiny_vec
    both = [
        SteeringTerm(v, layer=1, mode="add", weight=8.0, positions="prompt"),
        SteeringTerm(v, layer=1, mode="add", weight=8.0, positions="generated"),
    ]
    assert _tokens(tiny_model, steering=both) == _tokens(
        tiny_model, steering=SteeringTerm(v, layer=1, mode="add", weight=8.0)
    )


def test_backends_generate_the_same_tokens(tiny_models, tiny_vecs):
    for name, make in TERM_SETS.items():
        out = {b: _tokens(m, steering=make(tiny_vecs[b])) for b, m in tiny_models.items()}
        assert out["bridge"] == out["hooked"], name


def test_batched_equals_one_at_a_time(tiny_model, tiny_vec):
    term = SteeringTerm(tiny_vec, layer=1, mode="project")
    batched = _tokens(tiny_model, steering=term, batch_size=4)
    single = [_tokens(tiny_model, [p], steering=term)[0] for p in PROMPTS]
    assert batched == single


def test_per_row_steering_equals_separate_runs(tiny_model, tiny_vec):
    v = tiny_vec
    rows = [
        SteeringTerm(v, layer=0, mode="add", weight=5.0),
        None,
        [SteeringTerm(v, layer=2, mode="project"), SteeringTerm(v, layer=1, mode="ablate")],
        SteeringTerm(v, layer=1, mode="add", weight=-5.0, positions="generated"),
        SteeringTerm(v, layer=0, mode="add", weight=5.0),
        [],
    ]
    batched = _tokens(tiny_model, steering=PerRow(rows))
    separate = [_tokens(tiny_model, [p], steering=r)[0] for p, r in zip(PROMPTS, rows, strict=True)]
    assert batched == separate


def test_weight_zero_is_no_steering_and_exit_restores(tiny_model, tiny_vec):
    v = tiny_vec
    plain = _tokens(tiny_model)
    assert _tokens(tiny_model, steering=SteeringTerm(v, layer=1, mode="add", weight=0.0)) == plain
    ids, mask = tokenize_prompts(tiny_model, [format_prompt(tiny_model, p) for p in PROMPTS])
    before = tiny_model(ids, attention_mask=mask)
    with steer(tiny_model, SteeringTerm(v, layer=1, mode="add", weight=9.0)):
        during = tiny_model(ids, attention_mask=mask)
    after = tiny_model(ids, attention_mask=mask)
    assert not torch.equal(before, during)
    assert torch.equal(before, after)
    assert _tokens(tiny_model) == plain


def test_project_sets_the_component_and_ablate_removes_it(tiny_model, tiny_vec):
    v = tiny_vec
    u = v.direction(1).to(tiny_model.cfg.device)
    ids, _ = tokenize_prompts(tiny_model, ["hello world"])
    for kwargs, expected in [({"mode": "project", "target": 2.5}, 2.5), ({"mode": "ablate"}, 0.0)]:
        seen = {}

        def grab(x, hook, seen=seen):
            seen["x"] = x.clone()

        hooks = [("blocks.1.hook_resid_post", grab)]
        with steer(tiny_model, SteeringTerm(v, layer=1, **kwargs)):
            with tiny_model.hooks(fwd_hooks=hooks):
                tiny_model(ids)
        proj = seen["x"] @ u
        torch.testing.assert_close(proj, torch.full_like(proj, expected), atol=1e-4, rtol=0)


def test_custom_function_matches_builtin_ablate(tiny_model, tiny_vec):
    v = tiny_vec

    def remove(x, u):
        return x - (x @ u)[..., None] * u

    custom = _tokens(tiny_model, steering=SteeringTerm(v, layer=1, mode=remove))
    assert custom == _tokens(tiny_model, steering=SteeringTerm(v, layer=1, mode="ablate"))


def test_add_defaults_to_the_mean_difference(tiny_model, tiny_vec):
    v = tiny_vec
    norm = float(v.diff(1).norm())
    assert _tokens(tiny_model, steering=SteeringTerm(v, layer=1, mode="add")) == _tokens(
        tiny_model, steering=SteeringTerm(v, layer=1, mode="add", weight=norm)
    )


def test_tensor_vectors_and_selected_layer(tiny_model, tiny_vec):
    v = tiny_vec
    as_tensor = SteeringTerm(v.diff(1), layer=1, mode="add", weight=3.0)
    selected = SteeringTerm(v.select_layer(1), mode="add", weight=3.0)
    assert _tokens(tiny_model, steering=as_tensor) == _tokens(tiny_model, steering=selected)
    with pytest.raises(ValueError, match="no selected layer"):
        generate(tiny_model, ["hi"], steering=SteeringTerm(v, mode="add"))


def test_sampling_is_seeded_and_independent_of_batching(tiny_model):
    sampling = Sampling(temperature=1.5, top_p=0.9, seed=3)
    a = _tokens(tiny_model, sampling=sampling)
    assert a == _tokens(tiny_model, sampling=sampling)
    assert a == _tokens(tiny_model, batch_size=2, sampling=sampling)
    assert a != _tokens(tiny_model, sampling=Sampling(temperature=1.5, top_p=0.9, seed=4))


def test_stop_strings_cut_the_completion(tiny_model):
    full = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    text = next(t for t in full if len(t) > 4)
    stop = text[2:4]
    cut = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW, stop=stop)
    for whole, part in zip(full, cut, strict=True):
        assert stop not in part
        assert whole.startswith(part)
    assert any(len(p) < len(w) for w, p in zip(full, cut, strict=True))


def test_no_hook_remains_after_an_exception(tiny_model, tiny_vec):
    v = tiny_vec
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_model, SteeringTerm(v, layer=1)):
            assert not _no_hooks_left(tiny_model)
            raise RuntimeError("boom")
    assert _no_hooks_left(tiny_model)

    def explode(x, u):
        raise RuntimeError("bad steering function")

    with pytest.raises(RuntimeError, match="bad steering function"):
        generate(tiny_model, PROMPTS, steering=SteeringTerm(v, layer=1, mode=explode))
    assert _no_hooks_left(tiny_model)


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, hook):
        self.calls += 1


def _bad_cases(model, v):
    wide = torch.ones(model.cfg.d_model + 1)
    nan = v.diff(1).clone()
    nan[0] = math.nan
    inf = v.diff(1).clone()
    inf[3] = math.inf
    return [
        ({"steering": SteeringTerm(wide, layer=1, mode="add")}, VectorMismatchError, "d_model"),
        ({"steering": SteeringTerm(v, layer=7)}, VectorMismatchError, "not layer 7"),
        (
            {"steering": SteeringTerm(wide[:32], layer=7, mode="add")},
            InvalidArgumentError,
            "layer 7",
        ),
        ({"steering": SteeringTerm(nan, layer=1, mode="add")}, InvalidArgumentError, "NaN or inf"),
        ({"steering": SteeringTerm(inf, layer=1, mode="add")}, InvalidArgumentError, "NaN or inf"),
        (
            {"steering": SteeringTerm(v, layer=1, hook_name="blocks.{layer}.hook_nope")},
            VectorMismatchError,
            r"unknown hook name 'blocks.1.hook_nope'.*nearest valid names: \['blocks.1.",
        ),
        ({"max_new_tokens": 0}, InvalidArgumentError, "max_new_tokens 0 is out of range"),
        ({"max_new_tokens": -3}, InvalidArgumentError, "max_new_tokens -3"),
        ({"max_new_tokens": 2.0}, ArgumentTypeError, "max_new_tokens must be an int"),
        ({"prompts": ["x" * 300]}, InvalidArgumentError, "context of 256 tokens"),
        ({"steering": [None, SteeringTerm(v, layer=1)]}, ArgumentTypeError, "PerRow"),
        (
            {"steering": PerRow([None, SteeringTerm(v, layer=1)])},
            InvalidArgumentError,
            "2 entries for 6 prompts",
        ),
        (
            {"steering": SteeringTerm(v, layer=1, mode="add", weight=1e39)},
            InvalidArgumentError,
            "weight 1e[+]39 at layer 1 overflows the model's dtype torch.float32",
        ),
        (
            {"steering": SteeringTerm(v, layer=1, mode="project", target=-1e20)},
            InvalidArgumentError,
            r"target -1e[+]20 .* must stay below 9.22e[+]18 \(half of sqrt\(torch.float32's",
        ),
        ({"prompts": [b"bytes"]}, ArgumentTypeError, "prompt 0 must be a str, got bytes"),
        ({"prompts": b"bytes"}, ArgumentTypeError, "got a bare bytes"),
        ({"sampling": {"temperature": 0.5}}, ArgumentTypeError, "Sampling"),
    ]


def test_bad_input_fails_before_any_forward_pass(tiny_model, tiny_vec):
    v = tiny_vec
    for kwargs, error, match in _bad_cases(tiny_model, v):
        counter = _Counter()
        prompts = kwargs.pop("prompts", PROMPTS)
        with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", counter)]):
            with pytest.raises(error, match=match):
                generate(
                    tiny_model, prompts, max_new_tokens=kwargs.pop("max_new_tokens", 4), **kwargs
                )
        assert counter.calls == 0, kwargs
        assert _no_hooks_left(tiny_model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "amplify"}, InvalidArgumentError, r"mode 'amplify' is not one of \('add'"),
        ({"positions": "middle"}, InvalidArgumentError, r"positions 'middle' is not one of"),
        ({"mode": "add", "weight": math.inf}, InvalidArgumentError, "weight inf"),
        (
            {"mode": "add", "weight": "2"},
            ArgumentTypeError,
            "weight must be a real number.*str '2'",
        ),
        ({"mode": "add", "weight": True}, ArgumentTypeError, "weight must be a real number.*bool"),
        ({"mode": "add", "weight": torch.ones(2)}, ArgumentTypeError, "weight must be a real"),
        ({"mode": "project", "target": math.nan}, InvalidArgumentError, "target nan is not a fin"),
        ({"layer": True}, ArgumentTypeError, "layer must be an int, got bool True"),
        ({"layer": np.float64(1)}, ArgumentTypeError, "layer must be an int, got float64"),
        ({"layer": 14.0}, ArgumentTypeError, "layer must be an int, got float 14.0"),
        ({"layer": -1}, InvalidArgumentError, "layer -1 is out of range"),
        ({"mode": "ablate", "weight": 2.0}, InvalidArgumentError, "takes neither"),
        ({"mode": "project", "weight": 2.0}, InvalidArgumentError, "takes target="),
        ({"mode": "add", "target": 2.0}, InvalidArgumentError, "takes weight="),
        ({"mode": lambda x, u: x, "weight": 1.0}, InvalidArgumentError, "a function mode"),
        ({"hook_name": "blocks.1.hook_resid_post"}, InvalidArgumentError, "template"),
    ],
)
def test_bad_terms_are_refused_at_construction(tiny_vecs, kwargs, error, match):
    with pytest.raises(error, match=match):
        SteeringTerm(tiny_vecs["bridge"], **{"layer": 1, **kwargs})


def test_tensor_vector_needs_layer_and_project_target():
    with pytest.raises(InvalidArgumentError, match="explicit layer"):
        SteeringTerm(torch.ones(32), mode="add")
    with pytest.raises(InvalidArgumentError, match="needs target="):
        SteeringTerm(torch.ones(32), layer=1, mode="project")
    with pytest.raises(ArgumentTypeError, match="InstructionVector"):
        SteeringTerm([1.0, 2.0], layer=1)


def test_preformatted_prompts_are_used_as_given(tiny_model):
    formatted = [format_prompt(tiny_model, p) for p in PROMPTS]
    assert _tokens(tiny_model, formatted, formatted=True) == _tokens(tiny_model)
    plain = [format_prompt(tiny_model, p, style="plain") for p in PROMPTS]
    assert _tokens(tiny_model, plain, formatted=True) == _tokens(tiny_model, prompt_style="plain")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"formatted": "no"}, "formatted must be True or False, got str 'no'"),
        ({"formatted": 0}, "formatted must be True or False, got int 0"),
        ({"return_tokens": 1}, "return_tokens must be True or False, got int 1"),
        ({"return_tokens": None}, "return_tokens must be True or False, got NoneType None"),
        ({"batch_size": True}, "batch_size must be an int, got bool True"),
        ({"max_new_tokens": np.float32(3)}, "max_new_tokens must be an int, got float32"),
    ],
)
def test_flags_take_only_bools_and_counts_only_ints(tiny_model, kwargs, match):
    with pytest.raises(ArgumentTypeError, match=match):
        generate(tiny_model, PROMPTS, **{"max_new_tokens": 2, **kwargs})


def test_the_reference_loop_checks_its_arguments_too(tiny_model, tiny_vec):
    term = SteeringTerm(tiny_vec, layer=1)
    with pytest.raises(ArgumentTypeError, match="stop_at_eos must be True or False, got str"):
        reference_generate(tiny_model, "hi", term, 3, stop_at_eos="no")
    with pytest.raises(ArgumentTypeError, match="max_new_tokens must be an int, got float 3.0"):
        reference_generate(tiny_model, "hi", term, 3.0)
    with pytest.raises(InvalidArgumentError, match="context of 256 tokens"):
        reference_generate(tiny_model, "hi", term, 300)


@pytest.mark.parametrize(
    ("weight", "layer"),
    [(np.float32(4.5), np.int64(1)), (torch.tensor(4.5), torch.tensor(1)), (np.float64(4.5), 1)],
)
def test_numpy_and_tensor_scalars_steer_as_the_numbers_they_hold(
    tiny_model, tiny_vec, weight, layer
):
    term = SteeringTerm(tiny_vec, layer=layer, mode="add", weight=weight)
    assert (type(term.weight), type(term.layer)) == (float, int)
    plain = SteeringTerm(tiny_vec, layer=1, mode="add", weight=4.5)
    assert _tokens(tiny_model, steering=term) == _tokens(tiny_model, steering=plain)
    sampling = Sampling(temperature=np.float32(0.5), top_p=torch.tensor(0.75), seed=np.int64(2))
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0.5, 0.75, 2)
    assert type(sampling.seed) is int
    steps = np.int64(3)
    assert len(_tokens(tiny_model, max_new_tokens=steps)[0]) == 3


@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 1e-8])
def test_a_tiny_temperature_samples_the_argmax(tiny_model, temperature):
    sampled = _tokens(tiny_model, sampling=Sampling(temperature=temperature, seed=0))
    assert sampled == _tokens(tiny_model)


def test_sampling_refuses_non_numbers_by_type():
    with pytest.raises(ArgumentTypeError, match="temperature must be a real number.*str '0.5'"):
        Sampling(temperature="0.5")
    with pytest.raises(ArgumentTypeError, match="top_p must be a real number.*bool True"):
        Sampling(top_p=True)
    with pytest.raises(ArgumentTypeError, match="seed must be an int, got bool True"):
        Sampling(seed=True)


def test_something_that_is_not_a_model_is_refused_by_type():
    for use in (generate, reference_generate):
        with pytest.raises(ArgumentTypeError, match="model must be a TransformerLens model.*str"):
            use("gpt2", ["hi"], None, 2) if use is reference_generate else use("gpt2", ["hi"])
    with pytest.raises(ArgumentTypeError, match="got NoneType None"):
        steer(None, None)
