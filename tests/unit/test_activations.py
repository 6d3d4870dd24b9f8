"""Reading the residual stream: padding invariance, positions, bad input."""

from __future__ import annotations

import pytest
import torch

from workbench import format_prompt, read_residuals
from workbench.errors import WorkbenchError

TEXTS = ["hi", "a somewhat longer prompt here", "mid length one", "x"]


def _prompts(model):
    return [format_prompt(model, t) for t in TEXTS]


def test_batched_equals_one_at_a_time(tiny_model):
    prompts = _prompts(tiny_model)
    batched = read_residuals(tiny_model, prompts, batch_size=4)
    single = torch.cat([read_residuals(tiny_model, [p], batch_size=1) for p in prompts])
    assert batched.shape == (4, 3, 32)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_last_token_matches_run_with_cache(tiny_model):
    prompt = _prompts(tiny_model)[1]
    ours = read_residuals(tiny_model, [prompt], layers=[2, 0])
    tokens = tiny_model.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    _, cache = tiny_model.run_with_cache(tokens["input_ids"])
    torch.testing.assert_close(ours[0, 0], cache["blocks.2.hook_resid_post"][0, -1])
    torch.testing.assert_close(ours[0, 1], cache["blocks.0.hook_resid_post"][0, -1])


def test_mean_and_last_k_positions(tiny_model):
    prompt = _prompts(tiny_model)[1]
    tokens = tiny_model.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    _, cache = tiny_model.run_with_cache(tokens["input_ids"])
    full = cache["blocks.1.hook_resid_post"][0]
    # Batched with a shorter prompt, so padding is present and must be ignored.
    batch = [prompt, _prompts(tiny_model)[0]]
    mean = read_residuals(tiny_model, batch, layers=[1], position="mean")[0, 0]
    last3 = read_residuals(tiny_model, batch, layers=[1], position=3)[0, 0]
    torch.testing.assert_close(mean, full.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last3, full[-3:].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": [3]}, "layer 3 is out of range"),
        ({"layers": [-1]}, "layer -1 is out of range"),
        ({"layers": []}, "layers is empty"),
        ({"layers": [1, 1]}, "duplicates"),
        ({"position": "first"}, "position 'first'"),
        ({"position": 0}, "position 0"),
        ({"batch_size": 0}, "batch_size"),
        ({"hook_name": "blocks.{layer}.hook_nothing"}, "unknown hook name"),
    ],
)
def test_bad_arguments_are_named(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_residuals(tiny_model, _prompts(tiny_model), **kwargs)


def test_last_k_longer_than_prompt_is_refused(tiny_model):
    with pytest.raises(ValueError, match="last 500 tokens"):
        read_residuals(tiny_model, _prompts(tiny_model), position=500)


@pytest.mark.parametrize("position", ["last", 2])
def test_shared_prefix_cache_gives_the_same_activations(tiny_model, position):
    prompts = _prompts(tiny_model)
    shared = read_residuals(tiny_model, prompts, position=position, batch_size=3)
    plain = read_residuals(tiny_model, prompts, position=position, share_prefix=False)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


def test_shared_prefix_length():
    from workbench.vectors.activations import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # keeps one token to read
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4]], keep=3) == 1
    assert shared_prefix_length([[7], [8]]) == 0


# --- read_layers: the reader underneath read_residuals and residual_norms -----------


def _record(calls: list):
    def each(col, x, mask, rows):
        calls.append((col, x.detach().float().cpu().clone(), mask.cpu().clone(), rows))

    return each


def test_read_layers_hands_each_layer_its_padded_batch_and_mask(tiny_model):
    from workbench.model.prompts import encode_prompts
    from workbench.vectors.activations import read_layers

    long_text, short_text = _prompts(tiny_model)[1], _prompts(tiny_model)[0]
    ids = encode_prompts(tiny_model, [long_text, short_text])
    calls = []
    assert read_layers(tiny_model, ids, _record(calls), layers=[2, 0], batch_size=2) == [2, 0]
    # One batch; layer 0 (column 1) is computed before layer 2 (column 0).
    assert [(col, rows) for col, _, _, rows in calls] == [(1, slice(0, 2)), (0, slice(0, 2))]
    _, cache = tiny_model.run_with_cache(torch.tensor([ids[0]]))
    for col, x, mask, _ in calls:
        assert mask.sum(1).tolist() == [len(ids[0]), len(ids[1])]
        assert mask[1, : len(ids[0]) - len(ids[1])].sum() == 0  # left padding
        layer = [2, 0][col]
        expected = cache[f"blocks.{layer}.hook_resid_post"][0].float().cpu()
        torch.testing.assert_close(x[0], expected, atol=1e-5, rtol=1e-5)


def test_read_layers_batches_rows_in_order(tiny_model):
    from workbench.model.prompts import encode_prompts
    from workbench.vectors.activations import read_layers

    ids = encode_prompts(tiny_model, _prompts(tiny_model))
    calls = []
    read_layers(tiny_model, ids, _record(calls), layers=[1], batch_size=3)
    assert [rows for *_, rows in calls] == [slice(0, 3), slice(3, 4)]
    assert [x.shape[0] for _, x, _, _ in calls] == [3, 1]


def test_read_layers_with_a_shared_prefix_hands_only_the_tokens_after_it(tiny_model):
    from workbench.vectors.activations import read_layers, shared_prefix_length

    ids = [[5, 6, 7, 8, 9], [5, 6, 7, 10, 11]]
    prefix = shared_prefix_length(ids)
    assert prefix == 3
    plain, cached = [], []
    read_layers(tiny_model, ids, _record(plain), layers=[2])
    read_layers(tiny_model, ids, _record(cached), layers=[2], prefix=prefix)
    (_, full, _, _), (_, after, mask, _) = plain[0], cached[0]
    assert tuple(after.shape[:2]) == (2, 2) and mask.tolist() == [[1, 1], [1, 1]]
    torch.testing.assert_close(after, full[:, prefix:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("each", "kwargs", "match"),
    [
        ("not a function", {}, "each must be a function, got str"),
        (None, {"prefix": 3}, r"prefix=3 tokens are not shared .* \(at most 1 are\)"),
        (None, {"prefix": -1}, "prefix"),
        (None, {"layers": [5]}, "layer 5 is out of range"),
        (None, {"hook_name": "blocks.{layer}.hook_nothing"}, "unknown hook name"),
    ],
)
def test_read_layers_refuses_bad_arguments(tiny_model, each, kwargs, match):
    from workbench.vectors.activations import read_layers

    with pytest.raises(WorkbenchError, match=match):
        read_layers(tiny_model, [[5, 6, 7], [5, 9, 7]], each or _record([]), **kwargs)
