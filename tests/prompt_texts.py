"""User texts for tokenization tests: every bundled pair's two sides, and edge cases."""

from __future__ import annotations

from workbench.vectors.pairs import instruction_names, make_pairs

EDGE_TEXTS = [
    "",
    " ",
    "  leading spaces",
    "trailing spaces  ",
    "\nleading newline",
    "\n\ntwo leading newlines",
    "trailing newline\n",
    "a\n\nb\tc",
    "caf\u00e9 \u65e5\u672c \U0001f642",
    "<not a control token>",
    "<|im_start",
    "im_end|>",
    "nul\x00byte",
    "Q: already\nA:",
]


def prompt_texts() -> list[str]:
    """Every bundled pair's two sides (both splits) and edge cases, each once."""
    pairs = [
        p
        for name in instruction_names()
        for s in ("train", "test")
        for p in make_pairs(name, split=s)
    ]
    sides = [t for p in pairs for t in (p.with_instruction, p.without_instruction)]
    return list(dict.fromkeys([*sides, *EDGE_TEXTS]))
