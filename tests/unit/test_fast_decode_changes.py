"""Whatever the user changes on a bridge, `generate` gives TransformerLens' tokens.

The fast decode path runs a plain Hugging Face model built from the bridge's config
and sharing its tensors, so it would miss any other change: hooks, swapped modules,
edited attributes and configs, patched classes. Each test makes one change to a
fresh bridge and compares `generate` with ``use_fast_decode(False)``; where the
change alters the tokens, it also checks they differ from the unchanged model's, so
a fast path that skipped the change would fail.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from tests.conftest import LOWERCASE_PAIRS
from workbench import SteeringTerm, compute_instruction_vector, generate, load_model, steer
from workbench.model.bridge_state import BridgeState
from workbench.model.fast_decode import decoder_for, use_fast_decode

PROMPTS = ["hello there", "a", "tell me a story about owls", "why?"]
N_NEW = 8


def _tokens(model, **kwargs):
    return generate(model, PROMPTS, max_new_tokens=N_NEW, return_tokens=True, **kwargs).tokens


def _slow(model, **kwargs):
    with use_fast_decode(False):
        return _tokens(model, **kwargs)


@pytest.fixture
def fresh(tiny_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(tiny_dir))


@pytest.fixture(scope="module")
def unchanged(tiny_models):
    return _slow(tiny_models["bridge"])


def _scale(factor):
    def hook(module, args, out):
        return out * factor if isinstance(out, Tensor) else (out[0] * factor, *out[1:])

    return hook


def _check_tl_path(model, unchanged, *, alters=True):
    """The change sends `generate` to TransformerLens' path, which reflects it."""
    assert decoder_for(model) is None
    change = model._workbench_fast_decoder.change
    assert change, "the change was not detected"
    fast, slow = _tokens(model), _slow(model)
    assert fast == slow
    if alters:
        assert slow != unchanged, "the change should alter the tokens"
    return change


def test_a_hook_registered_before_the_first_generate_fires_on_every_step(fresh, unchanged):
    calls = []

    def hook(module, args, out):
        calls.append(1)
        return _scale(1.7)(module, args, out)

    fresh.blocks[1].register_forward_hook(hook)
    fast = _tokens(fresh)
    fast_calls, calls[:] = len(calls), []
    slow = _slow(fresh)
    # One call per forward pass: the prompt, then one per new token but the last.
    assert fast == slow != unchanged
    assert fast_calls == len(calls) == N_NEW
    assert "blocks.1._forward_hooks" in _check_tl_path(fresh, unchanged)


def test_a_hook_registered_after_the_fast_path_ran(fresh, unchanged):
    assert _tokens(fresh) == unchanged and decoder_for(fresh) is not None
    fresh.blocks[2].ln1.register_forward_pre_hook(lambda m, args: (args[0] + 1.0, *args[1:]))
    _check_tl_path(fresh, unchanged)


def test_a_hook_on_a_hugging_face_module_inside_the_bridge(fresh, unchanged):
    inner = fresh.original_model.model.layers[0].original_component
    inner.register_forward_hook(_scale(-1.0))
    _check_tl_path(fresh, unchanged)


def test_removing_the_hook_brings_the_same_fast_decoder_back(fresh, unchanged):
    decoder = decoder_for(fresh)
    handle = fresh.blocks[1].register_forward_hook(_scale(2.0))
    assert decoder_for(fresh) is None
    handle.remove()
    assert decoder_for(fresh) is decoder  # back to the probed state: no rebuild
    before = decoder.passes
    assert _tokens(fresh) == unchanged and decoder.passes > before


@pytest.mark.parametrize("where", ["bridge", "original_model"])
def test_a_submodule_swapped_after_the_build(fresh, unchanged, where):
    assert decoder_for(fresh) is not None
    if where == "bridge":
        fresh.blocks[0].mlp.act_fn = torch.nn.Identity()
    else:
        fresh.original_model.model.layers[1].mlp.original_component.act_fn = torch.nn.Tanh()
    assert "act_fn is a" in _check_tl_path(fresh, unchanged)


def test_an_edited_scalar_attribute(fresh, unchanged):
    fresh.blocks[1].ln2.original_component.variance_epsilon = 5.0
    assert "variance_epsilon changed" in _check_tl_path(fresh, unchanged)


@pytest.mark.parametrize("config", ["hugging_face", "transformer_lens"])
def test_an_edited_config_value(fresh, unchanged, config):
    # Whether the bridge reads the value at run time is its business: the fast path
    # steps aside either way, and the tokens are TransformerLens'.
    if config == "hugging_face":
        fresh.original_model.config.rms_norm_eps = 5.0
    else:
        fresh.cfg.eps = 5.0
    _check_tl_path(fresh, unchanged, alters=False)


def test_a_patched_class(fresh, unchanged, monkeypatch):
    from transformers.activations import SiLUActivation

    monkeypatch.setattr(SiLUActivation, "forward", lambda self, x: torch.relu(x))
    assert "class SiLUActivation changed" in _check_tl_path(fresh, unchanged)


def test_an_instance_forward_override(fresh, unchanged):
    act = fresh.blocks[2].mlp.original_component.act_fn
    act.forward = lambda x: x * 0.0
    assert "act_fn.forward was added" in _check_tl_path(fresh, unchanged)


def test_train_mode(fresh, unchanged):
    fresh.train()
    _check_tl_path(fresh, unchanged, alters=False)
    fresh.eval()
    assert decoder_for(fresh) is not None


def test_a_parameter_edited_in_place_is_shared_and_stays_fast(fresh, unchanged):
    decoder = decoder_for(fresh)
    with torch.no_grad():
        fresh.blocks[1].mlp.out.original_component.weight.mul_(-3.0)
    assert decoder_for(fresh) is decoder
    before = decoder.passes
    fast = _tokens(fresh)
    assert decoder.passes > before
    assert fast == _slow(fresh) != unchanged


def test_a_replaced_buffer_rebuilds_the_decoder(fresh, unchanged):
    decoder = decoder_for(fresh)
    rotary = fresh.original_model.model.rotary_emb
    rotary.inv_freq = rotary.inv_freq * 3.0
    rebuilt = decoder_for(fresh)
    assert rebuilt is not None and rebuilt is not decoder
    assert _tokens(fresh) == _slow(fresh)


def test_the_workbench_and_transformer_lens_calls_leave_the_fast_path_on(fresh):
    decoder = decoder_for(fresh)
    assert decoder.state.same(fresh) and decoder.state is decoder.checked
    vec = compute_instruction_vector(fresh, LOWERCASE_PAIRS, layers=[1])
    with steer(fresh, SteeringTerm(vec, layer=1, mode="add", weight=3.0)):
        assert decoder_for(fresh) is None  # a steer() block is a hook of the user's
        _tokens(fresh)
    _slow(fresh)
    fresh.run_with_cache("hello", names_filter="blocks.0.hook_resid_post")
    fresh.generate("hello", max_new_tokens=2, verbose=False)
    fresh.to("cpu", print_details=False)
    assert decoder_for(fresh) is decoder and decoder.change == ""
    # Answered by the quick comparison, not by re-walking the bridge.
    assert decoder.state.same(fresh)


def test_a_bridge_not_from_load_model_refuses_a_users_hook(tiny_dir):
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TransformerBridge.boot_transformers(str(tiny_dir), device="cpu")
    handle = model.blocks[1].register_forward_hook(_scale(2.0))
    assert decoder_for(model) is None
    handle.remove()
    decoder = decoder_for(model)
    assert decoder is not None and decoder.ok
    model.blocks[1].register_forward_hook(_scale(2.0))
    assert decoder_for(model) is None


def test_bridge_state_names_each_kind_of_change(fresh):
    state = BridgeState(fresh)
    assert state.same(fresh) and state.changes(BridgeState(fresh)) == []
    fresh.blocks[0].ln1.original_component.variance_epsilon = 0.5
    fresh.blocks[1].attn.register_forward_hook(lambda m, a, out: None)
    changes = state.changes(BridgeState(fresh))
    assert not state.same(fresh)
    assert any(c.endswith("variance_epsilon changed") for c in changes), changes
    assert "blocks.1.attn._forward_hooks changed" in changes


def test_the_reference_holds_no_tensor(fresh):
    """The load-time reference lasts as long as the model: holding tensors, it would
    keep every parameter the user replaces alive."""
    reference = decoder_for(fresh).reference
    slots = [f[k] for f in reference.frozen for k in ("_parameters", "_buffers") if k in f]
    assert sum(map(len, slots)) > 20
    assert not any(isinstance(v, Tensor) for slot in slots for v in slot.values())
    assert reference.objects == [] and reference.root is None
