"""The fast decode path on the embedded model: same activations and tokens as the
TransformerLens path. (`test_steered_generation` checks it against the reference loop:
`generate` takes the fast path on the bridge.)"""

from __future__ import annotations

import pytest

from tests.decoder_outputs import both_forwards
from workbench import (
    PerRow,
    SteeringTerm,
    base_queries,
    compute_instruction_vector,
    generate,
    make_pairs,
)
from workbench.model.fast_decode import decoder_for, use_fast_decode

N_NEW = 24


@pytest.fixture(scope="module")
def prompts():
    return [q.text for q in base_queries("validation")[:8]]


@pytest.fixture(scope="module")
def vec(smol):
    return compute_instruction_vector(smol, make_pairs("one_sentence", n=16), layers=[6, 14, 22])


def test_every_decoder_layer_output_is_hook_resid_post(smol, prompts):
    decoder = decoder_for(smol)
    assert decoder is not None and decoder.hf.config._attn_implementation == "sdpa"
    out = both_forwards(smol, decoder, prompts[:4])
    real = out["real"]
    for n, activation in out["cache"].items():
        a, b = out["layer_out"][n][real], activation[real]
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5, n
    assert float((out["plain_logits"][real] - out["logits"][real]).abs().max()) < 1e-3


def _both(model, prompts, steering):
    decoder = decoder_for(model)
    before = decoder.passes
    fast = generate(model, prompts, steering=steering, max_new_tokens=N_NEW, return_tokens=True)
    assert decoder.passes > before
    with use_fast_decode(False):
        slow = generate(model, prompts, steering=steering, max_new_tokens=N_NEW, return_tokens=True)
    return fast.tokens, slow.tokens


def test_fast_and_tl_paths_agree_on_shared_terms(smol, vec, prompts):
    terms = [
        SteeringTerm(vec, layer=14, mode="project"),
        SteeringTerm(vec, layer=6, mode="add", weight=6.0, positions="generated"),
    ]
    fast, slow = _both(smol, prompts, terms)
    assert fast == slow


def test_fast_and_tl_paths_agree_per_row(smol, vec, prompts):
    rows = PerRow(
        [
            SteeringTerm(vec, layer=14, mode="add"),
            None,
            SteeringTerm(vec, layer=22, mode="ablate"),
            [SteeringTerm(vec, layer=6, mode="project"), SteeringTerm(vec, layer=14, mode="add")],
            SteeringTerm(vec, layer=14, mode="add", weight=-8.0, positions="prompt"),
            None,
            SteeringTerm(vec, layer=6, mode="add", weight=4.0, positions="generated"),
            SteeringTerm(vec, layer=22, mode="project"),
        ]
    )
    fast, slow = _both(smol, prompts, rows)
    assert fast == slow


def test_a_users_hook_on_the_embedded_model_takes_the_tl_path(smol, prompts):
    """A torch hook on a bridge module is the user's, whenever it was registered: the
    fast path steps aside while it is on, and comes back, unrebuilt, once it is off."""
    decoder = decoder_for(smol)
    calls = []

    def hook(module, args, out):
        calls.append(1)
        return (out[0] * 1.5, *out[1:]) if isinstance(out, tuple) else out * 1.5

    handle = smol.blocks[10].register_forward_hook(hook)
    try:
        assert decoder_for(smol) is None
        hooked = generate(smol, prompts[:2], max_new_tokens=6, return_tokens=True).tokens
        with use_fast_decode(False):
            slow = generate(smol, prompts[:2], max_new_tokens=6, return_tokens=True).tokens
    finally:
        handle.remove()
    assert hooked == slow and len(calls) == 2 * 6  # every forward pass, on both runs
    assert decoder_for(smol) is decoder and decoder.state.same(smol)
    plain = generate(smol, prompts[:2], max_new_tokens=6, return_tokens=True).tokens
    assert plain != hooked
