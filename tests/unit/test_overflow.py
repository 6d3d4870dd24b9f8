"""Steering coefficients against the model's dtype: what the terms do together.

Every term that reaches one position adds to its residual stream, over all layers
and enclosing `steer()` blocks; the sum is bounded by `steering_limit(dtype)`, set
from what overflows (in float16 the residual itself, since the norms upcast to
float32; in wider types the norm's square). Nothing is ever returned as '' silently.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from workbench import PerRow, Sampling, SteeringTerm, generate, load_model, steer
from workbench.errors import InvalidArgumentError, NumericalError
from workbench.model.prompts import format_prompt, tokenize_prompts
from workbench.steering.plan import SteeringPlan
from workbench.steering.terms import steering_limit

PROMPTS = ["hello there", "tell me a story about owls"]


@pytest.fixture(scope="module", params=["bridge", "hooked"])
def half_model(request, tiny_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(tiny_dir), backend=request.param, dtype="float16")


def _direction(seed: int = 0) -> torch.Tensor:
    return torch.randn(32, generator=torch.Generator().manual_seed(seed))


def _one_hot() -> torch.Tensor:
    """The worst case for one component: the whole weight lands on it."""
    u = torch.zeros(32)
    u[3] = 1.0
    return u


def _logits(model, terms):
    ids, mask = tokenize_prompts(model, [format_prompt(model, p) for p in PROMPTS])
    with torch.inference_mode(), steer(model, terms):
        return model(ids, attention_mask=mask)[:, -1].float()


def _sane(logits) -> bool:
    """Finite, and not the all-equal row a normalisation that overflowed leaves."""
    return bool(torch.isfinite(logits).all()) and bool((logits.std(-1) > 0).all())


def test_the_limit_per_dtype():
    assert steering_limit(torch.float16)[0] == 65504 / 2
    assert steering_limit(torch.bfloat16)[0] == pytest.approx(
        torch.finfo(torch.float32).max ** 0.5 / 2
    )
    assert steering_limit(torch.float32)[0] == pytest.approx(
        torch.finfo(torch.float32).max ** 0.5 / 2
    )
    assert steering_limit(torch.float64)[0] == pytest.approx(
        torch.finfo(torch.float64).max ** 0.5 / 2
    )


@pytest.mark.parametrize("weight", [256.5, 1000.0, 30000.0])
def test_float16_takes_weights_far_above_sqrt_max(half_model, weight):
    """256.5 is the embedded model's deepest mean-difference norm (225) at strength 1.14,
    refused before; 30000 along a one-hot direction still leaves the logits sane."""
    for u in (_direction(), _one_hot()):
        term = SteeringTerm(u, layer=1, mode="add", weight=weight)
        logits = _logits(half_model, term)
        assert _sane(logits), weight
        assert not torch.equal(logits, _logits(half_model, None))  # it does steer
        assert all(generate(half_model, PROMPTS, steering=term, max_new_tokens=3))


def test_float16_refuses_past_the_limit(half_model):
    term = SteeringTerm(_one_hot(), layer=1, mode="add", weight=32752.0)
    with pytest.raises(
        InvalidArgumentError,
        match=r"^weight 32752.0 at layer 1 overflows the model's dtype torch.float16: .* "
        r"must stay below 3.28e\+04 \(half of torch.float16's largest value 65504",
    ):
        generate(half_model, PROMPTS, steering=term, max_new_tokens=2)


@pytest.mark.parametrize("layers", [(0, 1), (1, 1)])
def test_two_terms_that_overflow_together_are_refused(tiny_model, half_model, layers):
    for model, each in [(tiny_model, 6e18), (half_model, 20000.0)]:
        terms = [
            SteeringTerm(_direction(i), layer=k, mode="add", weight=each)
            for i, k in enumerate(layers)
        ]
        assert _sane(_logits(model, terms[0]))  # each alone is fine
        limit = f"{steering_limit(model.cfg.dtype)[0]:.3g}".replace("+", r"\+")
        message = (
            rf"^weight {re.escape(repr(each))} at layer {layers[0]} \+ "
            rf"weight {re.escape(repr(each))} at layer {layers[1]} "
            rf"overflow the model's dtype {model.cfg.dtype}: .* adds up to .* below {limit} "
        )
        for use, steering in [(generate, terms), (steer, terms), (generate, PerRow([terms, None]))]:
            with pytest.raises(InvalidArgumentError, match=message) as caught:
                if use is steer:
                    steer(model, steering)
                else:
                    generate(model, PROMPTS, steering=steering, max_new_tokens=2)
            assert "\n" not in str(caught.value)
        assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_project_targets_count_and_ablation_adds_nothing(tiny_model):
    add = SteeringTerm(_direction(0), layer=0, mode="add", weight=6e18)
    project = SteeringTerm(_direction(1), layer=2, mode="project", target=-6e18)
    ablate = SteeringTerm(_direction(2), layer=1, mode="ablate")
    with pytest.raises(InvalidArgumentError, match=r"weight 6e\+18 at layer 0 \+ target -6e\+18"):
        SteeringPlan(tiny_model, [add, project])
    assert SteeringPlan(tiny_model, [add, ablate]).magnitude == 6e18


def test_terms_that_never_reach_one_position_together_are_not_summed(tiny_model):
    prompt = SteeringTerm(_direction(0), layer=1, mode="add", weight=6e18, positions="prompt")
    gen = SteeringTerm(_direction(1), layer=1, mode="add", weight=6e18, positions="generated")
    everywhere = SteeringTerm(_direction(2), layer=0, mode="add", weight=6e18)
    assert all(generate(tiny_model, PROMPTS, steering=[prompt, gen], max_new_tokens=3))
    # Different rows never meet either.
    assert all(
        generate(tiny_model, PROMPTS, steering=PerRow([prompt, everywhere]), max_new_tokens=3)
    )
    with pytest.raises(
        InvalidArgumentError, match=r"weight 6e\+18 at layer 1 \+ weight 6e\+18 at layer 0"
    ):
        generate(tiny_model, PROMPTS, steering=[prompt, everywhere], max_new_tokens=3)


def test_enclosing_steer_blocks_count(tiny_model):
    outer = SteeringTerm(_direction(0), layer=0, mode="add", weight=6e18)
    inner = SteeringTerm(_direction(1), layer=2, mode="add", weight=6e18)
    match = r"^weight 6e\+18 at layer 2 \+ 6e\+18 from the enclosing steer\(\) blocks overflow"
    block = steer(tiny_model, outer)
    with block:
        with pytest.raises(InvalidArgumentError, match=match):
            generate(tiny_model, PROMPTS, steering=inner, max_new_tokens=2)
        with pytest.raises(InvalidArgumentError, match=match):
            steer(tiny_model, inner)
        with pytest.raises(InvalidArgumentError, match="at layer 0 .* from the enclosing steer"):
            block.__enter__()  # the same block again, inside itself
        assert all(generate(tiny_model, PROMPTS, max_new_tokens=2))
    with block:  # entered again on its own: fine
        assert all(generate(tiny_model, PROMPTS, max_new_tokens=2))
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_a_float16_vector_whose_norm_overflows_still_has_its_direction(tiny_model, half_model):
    """Its norm (60000 * sqrt(32)) is inf in float16: taken directly, the direction was 0."""
    big = torch.full((32,), 60000.0, dtype=torch.float16)
    big[::2] = -60000.0
    assert math.isinf(float(big.norm()))
    same = big.float() / 60000.0
    for model in (tiny_model, half_model):
        steered = _logits(model, SteeringTerm(big, layer=1, mode="add", weight=200.0))
        assert torch.equal(
            steered, _logits(model, SteeringTerm(same, layer=1, mode="add", weight=200.0))
        )
        assert not torch.equal(steered, _logits(model, None))
    # Its default weight (its norm, 3.4e5) is a finite number, refused in float16 as too large.
    term = SteeringTerm(big, layer=1, mode="add")
    with pytest.raises(
        InvalidArgumentError, match=r"^weight 339411.* overflows the model's dtype torch.float16"
    ):
        steer(half_model, term)
    assert SteeringPlan(tiny_model, term).shared[0].a == pytest.approx(60000 * 32**0.5)


def test_a_float32_vector_past_sqrt_max_still_has_its_direction(tiny_model):
    big = _direction() * 1e20  # its float32 norm, taken directly, is inf
    assert math.isinf(float(big.norm()))
    unit = _direction() / _direction().norm()
    plan = SteeringPlan(tiny_model, SteeringTerm(big, layer=1, mode="add", weight=3.0))
    torch.testing.assert_close(plan.shared[0].direction.cpu(), unit)


@pytest.mark.parametrize("sampling", [None, Sampling(temperature=0.8, seed=0)])
def test_logits_that_turn_nan_raise_instead_of_decoding_to_nothing(tiny_model, sampling):
    def poison(x, hook):
        return x * math.nan

    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", poison)]):
        with pytest.raises(
            NumericalError,
            match=r"^the logits of prompts \[0, 1\] are NaN or inf at generated token 0",
        ):
            generate(tiny_model, PROMPTS, max_new_tokens=3, sampling=sampling)


def test_a_custom_function_whose_residual_overflows_the_norm_is_refused(tiny_model, half_model):
    """Finite but past sqrt(max) in float32 (the norm's square is inf, every logit equal);
    past float16's largest value in float16 (inf itself)."""
    for model, big in [(tiny_model, 2e19), (half_model, 7e4)]:

        def push(x, u, big=big):
            return x + big * u

        ids, mask = tokenize_prompts(model, [format_prompt(model, p) for p in PROMPTS])
        term = SteeringTerm(_one_hot(), layer=1, mode=push)
        with pytest.raises(InvalidArgumentError, match="squared norm overflows torch.float32"):
            with torch.inference_mode(), steer(model, term):
                model(ids, attention_mask=mask)


@pytest.mark.parametrize("top_p", [1e-300, 5e-324])
def test_a_top_p_below_float32_keeps_the_top_token(tiny_model, top_p):
    greedy = generate(tiny_model, PROMPTS, max_new_tokens=3)
    sampled = generate(
        tiny_model, PROMPTS, max_new_tokens=3, sampling=Sampling(top_p=top_p, seed=0)
    )
    assert sampled == greedy
