"""A quality guard for generated text: what steering breaks.

Per response it records the number of tokens and of words, whether the output is
empty, whether it was cut at the token limit, the share of repeated token n-grams,
its perplexity under the model as called (outside `steer`, the unsteered model),
and the model-free measures the guard decides on.

A response is *degenerate* (`QualityThresholds`, each cut a reader's "broken"):

- empty: fewer than ``min_words`` whitespace words (1 by default, so no word at all:
  a one-word answer, such as a suggested name, can be right);
- a loop: its most repetitive ``window_chars``-character stretch compresses with
  zlib to less than ``min_compression_ratio`` of its size (`compression_ratio`);
- a cycling list: more than ``max_duplicate_line_share`` of its lines (list marks
  stripped) repeat an earlier line (`duplicate_line_share`);
- symbol salad: fewer than ``min_letter_share`` of its non-space characters are
  letters (`letter_share`), in an answer of 40 or more of them (a short numeric
  answer, "1990." or ``{"x": 1}``, can be right);
- letter salad: more than ``max_single_character_share`` of its words (eight or
  more) are a lone letter or digit ("The A A B H L X A X", "1 1 1",
  `single_character_share`);
- a tail loop: one stretch of 3 to 40 characters, two or more of them letters,
  repeated back to back more than ``max_unit_copies`` times
  (``search/search/search/…``, ``la la la…``, `unit_copies`), which the windowed
  compression ratio misses when the loop is short or comes after a long normal start;
- word salad: more than ``max_unknown_word_share`` of its words of three or more
  letters outside code (``unknown_word_min_words`` or more) are in no English,
  French, Spanish or German dictionary ("Hindi A Adindi, FULL INLINING A
  LINULLING", `workbench.evaluation.vocabulary.unknown_word_share`).

Why these: on a labelled set of 196 responses of the embedded model, each labelled
by reading it (``tests/data/degenerate_labels.jsonl``, measured by
``python -m experiments.guard_measures``; docs/evaluation.md has the figures), this rule
beat the earlier guard (repeated token 4-grams above 0.5, or perplexity under the
model being steered, run unsteered, below 1.2), whose recall was 0.77: greedy text is always
likely under its own model, so perplexity under it cannot see gibberish. Perplexity
of the response alone under the same-family embedded model was weaker than the
rule too, and no independent model is embedded; the perplexity column is recorded
for the reader, not used. The compression ratio is read over windows so that a
long normal answer (whose ratio falls as vocabulary repeats) is judged like a short
one, and a loop that starts late is still seen. Being cut at the token limit is
recorded but is not degenerate by itself (a long answer with a short budget is cut).
The word-salad cut changes no verdict on the labelled set (its word salads loop too,
and are caught already) nor on the 6,144 responses of ``results/raw`` then (measured);
it is there for short invented-word answers that nothing else sees, and at more
than half the words unknown it stays clear of normal answers (at most 0.09 in the
labelled set: names, rare terms; at most 0.38 in the French answers of the results).
The tail-loop cut changes no verdict on the labelled set either (no normal answer
there repeats a stretch more than twice; the degenerate ones it sees are caught
already); on the 13,824 responses of ``results/raw`` it flags 24 more, every one a
loop when read (the demo's ``https://www.example.com/search/search/…`` among its
kind), and changes no selection of the results table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model import kv
from workbench.model.fast_decode import decoder_for
from workbench.model.hooks import model_lock
from workbench.model.prompts import check_context, encode_prompts, pad_left
from workbench.options import as_float, check_int
from workbench.steering.decoding import eos_ids
from workbench.steering.generation import Generation, generate
from workbench.steering.loops import LoopStop, window_ratio
from workbench.steering.terms import PerRow

from .vocabulary import unknown_word_share


@dataclass(frozen=True)
class QualityThresholds:
    """Where a response counts as degenerate (see the module docstring).

    Attributes:
        min_words: degenerate under this many whitespace words.
        min_compression_ratio: degenerate when a window compresses below this.
        window_chars: the window, in characters, of the compression ratio.
        max_duplicate_line_share: degenerate above this share of repeated lines.
        min_letter_share: degenerate below this share of letters.
        max_single_character_share: degenerate above this share of one-character words.
        max_unit_copies: degenerate when a short stretch repeats back to back more often.
        max_unknown_word_share: degenerate above this share of words in no dictionary.
        unknown_word_min_words: the fewest dictionary words that cut is applied to.
        ngram: the n of the recorded repeated token n-gram share.

    Example:
        >>> QualityThresholds().min_compression_ratio
        0.42
    """

    min_words: int = 1
    min_compression_ratio: float = 0.42
    window_chars: int = 512
    max_duplicate_line_share: float = 0.45
    min_letter_share: float = 0.5
    max_single_character_share: float = 0.5
    max_unit_copies: int = 5
    max_unknown_word_share: float = 0.5
    unknown_word_min_words: int = 5
    ngram: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_words", check_int("min_words", self.min_words, low=0))
        object.__setattr__(
            self, "window_chars", check_int("window_chars", self.window_chars, low=16)
        )
        object.__setattr__(self, "ngram", check_int("ngram", self.ngram, low=1))
        object.__setattr__(
            self, "max_unit_copies", check_int("max_unit_copies", self.max_unit_copies, low=1)
        )
        object.__setattr__(
            self,
            "unknown_word_min_words",
            check_int("unknown_word_min_words", self.unknown_word_min_words, low=1),
        )
        for name in (
            "min_compression_ratio",
            "max_duplicate_line_share",
            "min_letter_share",
            "max_single_character_share",
            "max_unknown_word_share",
        ):
            value = as_float(name, getattr(self, name))
            if not 0 <= value <= 1:
                raise InvalidArgumentError(f"{name} must be in [0, 1], got {value!r}")
            object.__setattr__(self, name, value)

    def record(self) -> dict[str, float | int]:
        """The thresholds as JSON-friendly fields (what a sweep file's configuration holds)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def flags(self, text: str) -> dict[str, Any]:
        """The measures of `text` and whether they make it degenerate.

        Example:
            >>> QualityThresholds().flags("word " * 80)["degenerate"]
            True
            >>> QualityThresholds().flags("A short, plain and normal answer here.")["degenerate"]
            False
        """
        words = len(text.split())
        ratio = compression_ratio(text, self.window_chars)
        lines = duplicate_line_share(text)
        letters = letter_share(text)
        single = single_character_share(text)
        copies = unit_copies(text)
        unknown, looked_up = unknown_word_share(text)
        return {
            "n_words": words,
            "compression_ratio": ratio,
            "duplicate_line_share": lines,
            "letter_share": letters,
            "single_character_share": single,
            "unit_copies": copies,
            "unknown_word_share": unknown,
            "degenerate": words < self.min_words
            or ratio < self.min_compression_ratio
            or lines > self.max_duplicate_line_share
            or (letters < self.min_letter_share and len("".join(text.split())) >= 40)
            or single > self.max_single_character_share
            or copies > self.max_unit_copies
            or (unknown > self.max_unknown_word_share and looked_up >= self.unknown_word_min_words),
        }


_LIST_MARK = re.compile(r"^\s*(\d+[.)]|[-*•])\s*")


def compression_ratio(text: str, window_chars: int = 512) -> float:
    """The smallest zlib ratio (compressed over raw UTF-8 bytes, level 9) over windows
    of `window_chars` characters, half a window apart; the whole text when shorter.
    1.0 for an empty text. Loops compress well; prose does not.

    Example:
        >>> compression_ratio("ha" * 200) < 0.1 < 0.5 < compression_ratio("A plain sentence.")
        True
    """
    if not text:
        return 1.0
    step = max(1, window_chars // 2)
    starts = range(0, max(1, len(text) - window_chars + step), step)
    best = 1.0
    for start in starts:
        best = min(best, window_ratio(text[start : start + window_chars]))
    return best


def duplicate_line_share(text: str) -> float:
    """Share of the lines with a letter or digit (list marks stripped) that repeat an
    earlier line; 0 under three such lines. Lines of punctuation alone (``{``, ``},``
    in pretty-printed JSON, rules, fences) are not counted.

    Example:
        >>> duplicate_line_share("- tea\\n- milk\\n- tea\\n- tea")
        0.5
    """
    lines = [_LIST_MARK.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if any(c.isalnum() for c in line)]
    return 1 - len(set(lines)) / len(lines) if len(lines) >= 3 else 0.0


def letter_share(text: str) -> float:
    """Share of the non-space characters that are letters (0 when there are none).

    Example:
        >>> letter_share("* * 2 2"), letter_share("abc1")
        (0.0, 0.75)
    """
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def single_character_share(text: str) -> float:
    """Share of the whitespace-separated words that are one letter or digit; 0 under
    eight words. Letter or digit salad ("The A A B H L X", "1 1 1 1") is mostly such
    words; measured normal answers (prose, lists, code) have at most 0.21, and lone
    punctuation (the braces of pretty-printed JSON, ``=`` in code) does not count.

    Example:
        >>> single_character_share("The A A A A A A A B H L X A X X X")
        0.9375
        >>> single_character_share("I saw a cat and a dog in the park.")
        0.3
    """
    words = text.split()
    singles = sum(len(word) == 1 and word.isalnum() for word in words)
    return singles / len(words) if len(words) >= 8 else 0.0


def unit_copies(text: str, shortest: int = 3, longest: int = 40) -> int:
    """The most times one stretch of `shortest` to `longest` characters, two or more of
    them letters, occurs back to back in `text` (1 when nothing repeats). A stretch of
    period ``L`` is found where ``text[i] == text[i + L]`` holds over a run; the run
    plus one period holds ``(run + L) // L`` whole copies.

    Example:
        >>> unit_copies("see https://www.example.com/search/search/search/search/search/")
        5
        >>> unit_copies("A plain answer, with nothing said twice.")
        1
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    letters = np.concatenate([[0], np.cumsum([c.isalpha() for c in text], dtype=np.int64)])
    best = 1
    for period in range(shortest, min(longest, len(codes) // 2) + 1):
        same = np.concatenate([[False], codes[:-period] == codes[period:], [False]])
        edges = np.diff(same.astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        # every window of a periodic stretch is a rotation of one unit, so its letter
        # count is the unit's
        worded = letters[starts + period] - letters[starts] >= 2
        copies = (ends - starts + period) // period
        if worded.any():
            best = max(best, int(copies[worded].max()))
    return best


# What `quality_frame` records per response, in order.
QUALITY_COLUMNS = (
    "n_tokens",
    "empty",
    "truncated",
    "repeated_ngram_share",
    "perplexity",
    "n_words",
    "compression_ratio",
    "duplicate_line_share",
    "letter_share",
    "single_character_share",
    "unit_copies",
    "unknown_word_share",
    "stopped_loop",
    "degenerate",
)


def _thresholds(thresholds: Any) -> QualityThresholds:
    if thresholds is None:
        return QualityThresholds()
    if not isinstance(thresholds, QualityThresholds):
        raise ArgumentTypeError(
            f"thresholds must be a QualityThresholds or None, got {type(thresholds).__name__} "
            f"{thresholds!r:.60}"
        )
    return thresholds


def repeated_ngram_share(tokens: Sequence[int], n: int = 4) -> float:
    """Share of the response's n-grams that repeat an earlier n-gram (0 for < n+1 tokens).

    Example:
        >>> repeated_ngram_share([1, 2, 3, 4, 5, 6])
        0.0
        >>> repeated_ngram_share([7, 8] * 10, n=2)  # every 2-gram after the first two repeats
        0.8947368421052632
    """
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _token_nll(
    logits: Float[Tensor, "batch pos d_vocab"], targets: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    return torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), targets, reduction="none"
    )


@torch.inference_mode()
def response_perplexity(
    model: Any,
    prompt_tokens: Sequence[Sequence[int]],
    response_tokens: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[float]:
    """Perplexity of each response given its prompt, teacher-forced (nan for empty ones).

    Example:
        >>> ids = [[1, 40, 41], [1, 42]]
        >>> ppl = response_perplexity(model, ids, [[50, 51], [52, 53, 54]])
        >>> len(ppl), all(p > 1 for p in ppl)
        (2, True)
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    if len(prompt_tokens) != len(response_tokens):
        raise InvalidArgumentError(
            f"got {len(prompt_tokens)} prompts and {len(response_tokens)} responses; "
            "they must be one per response"
        )
    check_context(
        model,
        [[*p, *r] for p, r in zip(prompt_tokens, response_tokens, strict=True)],
        "prompt {} with its response".format,
    )
    out: list[float] = []
    for start in range(0, len(prompt_tokens), batch_size):
        prompts = prompt_tokens[start : start + batch_size]
        responses = response_tokens[start : start + batch_size]
        ids, mask = pad_left(model, [[*p, *r] for p, r in zip(prompts, responses, strict=True)])
        # Left-padded, so every response ends the row: only the last `keep` positions
        # predict response tokens, and only they are unembedded.
        keep = min(ids.shape[1], max(len(r) for r in responses) + 1)
        # Held so that another thread's steer() block cannot reach this unsteered pass.
        with model_lock(model):
            fast = decoder_for(model)
            if fast is not None:
                logits = fast.last_logits(ids, mask, keep)
            else:
                logits = kv.forward(model, ids, mask, kv.new_cache(model, ids.shape[0]))[:, -keep:]
        nll = _token_nll(logits[:, :-1], ids[:, ids.shape[1] - keep + 1 :])
        for row, response in enumerate(responses):
            if not response:
                out.append(math.nan)
                continue
            # The last len(response) targets are the response's own tokens.
            out.append(float(nll[row, -len(response) :].mean().exp()))
    return out


def quality_frame(
    model: Any,
    prompt_tokens: Sequence[Sequence[int]],
    response_tokens: Sequence[Sequence[int]],
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    thresholds: QualityThresholds | None = None,
    batch_size: int = 8,
    finish: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One quality record per response: the columns of `QUALITY_COLUMNS`.

    `finish` is `Generation.finish` of the responses: a row that `LoopStop` ended
    (``"loop"``) is marked ``stopped_loop`` and counts as degenerate. None says no
    row was stopped for a loop.

    Example:
        >>> out = generate(model, ["Hi", "Name a colour."], max_new_tokens=6, return_tokens=True)
        >>> prompts = [tokenize_prompts(model, [format_prompt(model, p)])[0][0].tolist() for p in ["Hi", "Name a colour."]]
        >>> table = quality_frame(model, prompts, out.tokens, out.texts, max_new_tokens=6)
        >>> list(table.columns) == list(QUALITY_COLUMNS)
        True
    """
    limits = _thresholds(thresholds)
    if not len(prompt_tokens) == len(response_tokens) == len(texts):
        raise InvalidArgumentError(
            f"got {len(prompt_tokens)} prompts, {len(response_tokens)} token lists and "
            f"{len(texts)} texts; they must be one per response"
        )
    if finish is None:
        finish = [""] * len(texts)
    elif isinstance(finish, str) or len(finish) != len(texts):
        raise InvalidArgumentError(
            f"finish must be one reason per response ({len(texts)}), got {finish!r:.80}"
        )
    stops = eos_ids(model)
    ppl = response_perplexity(model, prompt_tokens, response_tokens, batch_size=batch_size)
    rows = []
    for tokens, text, p, why in zip(response_tokens, texts, ppl, finish, strict=True):
        measures = limits.flags(text)
        looped = why == "loop"
        degenerate = measures.pop("degenerate") or looped
        rows.append(
            {
                "n_tokens": len(tokens),
                "empty": not text.strip(),
                "truncated": len(tokens) >= max_new_tokens
                and (not tokens or tokens[-1] not in stops),
                "repeated_ngram_share": repeated_ngram_share(tokens, limits.ngram),
                "perplexity": p,
                **measures,
                "stopped_loop": looped,
                "degenerate": degenerate,
            }
        )
    return pd.DataFrame(rows)


def generate_with_quality(
    model: Any,
    formatted: Sequence[str],
    steering: PerRow,
    *,
    max_new_tokens: int,
    batch_size: int,
    thresholds: QualityThresholds | None = None,
    refill: bool = False,
    loop_stop: LoopStop | None = None,
) -> tuple[Generation, pd.DataFrame]:
    """Generate from already formatted prompts with one steering entry per row, and the
    `quality_frame` of the responses (what sweeps and composition runs both need).

    Example:
        >>> from workbench.steering.terms import PerRow
        >>> texts = [format_prompt(model, "Hi")]
        >>> out, quality = generate_with_quality(model, texts, PerRow([None]), max_new_tokens=3, batch_size=1)
        >>> len(out.texts), len(quality)
        (1, 1)
    """
    out = generate(
        model,
        list(formatted),
        steering=steering,
        formatted=True,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        return_tokens=True,
        refill=refill,
        loop_stop=loop_stop,
    )
    quality = quality_frame(
        model,
        encode_prompts(model, list(formatted)),
        out.tokens,
        out.texts,
        max_new_tokens=max_new_tokens,
        thresholds=thresholds,
        finish=out.finish,
    )
    return out, quality
