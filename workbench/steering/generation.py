"""Steered sampling: batched, left-padded, KV-cached generation on both backends."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model.hooks import model_lock, refuse_under_per_row_steer
from workbench.model.info import check_model, model_info
from workbench.model.prompts import (
    check_context,
    check_prompts,
    encode_prompts,
    format_prompt,
)
from workbench.options import PromptStyle, check_bool, check_choice, check_int

from .decoding import DecodeLoop, Sampling
from .gates import read_gates
from .loops import LoopStop
from .plan import SteeringPlan
from .terms import Steering

PLAIN_STOP = "\nQ:"


@dataclass(frozen=True)
class Generation:
    """Output of `generate` with ``return_tokens=True``.

    Attributes:
        texts: decoded completions (prompt excluded), cut at EOS or a stop string.
        tokens: the generated token ids of each prompt, EOS included if produced.
        seed: the base seed used when sampling (None for greedy decoding).
        finish: why each row ended: ``"eos"``, ``"stop"`` (a stop string), ``"loop"``
            (`LoopStop`) or ``"length"`` (the token budget).
        gates: per prompt, whether each of its gated terms steered it (True) or not
            (False), in the order of its terms; ``()`` for a prompt with no gated term
            (see `workbench.steering.gates`).
    """

    texts: list[str]
    tokens: list[list[int]]
    seed: int | None = None
    finish: list[str] = field(default_factory=list)
    gates: list[tuple[bool, ...]] = field(default_factory=list)


def _stops(stop: Any, style: str, formatted: bool) -> list[str]:
    if stop is None:
        return [PLAIN_STOP] if style == "plain" and not formatted else []
    if not isinstance(stop, (str, list, tuple)):
        raise ArgumentTypeError(f"stop must be a string or a list of strings, got {stop!r}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise InvalidArgumentError(f"stop strings must be non-empty strings, got {stop!r}")
    return stops


def generate(
    model: Any,
    prompts: str | Sequence[str],
    *,
    steering: Steering = None,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    batch_size: int = 16,
    stop: str | Sequence[str] | None = None,
    formatted: bool = False,
    prompt_style: PromptStyle | None = None,
    return_tokens: bool = False,
    refill: bool = False,
    loop_stop: LoopStop | None = None,
) -> list[str] | Generation:
    """Generate completions, optionally steered, batched with a KV cache.

    Args:
        prompts: user messages (formatted with `format_prompt` unless `formatted`).
        steering: a `SteeringTerm` or a list of them, applied to every prompt; or
            `PerRow([...])` with one entry (None, a term, or a list) per prompt.
        max_new_tokens: tokens to generate at most per prompt.
        sampling: a `Sampling`; None (default) decodes greedily.
        stop: string(s) that end a completion (the stop string is cut off). The
            default is ``"\nQ:"`` for plain ``Q: …\nA:`` prompts (a base model's next
            question) and nothing for chat prompts; pass ``[]`` for no stop string.
        prompt_style: ``"chat"`` or ``"plain"``; defaults to the model's.
        refill: a row that ends hands its slot to the next prompt at once, so batches
            stay full (see `workbench.steering.decoding`); greedy tokens are those of
            static batches, sampled ones those of the prompt's own seed either way.
        loop_stop: a `LoopStop` ends a row whose tail is one short cycle repeated
            (``finish="loop"``, its tokens a prefix of the unstopped answer); None
            (default) decodes loops to the budget.

    Returns:
        The completions, or a `Generation` with token ids when `return_tokens`.

    Example:
        >>> rows = PerRow([SteeringTerm(vec, layer=1, mode="add", weight=4.0), None])
        >>> out = generate(model, ["Name a colour.", "Hi"], steering=rows, max_new_tokens=4)
        >>> len(out)
        2
    """
    run = _prepare(
        model,
        prompts,
        steering,
        max_new_tokens,
        sampling,
        batch_size,
        stop,
        formatted,
        prompt_style,
        refill,
        loop_stop,
    )
    check_bool("return_tokens", return_tokens)
    n = len(run.token_lists)
    tokens: list[list[int]] = [[] for _ in range(n)]
    texts, finish = [""] * n, [""] * n
    gates: list[tuple[bool, ...]] = [()] * n
    for done in run:
        i = done.index
        tokens[i], texts[i], finish[i], gates[i] = done.tokens, done.text, done.finish, done.gates
    return Generation(texts, tokens, run.seed, finish, gates) if return_tokens else texts


def iter_generate(
    model: Any,
    prompts: Sequence[str],
    *,
    steering: Steering = None,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    batch_size: int = 16,
    stop: str | Sequence[str] | None = None,
    formatted: bool = False,
    prompt_style: PromptStyle | None = None,
    refill: bool = False,
    loop_stop: LoopStop | None = None,
) -> Iterator[Completion]:
    """`generate`, one `Completion` at a time, in the order rows end (what a sweep
    writes as it goes). The arguments are checked before the first row is decoded; the
    model stays locked until the iterator is exhausted or closed.

    Example:
        >>> done = list(iter_generate(model, ["Hi", "Name a colour."], max_new_tokens=3, refill=True))
        >>> sorted(c.index for c in done)
        [0, 1]
    """
    return iter(
        _prepare(
            model,
            prompts,
            steering,
            max_new_tokens,
            sampling,
            batch_size,
            stop,
            formatted,
            prompt_style,
            refill,
            loop_stop,
        )
    )


@dataclass(frozen=True)
class Completion:
    """One finished prompt of `iter_generate`.

    Attributes:
        index: the prompt's position in the prompts given.
        text: its decoded completion, cut at a stop string.
        tokens: its generated token ids.
        finish: why it ended, one of ``"eos"``, ``"stop"``, ``"loop"``, ``"length"``.
        gates: whether each of its gated terms steered it (see `Generation.gates`).
    """

    index: int
    text: str
    tokens: list[int]
    finish: str
    gates: tuple[bool, ...] = ()


class _Run:
    """Checked arguments of one `generate` call; iterating decodes them."""

    def __init__(self, model: Any, token_lists: list[list[int]], steering: Steering, **kw: Any):
        self.model, self.token_lists, self.steering, self.kw = model, token_lists, steering, kw
        self.seed = kw["seed"]
        # Checked now, under the lock, so a bad plan raises before any decoding; what the
        # terms add up to is checked again when decoding starts, against the steer()
        # blocks open then.
        with model_lock(model):
            self.plan = SteeringPlan(model, steering)
        if self.plan.n_rows is not None and self.plan.n_rows != len(token_lists):
            raise InvalidArgumentError(
                f"PerRow steering has {self.plan.n_rows} entries for {len(token_lists)} prompts"
            )

    def __iter__(self) -> Iterator[Completion]:
        kw = dict(self.kw)
        stops = kw.pop("stops")
        # Another thread's steer() block or generate would put its hooks on this model's
        # forward passes: hold the model until done (reentrant, so nesting in one thread
        # works).
        with model_lock(self.model):
            self.plan.check_fits()
            plan, n = self.plan, len(self.token_lists)
            decisions: list[tuple[bool, ...]] = [()] * n
            if plan.gated:
                # Read before any of this call's steering: each prompt's terms are then
                # fixed for its whole generation.
                decisions = read_gates(
                    self.model, self.token_lists, plan.gates(n), kw["batch_size"]
                )
                plan = plan.open_gates(decisions)
            stop_text = None if not stops else _stop_check(self.model, stops)
            loop = DecodeLoop(self.model, self.token_lists, plan, stop_text=stop_text, **kw)
            rows = loop.rows()
            # Closed here, so its hooks are off before the lock is released.
            with contextlib.closing(rows):
                for index, tokens, finish in rows:
                    text = _text(self.model, tokens, stops)
                    yield Completion(index, text, tokens, finish, decisions[index])


def _prepare(
    model: Any,
    prompts: Any,
    steering: Steering,
    max_new_tokens: Any,
    sampling: Any,
    batch_size: Any,
    stop: Any,
    formatted: Any,
    prompt_style: Any,
    refill: Any,
    loop_stop: Any,
) -> _Run:
    refuse_under_per_row_steer("generate")
    check_model(model)
    prompts = check_prompts([prompts] if isinstance(prompts, str) else prompts)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("formatted", formatted)
    check_bool("refill", refill)
    if sampling is not None and not isinstance(sampling, Sampling):
        raise ArgumentTypeError(f"sampling must be a Sampling or None, got {sampling!r}")
    if loop_stop is not None and not isinstance(loop_stop, LoopStop):
        raise ArgumentTypeError(f"loop_stop must be a LoopStop or None, got {loop_stop!r}")
    style = check_choice(
        "prompt_style",
        model_info(model).prompt_style if prompt_style is None else prompt_style,
        PromptStyle,
    )
    stops = _stops(stop, style, formatted)
    texts = prompts if formatted else [format_prompt(model, p, style=style) for p in prompts]
    token_lists = encode_prompts(model, texts, style=style)
    check_context(model, token_lists, new_tokens=max_new_tokens)
    seed = None
    if sampling is not None:
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(48)
    return _Run(
        model,
        token_lists,
        steering,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        seed=seed,
        stops=stops,
        batch_size=batch_size,
        refill=refill,
        loop_stop=loop_stop,
    )


def _stop_check(model: Any, stops: list[str]) -> Any:
    # A stop string that ends in the newest token lies within the last (longest stop + 1)
    # tokens, since every token decodes to >= 1 character.
    tail = max(len(s) for s in stops) + 1

    def hit(tokens: list[int]) -> bool:
        text = model.tokenizer.decode(tokens[-tail:])
        return any(s in text for s in stops)

    return hit


def _text(model: Any, tokens: list[int], stops: list[str]) -> str:
    text = model.tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
