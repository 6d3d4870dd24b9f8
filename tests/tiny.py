"""Tiny random-weight Hugging Face checkpoints for unit tests (seconds, no network)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 3 special tokens then one token per byte."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    # alphabet() comes from a hash set, in another order on every call: sorted, the
    # byte -> id map (and so every tiny model's tokens) is the same in every run.
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE if chat else None,
    )


ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "granite": (GraniteConfig, GraniteForCausalLM),
}


def make_tiny_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    chat: bool = True,
    n_layers: int = 3,
    arch: str = "llama",
    d_model: int = 32,
) -> Path:
    """Write a random checkpoint (d_model 32 by default) with a byte-level tokenizer to `path`.

    `arch="granite"` gives an architecture TransformerBridge supports but
    HookedTransformer does not.
    """
    tokenizer = tiny_tokenizer(chat=chat)
    config_cls, model_cls = ARCHITECTURES[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        # Larger-than-default weights so random models produce varied tokens.
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
