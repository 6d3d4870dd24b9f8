"""The bridge's fast decode path (a plain Hugging Face model sharing the bridge's
weights, steered through torch hooks) against TransformerLens' path and the oracle."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import LOWERCASE_PAIRS
from tests.decoder_outputs import both_forwards
from tests.tiny import make_tiny_checkpoint, tiny_tokenizer
from workbench import (
    PerRow,
    Sampling,
    SteeringTerm,
    compute_instruction_vector,
    generate,
    load_model,
    steer,
)
from workbench.errors import ArgumentTypeError
from workbench.model.fast_decode import FastDecoder, decoder_for, use_fast_decode
from workbench.steering.plan import SteeringPlan
from workbench.steering.reference import reference_generate

# Many lengths (1 to 60 characters), so batches carry plenty of left padding.
PROMPTS = [
    "hello there",
    "a",
    "tell me a story about owls",
    "why?",
    "abc def ghi",
    "zz",
    "what is the colour of the sky at night over the sea",
    "count: one two three",
    "!",
    "describe a forest in the rain, briefly",
    "Q",
    "name three fruits and one vegetable, then stop writing here",
]
N_NEW = 12


def _tokens(model, prompts=PROMPTS, **kwargs):
    return generate(model, prompts, max_new_tokens=N_NEW, return_tokens=True, **kwargs).tokens


def _both_paths(model, prompts=PROMPTS, **kwargs):
    """(fast path tokens, TransformerLens path tokens); checks the fast path ran."""
    decoder = decoder_for(model)
    before = decoder.passes
    fast = _tokens(model, prompts, **kwargs)
    assert decoder.passes > before, "the fast path was not taken"
    with use_fast_decode(False):
        slow = _tokens(model, prompts, **kwargs)
    return fast, slow


def _hooks_on(module) -> set:
    return {
        (id(m), kind, key)
        for m in module.modules()
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
        for key in getattr(m, kind)
    }


TERMS = {
    "none": lambda v: None,
    "add": lambda v: SteeringTerm(v, layer=1, mode="add", weight=6.0),
    "project": lambda v: SteeringTerm(v, layer=1, mode="project"),
    "ablate": lambda v: SteeringTerm(v, layer=0, mode="ablate"),
    "last_layer": lambda v: SteeringTerm(v, layer=2, mode="add", weight=-5.0),
    "two_terms": lambda v: [
        SteeringTerm(v, layer=0, mode="add", weight=4.0),
        SteeringTerm(v, layer=2, mode="project", target=-3.0),
    ],
    "same_layer_twice": lambda v: [
        SteeringTerm(v, layer=1, mode="project", target=2.0),
        SteeringTerm(v, layer=1, mode="add", weight=3.0),
    ],
    "prompt_only": lambda v: SteeringTerm(v, layer=1, mode="add", weight=8.0, positions="prompt"),
    "generated_only": lambda v: SteeringTerm(
        v, layer=1, mode="add", weight=8.0, positions="generated"
    ),
    "function": lambda v: SteeringTerm(
        v, layer=1, mode=lambda x, u: x - 2 * (x @ u)[..., None] * u
    ),
}


@pytest.fixture(scope="module")
def bridge(tiny_models):
    return tiny_models["bridge"]


@pytest.fixture(scope="module")
def vec(tiny_vecs):
    return tiny_vecs["bridge"]


def test_decoder_layer_outputs_are_hook_resid_post_and_weights_are_shared(bridge):
    decoder = decoder_for(bridge)
    assert decoder is not None and decoder.ok, decoder and decoder.reason
    assert decoder.hf.config._attn_implementation == "sdpa" == decoder.attention
    out = both_forwards(bridge, decoder, PROMPTS)
    real = out["real"]
    for n, activation in out["cache"].items():
        torch.testing.assert_close(
            out["layer_out"][n][real], activation[real], atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(out["plain_logits"][real], out["logits"][real], atol=1e-5, rtol=1e-5)
    # Shared, not copied: the plain model holds the bridge's own tensors.
    bridge_ptrs = {p.data_ptr() for p in bridge.parameters()}
    assert all(p.data_ptr() in bridge_ptrs for p in decoder.hf.parameters())


@pytest.mark.parametrize("name", TERMS)
def test_fast_path_equals_transformer_lens_path_and_reference(bridge, vec, name):
    terms = TERMS[name](vec)
    fast, slow = _both_paths(bridge, steering=terms, batch_size=5)
    assert fast == slow
    oracle = [reference_generate(bridge, p, terms, N_NEW) for p in PROMPTS]
    assert fast == oracle


@pytest.mark.parametrize("batch_size", [1, 3, 12])
def test_batch_sizes_agree_on_the_fast_path(bridge, vec, batch_size):
    term = SteeringTerm(vec, layer=1, mode="project")
    fast, slow = _both_paths(bridge, steering=term, batch_size=batch_size)
    assert fast == slow
    assert fast == _tokens(bridge, steering=term, batch_size=len(PROMPTS))


def test_per_row_on_the_fast_path_equals_separate_runs_and_the_tl_path(bridge, vec):
    rows = [
        SteeringTerm(vec, layer=0, mode="add", weight=5.0),
        None,
        [SteeringTerm(vec, layer=2, mode="project"), SteeringTerm(vec, layer=1, mode="ablate")],
        SteeringTerm(vec, layer=1, mode="add", weight=-5.0, positions="generated"),
        SteeringTerm(vec, layer=1, mode="add", weight=7.0, positions="prompt"),
        [],
    ] * 2
    fast, slow = _both_paths(bridge, steering=PerRow(rows), batch_size=8)
    assert fast == slow
    separate = [_tokens(bridge, [p], steering=r)[0] for p, r in zip(PROMPTS, rows, strict=True)]
    assert fast == separate


def test_sampling_on_the_fast_path_equals_the_tl_path(bridge, vec):
    sampling = Sampling(temperature=1.3, top_p=0.9, seed=5)
    term = SteeringTerm(vec, layer=1, mode="add", weight=4.0)
    fast, slow = _both_paths(bridge, steering=term, sampling=sampling, batch_size=4)
    assert fast == slow


def test_no_hook_is_left_on_any_module_also_after_an_error(bridge, vec):
    decoder = decoder_for(bridge)
    before = _hooks_on(bridge)
    _tokens(bridge, steering=SteeringTerm(vec, layer=1, mode="add", weight=3.0))
    assert _hooks_on(decoder.hf) == set()
    assert _hooks_on(bridge) == before
    assert all(not hp.fwd_hooks for hp in bridge.hook_dict.values())

    def explode(x, u):
        raise RuntimeError("bad steering function")

    with pytest.raises(RuntimeError, match="bad steering function"):
        _tokens(bridge, steering=SteeringTerm(vec, layer=1, mode=explode))
    assert _hooks_on(decoder.hf) == set()
    assert _hooks_on(bridge) == before


def test_user_hooks_send_generate_down_the_tl_path(bridge, vec):
    """Hooks the plain model would skip: a steer() block, a hook on another point."""
    decoder = decoder_for(bridge)
    term = SteeringTerm(vec, layer=1, mode="add", weight=6.0)
    before = decoder.passes
    with steer(bridge, term):
        under_steer = _tokens(bridge)
    seen = []
    with bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_mid", lambda x, hook: seen.append(1))]):
        _tokens(bridge)
    handle = bridge.blocks[0].register_forward_hook(lambda m, a, out: None)
    try:
        assert decoder_for(bridge) is None
    finally:
        handle.remove()
    assert decoder.passes == before and seen
    assert under_steer == _tokens(bridge, steering=term)


def test_other_hooks_backends_and_the_switch_are_not_fast(tiny_models, vec):
    bridge = tiny_models["bridge"]
    mid = SteeringTerm(
        vec, layer=1, mode="add", weight=6.0, hook_name="blocks.{layer}.hook_resid_mid"
    )
    assert decoder_for(bridge, SteeringPlan(bridge, mid).hooks()) is None
    assert decoder_for(tiny_models["hooked"]) is None
    with use_fast_decode(False):
        assert decoder_for(bridge) is None
    assert decoder_for(bridge) is not None
    # "no" is truthy: a switch that took it would turn the fast path on.
    with pytest.raises(ArgumentTypeError, match="True or False, got str 'no'"):
        with use_fast_decode("no"):
            pass
    # A hook name the plain model has no layer for runs TransformerLens' path, exactly.
    assert _tokens(bridge, PROMPTS[:3], steering=mid) == [
        reference_generate(bridge, p, mid, N_NEW) for p in PROMPTS[:3]
    ]


@pytest.fixture
def fresh(tiny_dir):
    """A bridge of its own, for tests that change the model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(tiny_dir))


def test_replaced_tensors_rebuild_the_decoder(fresh):
    first = decoder_for(fresh)
    norm = fresh.blocks[1].ln2.original_component
    norm.weight = torch.nn.Parameter(norm.weight.detach() * 1.5)
    second = decoder_for(fresh)
    assert second is not first and second.ok
    fast = _tokens(fresh, PROMPTS[:4])
    with use_fast_decode(False):
        assert fast == _tokens(fresh, PROMPTS[:4])


def test_a_bridge_the_plain_model_cannot_reproduce_keeps_the_tl_path(fresh):
    with torch.no_grad():
        fresh.original_model.lm_head.original_component.bias.fill_(0.5)
    assert decoder_for(fresh) is None
    assert "no Hugging Face twin" in FastDecoder(fresh).reason
    vec = compute_instruction_vector(fresh, LOWERCASE_PAIRS, layers=[1])
    term = SteeringTerm(vec, layer=1, mode="add", weight=4.0)
    assert _tokens(fresh, PROMPTS[:3], steering=term) == [
        reference_generate(fresh, p, term, N_NEW) for p in PROMPTS[:3]
    ]


def test_another_architecture_granite(tmp_path):
    """Granite scales embeddings, residual branches and logits; the probe checks the
    plain model reproduces the bridge before the fast path is used."""
    path = make_tiny_checkpoint(tmp_path / "granite", arch="granite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(path))
    assert decoder_for(model) is not None, FastDecoder(model).reason
    vec = compute_instruction_vector(model, LOWERCASE_PAIRS, layers=[1])
    term = SteeringTerm(vec, layer=1, mode="project")
    fast, slow = _both_paths(model, PROMPTS[:6], steering=term, batch_size=3)
    assert fast == slow
    assert fast == [reference_generate(model, p, term, N_NEW) for p in PROMPTS[:6]]


def test_another_architecture_gemma3_with_sliding_window(tmp_path):
    """Gemma 3: scaled embeddings, four norms a layer, sliding-window layers (whose
    cache Hugging Face trims) mixed with full ones; prompts longer than the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention"] * 2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "gemma")
    tok.save_pretrained(tmp_path / "gemma")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tmp_path / "gemma"))
    assert decoder_for(model) is not None, FastDecoder(model).reason
    vec = compute_instruction_vector(model, LOWERCASE_PAIRS, layers=[1, 2])
    terms = [
        SteeringTerm(vec, layer=1, mode="add", weight=4.0),
        SteeringTerm(vec, layer=2, mode="project", positions="generated"),
    ]
    fast, slow = _both_paths(model, PROMPTS[:6], steering=terms, batch_size=3)
    assert fast == slow
    assert fast == [reference_generate(model, p, terms, N_NEW) for p in PROMPTS[:6]]


def test_sixteen_bit_models_decode_with_eager_attention_exactly(tiny_dir):
    """In bfloat16 SDPA drifts from the bridge; the plain model's eager attention does
    the bridge's arithmetic, so the fast path is exact there too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tiny_dir), dtype=torch.bfloat16)
    decoder = decoder_for(model)
    assert decoder is not None and decoder.attention == "eager", FastDecoder(model).reason
    out = both_forwards(model, decoder, PROMPTS[:6])
    real = out["real"]
    for n, activation in out["cache"].items():
        assert torch.equal(out["layer_out"][n][real], activation[real]), n
    vec = compute_instruction_vector(model, LOWERCASE_PAIRS, layers=[1])
    for term in (SteeringTerm(vec, layer=1, mode="project"), None):
        fast, slow = _both_paths(model, PROMPTS[:6], steering=term, batch_size=3)
        assert fast == slow


def test_eager_attention_is_the_fallback_when_sdpa_fails_the_probe(fresh, monkeypatch):
    import workbench.model.fast_decode as fast_decode

    # A tolerance SDPA's float32 rounding (~1e-7) cannot meet, and eager's 0 can.
    monkeypatch.setitem(fast_decode._TOLERANCE, torch.float32, 1e-12)
    fast_decode.prepare(fresh)  # what load_model does, now under that tolerance
    decoder = decoder_for(fresh)
    assert decoder is not None and decoder.attention == "eager"
    assert decoder.hf.config._attn_implementation == "eager"
    fast, slow = _both_paths(fresh, PROMPTS[:4])
    assert fast == slow
    # With neither able to pass, the reason names both tries.
    monkeypatch.setitem(fast_decode._TOLERANCE, torch.float32, -1.0)
    reason = FastDecoder(fresh).reason
    assert "sdpa attention:" in reason and "eager attention:" in reason
