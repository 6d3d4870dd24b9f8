"""BOS tokens: every way of tokenizing a formatted prompt gives the same ids.

TransformerLens reloads tokenizers with ``add_bos_token=True``; `load_model` gives
them back the checkpoint's own BOS behaviour, so ``model.tokenizer(text)``,
``model.to_tokens(text)`` and `encode_prompts` agree. The embedded checkpoint build
takes that behaviour from the GGUF's ``tokenizer.ggml.add_bos_token``; it is tested
here on tiny GGUF files written on the fly, as is its handling of temporaries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gguf
import numpy as np
import pytest
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from tests.tiny import CHAT_TEMPLATE, SPECIALS, tiny_tokenizer
from workbench import format_prompt, load_model
from workbench.files import temp_name
from workbench.model.embedded import (
    MANIFEST,
    EmbeddedModel,
    build_checkpoint,
    follow_gguf_bos,
    gguf_add_bos,
    verify_checkpoint,
)
from workbench.model.prompts import encode_prompts

BOS = 1  # "<|im_start|>" in tests.tiny's vocabulary, as in SmolLM2's
PACKAGE = "workbench_tiny_gguf_weights"


def write_tiny_gguf(path: Path, *, add_bos: bool | None) -> Path:
    """A 2-layer random Llama GGUF with the tiny byte-level vocabulary (F32, ~60 kB)."""
    tokens = [*SPECIALS, *dict.fromkeys(pre_tokenizers.ByteLevel.alphabet()), "Ġt"]
    d, d_ff, n_heads, n_kv, n_layers = 32, 64, 4, 2, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(d_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // n_heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(0)
    kv = n_kv * d // n_heads
    shapes = {"token_embd.weight": (len(tokens), d), "output_norm.weight": (d,)}
    for i in range(n_layers):
        shapes.update({f"blk.{i}.{n}_norm.weight": (d,) for n in ("attn", "ffn")})
        shapes.update({f"blk.{i}.attn_{n}.weight": (d, d) for n in ("q", "output")})
        shapes.update({f"blk.{i}.attn_{n}.weight": (kv, d) for n in ("k", "v")})
        shapes.update({f"blk.{i}.ffn_{n}.weight": (d_ff, d) for n in ("gate", "up")})
        shapes[f"blk.{i}.ffn_down.weight"] = (d, d_ff)
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_embedded(root: Path, name: str, *, add_bos: bool | None) -> EmbeddedModel:
    """An `EmbeddedModel` whose "package" is a directory on sys.path holding a tiny GGUF."""
    package = root / PACKAGE
    package.mkdir(exist_ok=True)
    (package / "__init__.py").touch()
    write_tiny_gguf(package / f"{name}.gguf", add_bos=add_bos)
    return EmbeddedModel(
        name=name,
        distribution="tiny",
        version="0",
        module=PACKAGE,
        gguf_file=f"{name}.gguf",
        instruct=True,
        description="tiny test model",
    )


@pytest.fixture(scope="module")
def gguf_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gguf_package")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        yield root
        sys.modules.pop(PACKAGE, None)


@pytest.fixture(scope="module")
def built(gguf_root: Path) -> dict[bool, Path]:
    """Checkpoints built from tiny GGUFs that do and do not ask for a BOS."""
    out = {}
    for add_bos in (True, False):
        model = tiny_embedded(gguf_root, f"tiny-bos-{add_bos}", add_bos=add_bos)
        out[add_bos] = build_checkpoint(model, gguf_root / "cache" / model.name)
    return out


@pytest.fixture(scope="module", params=["bridge", "hooked"])
def bos_models(request: pytest.FixtureRequest, built: dict[bool, Path]) -> dict:
    """One backend's models of a checkpoint whose tokenizer adds BOS, by prompt style."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            style: load_model(str(built[True]), backend=request.param, prompt_style=style)
            for style in ("chat", "plain")
        }


def three_ways(model, text: str) -> tuple[list[int], list[int], list[int]]:
    return (
        model.tokenizer(text)["input_ids"],
        model.to_tokens(text)[0].tolist(),
        encode_prompts(model, [text])[0],
    )


def test_chat_prompt_ids_agree_and_hold_the_templates_bos_once(tiny_model):
    text = format_prompt(tiny_model, "Name a colour.")
    from_tokenizer, from_to_tokens, ours = three_ways(tiny_model, text)
    assert from_tokenizer == from_to_tokens == ours
    assert ours[:2] == [BOS, tiny_model.tokenizer.convert_tokens_to_ids("u")]
    assert ours.count(BOS) == text.count("<|im_start|>")


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_plain_prompts_get_no_bos_when_the_checkpoints_tokenizer_adds_none(tiny_plain_dir, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tiny_plain_dir), backend=backend)
    text = format_prompt(model, "Name a colour.")
    from_tokenizer, from_to_tokens, ours = three_ways(model, text)
    assert from_tokenizer == from_to_tokens == ours
    assert ours == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert BOS not in ours
    assert model.cfg.tokenizer_prepends_bos is False


def test_plain_prompts_get_one_bos_when_the_checkpoints_tokenizer_adds_one(bos_models):
    model = bos_models["plain"]
    text = format_prompt(model, "Name a colour.")
    from_tokenizer, from_to_tokens, ours = three_ways(model, text)
    assert from_tokenizer == from_to_tokens == ours
    assert ours == [BOS, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert ours.count(BOS) == 1


def test_the_context_limit_counts_the_bos_that_generation_feeds(bos_models):
    """A plain prompt's BOS is one of its tokens, at the limit as everywhere else."""
    from workbench import generate
    from workbench.errors import InvalidArgumentError

    model = bos_models["plain"]
    prompt = "Name a colour."
    n_prompt = len(encode_prompts(model, [format_prompt(model, prompt)])[0])
    room = model.cfg.n_ctx - n_prompt
    out = generate(model, [prompt], max_new_tokens=room, stop=[], return_tokens=True)
    assert len(out.tokens[0]) <= room
    with pytest.raises(InvalidArgumentError, match=f"prompt 0 has {n_prompt} tokens"):
        generate(model, [prompt], max_new_tokens=room + 1)


def test_chat_prompts_on_a_bos_adding_tokenizer_keep_the_templates_bos_only(bos_models):
    model = bos_models["chat"]
    text = format_prompt(model, "Name a colour.")
    from_tokenizer, from_to_tokens, ours = three_ways(model, text)
    assert from_to_tokens == ours == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ours.count(BOS) == text.count("<|im_start|>") and ours[1] != BOS
    # The documented exception: a tokenizer that adds BOS doubles a template's one,
    # as in Hugging Face; callers tokenizing chat text use add_special_tokens=False.
    assert from_tokenizer == [BOS, *ours]


@pytest.mark.parametrize("add_bos", [True, False])
def test_built_checkpoint_follows_the_gguf_add_bos_flag(built, gguf_root, add_bos):
    dest = built[add_bos]
    assert gguf_add_bos(gguf_root / PACKAGE / f"tiny-bos-{add_bos}.gguf") is add_bos
    ids = AutoTokenizer.from_pretrained(dest)("a")["input_ids"]
    assert (ids[0] == BOS) is add_bos
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["add_bos_token"] == str(add_bos).lower()
    assert verify_checkpoint(dest)


def test_follow_gguf_bos_changes_what_the_saved_tokenizer_does(tmp_path):
    tokenizer = tiny_tokenizer()
    assert tokenizer("a")["input_ids"][0] != BOS
    follow_gguf_bos(tokenizer, True)
    assert tokenizer("a")["input_ids"][0] == BOS
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("a")["input_ids"][0] == BOS
    follow_gguf_bos(tokenizer, False)
    assert tokenizer("a")["input_ids"][0] != BOS


def test_a_gguf_without_the_flag_reads_as_none_and_changes_nothing(tmp_path):
    assert gguf_add_bos(write_tiny_gguf(tmp_path / "noflag.gguf", add_bos=None)) is None
    tokenizer = tiny_tokenizer()
    follow_gguf_bos(tokenizer, None)
    assert tokenizer("a")["input_ids"][0] != BOS


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_build_removes_a_killed_builds_temporary(gguf_root, tmp_path):
    model = tiny_embedded(gguf_root, "tiny-stale", add_bos=False)
    dest = tmp_path / "cache" / model.name
    dest.parent.mkdir()
    ours = temp_name(dest).name
    stale = dest.with_name(ours.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    # A temporary whose writer is still running (this process) must survive.
    alive = dest.with_name(ours)
    alive.mkdir()
    assert build_checkpoint(model, dest) == dest and verify_checkpoint(dest)
    assert not stale.exists()
    assert alive.exists()
    leftovers = {p.name for p in dest.parent.iterdir()} - {dest.name, alive.name}
    assert leftovers == set()


def test_a_failed_build_leaves_no_temporary(gguf_root, tmp_path, monkeypatch):
    model = tiny_embedded(gguf_root, "tiny-broken", add_bos=False)
    dest = tmp_path / "cache" / model.name

    def crash(*args, **kwargs):
        raise MemoryError("out of memory while dequantizing")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", crash)
    with pytest.raises(MemoryError):
        build_checkpoint(model, dest)
    assert list(dest.parent.iterdir()) == []
