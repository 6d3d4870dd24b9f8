"""The decode loop behind `generate`: static batches, or refilled ones.

Static (``refill=False``): prompts go in batches of ``batch_size``; every row stays in
the forward pass until the batch's last row ends, as Hugging Face's `generate` does.

Refilled (``refill=True``): a row that ends (EOS, a stop string, a loop, the budget)
leaves the batch at once and the next pending prompt takes its slot: it is prefilled
alone (with the other newcomers of that step), its keys and values are put into the
running cache, left-padded to the batch's width, and it decodes on with the others.
The batch stays full until the work runs out, and leading columns no row still needs
are dropped. Each row carries its own steering entry (per-row terms follow their
prompt into whatever slot it takes) and, when sampling, its own generator
(``seed + prompt index``), so a prompt's tokens do not depend on its neighbours.

transformers offers per-row removal (``DynamicCache.batch_select_indices``) but no
insertion, and its continuous-batching manager packs requests into one ragged
sequence through paged attention kernels, which neither computes what the bridge
computes nor lets a forward hook see one row per prompt; so the cache edits are
ours (`workbench.model.kv`). Where the cache cannot take them (a sliding-window
layer), the loop falls back to static batches.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import InvalidArgumentError, NumericalError
from workbench.model import fast_decode, kv
from workbench.model.prompts import pad_left
from workbench.options import as_float, check_int

from .loops import LoopStop, LoopWatch
from .plan import SteeringPlan, position_window

# Why a row ended, as `Generation.finish` names it.
FINISH = ("eos", "stop", "loop", "length")


@dataclass(frozen=True)
class Sampling:
    """Sampling options for `generate` (no `Sampling` means greedy decoding).

    Attributes:
        temperature: softmax temperature, > 0 (however small: the logits' maximum is
            subtracted before dividing, so a tiny temperature samples the argmax).
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        seed: seeds one generator per prompt (``seed + prompt index``), so a
            prompt's sample does not depend on its batch. None draws a fresh seed,
            reported in `Generation.seed` so the run can be repeated.

    Numbers may be numpy or 0-d tensor scalars; they are stored as Python numbers.

    Example:
        >>> Sampling(temperature=0.7, seed=3).top_p
        1.0
    """

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, ok, rule in [
            ("temperature", lambda t: t > 0, "> 0"),
            ("top_p", lambda p: 0 < p <= 1, "in (0, 1]"),
        ]:
            value = getattr(self, name)
            try:
                number = as_float(name, value)
            except InvalidArgumentError:
                number = None  # not finite
            if number is None or not ok(number):
                raise InvalidArgumentError(f"{name} must be {rule}, got {value!r}")
            object.__setattr__(self, name, number)
        if self.seed is not None:
            # torch generators take 64-bit seeds; prompt i uses seed + i.
            object.__setattr__(self, "seed", check_int("seed", self.seed, low=0, high=2**62))


def eos_ids(model: Any) -> set[int]:
    """Token ids that end a completion: the tokenizer's EOS plus the model's own."""
    ids = {model.tokenizer.eos_token_id}
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    return {i for i in ids if i is not None}


def sample(
    logits: Float[Tensor, "batch d_vocab"],
    sampling: Sampling | None,
    generators: list[torch.Generator],
) -> Int[Tensor, " batch"]:
    """The next token of each row: the argmax, or a draw with that row's generator."""
    if sampling is None:
        return logits.argmax(-1)
    # Relative to each row's maximum, in float32: the best token is exactly 0 for any
    # temperature, so even a tiny one gives finite probabilities (logits / 1e-45 would be
    # inf, and softmax NaN). A row that is not finite is replaced by zeros here only to
    # keep multinomial from raising; the decode loop refuses it at this step's check.
    logits = logits.float()
    logits = torch.where(torch.isfinite(logits).all(-1, keepdim=True), logits, 0.0)
    shifted = logits - logits.max(-1, keepdim=True).values
    scaled = torch.where(shifted == 0, 0.0, shifted / sampling.temperature)
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
        # A top_p below float32's smallest number compares as 0: the top token stays.
        drop[..., 0] = False
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.stack(
        [torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators, strict=True)]
    )


class _Batch:
    """The rows decoding together: their cache, mask and host-side state."""

    def __init__(self) -> None:
        self.rows: list[int] = []  # prompt index of each batch row
        self.tokens: list[list[int]] = []
        self.alive: list[bool] = []
        self.finish: list[str] = []
        self.prompt_len: list[int] = []
        self.generators: list[torch.Generator] = []
        self.cache: Any = None
        self.mask: Tensor | None = None
        self.logits: Tensor | None = None


class DecodeLoop:
    """The decode loop over `token_lists` (formatted, encoded prompts) with `plan`.

    `stop_text(tokens)` says whether a row's newest tokens complete a stop string.
    `rows()` yields ``(prompt index, generated ids, finish)`` per prompt, in the order
    rows end; no steering hook is on the model while the caller holds a row (it may
    run the model itself, as the sweep's guard does).
    """

    def __init__(
        self,
        model: Any,
        token_lists: Sequence[list[int]],
        plan: SteeringPlan,
        *,
        max_new_tokens: int,
        sampling: Sampling | None,
        seed: int | None,
        stop_text: Callable[[list[int]], bool] | None,
        batch_size: int,
        refill: bool,
        loop_stop: LoopStop | None,
    ) -> None:
        self.model, self.token_lists, self.plan = model, token_lists, plan
        self.max_new, self.sampling, self.seed = max_new_tokens, sampling, seed
        self.stop_text, self.slots, self.refill = stop_text, batch_size, refill
        self.loop_stop = loop_stop
        self.eos = eos_ids(model)
        self.pad = model.tokenizer.pad_token_id
        # On the bridge, the plain Hugging Face model sharing its weights decodes at Hugging
        # Face's speed with the same steering functions (see workbench.model.fast_decode).
        self.fast = fast_decode.decoder_for(model, plan.hooks())
        self.decoding = contextlib.ExitStack()
        self.hooked_rows: list[int] | None = None

    # -- forward passes ---------------------------------------------------------------

    def _new_cache(self, rows: int) -> Any:
        return kv.new_cache(self.model, rows) if self.fast is None else self.fast.new_cache()

    def _steering(self, rows: list[int]) -> Any:
        hooks = self.plan.hooks(rows)
        return self.model.hooks(fwd_hooks=hooks) if self.fast is None else self.fast.steering(hooks)

    def _logits(self, new_ids: Tensor, mask: Tensor, cache: Any) -> Tensor:
        if self.fast is None:
            return kv.next_token_logits(self.model, new_ids, mask, cache)
        return self.fast.next_token_logits(new_ids, mask, cache)

    def _unhook(self) -> None:
        self.decoding.close()
        self.hooked_rows = None

    def _prefill(self, batch: _Batch, indices: list[int]) -> None:
        """Prefill `indices` and put them after `batch`'s rows."""
        self._unhook()
        ids, mask = pad_left(self.model, [self.token_lists[i] for i in indices])
        cache = self._new_cache(len(indices))
        with self._steering(indices), position_window(0, ids.shape[1]):
            logits = self._logits(ids, mask, cache)
        if batch.cache is None:
            batch.cache, batch.mask, batch.logits = cache, mask, logits
        else:
            kv.append_rows(self.model, batch.cache, cache)
            width = max(batch.mask.shape[1], mask.shape[1])
            batch.mask = torch.cat([_pad_mask(batch.mask, width), _pad_mask(mask, width)])
            batch.logits = torch.cat([batch.logits, logits])
        batch.rows += indices
        batch.tokens += [[] for _ in indices]
        batch.alive += [True] * len(indices)
        batch.finish += [""] * len(indices)
        batch.prompt_len += [len(self.token_lists[i]) for i in indices]
        if self.seed is not None:
            device = self.model.cfg.device
            batch.generators += [
                torch.Generator(device=device).manual_seed(self.seed + i) for i in indices
            ]

    def _step(self, batch: _Batch, fed: list[int]) -> None:
        """Feed each row's newest token (`fed`); the next logits land in `batch.logits`."""
        if self.hooked_rows != batch.rows:
            self._unhook()
            self.decoding.enter_context(self._steering(batch.rows))
            self.hooked_rows = list(batch.rows)
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        ids = torch.tensor(fed, device=device)[:, None]
        # Every position from here on is generated: no column is below the window's width.
        with position_window(0, 0):
            batch.logits = self._logits(ids, batch.mask, batch.cache)

    # -- bookkeeping --------------------------------------------------------------------

    def _retire(self, batch: _Batch, runs: LoopWatch | None) -> list[tuple[int, list[int], str]]:
        """Take the ended rows out of `batch` (refill), returning them."""
        ended = [i for i, a in enumerate(batch.alive) if not a]
        if not ended:
            return []
        out = [(batch.rows[i], batch.tokens[i], batch.finish[i]) for i in ended]
        keep = [i for i, a in enumerate(batch.alive) if a]
        if not keep:
            batch.__init__()
            if runs is not None:
                runs.keep([])
            return out
        index = torch.tensor(keep, device=batch.mask.device)
        kv.keep_rows(self.model, batch.cache, index)
        batch.mask = batch.mask[index]
        for name in ("rows", "tokens", "alive", "finish", "prompt_len"):
            setattr(batch, name, [getattr(batch, name)[i] for i in keep])
        if batch.generators:
            batch.generators = [batch.generators[i] for i in keep]
        if runs is not None:
            runs.keep(keep)
        # The widest row still decoding decides how many leading columns stay.
        need = max(p + len(t) for p, t in zip(batch.prompt_len, batch.tokens, strict=True))
        # The newest token is not in the cache yet: one column fewer there.
        extra = batch.mask.shape[1] - (need - 1)
        if extra > 0:
            kv.drop_columns(self.model, batch.cache, extra)
            batch.mask = batch.mask[:, extra:]
        return out

    @torch.inference_mode()  # entered on each resume only: the caller's code is not inside
    def rows(self) -> Iterator[tuple[int, list[int], str]]:
        pending = deque(range(len(self.token_lists)))
        batch = _Batch()
        runs = None if self.loop_stop is None else LoopWatch(self.loop_stop)
        refill = self.refill
        try:
            while pending or batch.rows:
                free = self.slots - len(batch.rows)
                if pending and free > 0 and (refill or not batch.rows):
                    take = [pending.popleft() for _ in range(min(free, len(pending)))]
                    self._prefill(batch, take)
                    if runs is not None:
                        runs.extend(len(take))
                    # A cache that cannot take rows in (a sliding-window layer) decodes
                    # in static batches from here on.
                    refill = refill and kv.can_refill(self.model, batch.cache)
                logits = batch.logits
                broken = ~torch.isfinite(logits).all(-1)
                nxt = sample(logits, self.sampling, batch.generators)
                host = torch.cat([nxt, broken.long()]).tolist()
                n = len(batch.rows)
                nxt_host, broken_host = host[:n], host[n:]
                bad = [batch.rows[i] for i in range(n) if broken_host[i] and batch.alive[i]]
                if bad:
                    step = max(
                        len(batch.tokens[i]) for i in range(n) if broken_host[i] and batch.alive[i]
                    )
                    raise NumericalError(
                        f"the logits of prompts {bad} are NaN or inf at generated token {step} "
                        f"(model dtype {self.model.cfg.dtype}); refusing to return their text. "
                        "Steering or a dtype the model does not run in are the usual causes"
                    )
                self._account(batch, nxt_host, runs)
                ended: list[tuple[int, list[int], str]] = []
                if refill:
                    ended = self._retire(batch, runs)
                elif not any(batch.alive):
                    ended = list(zip(batch.rows, batch.tokens, batch.finish, strict=True))
                    batch = _Batch()
                    if runs is not None:
                        runs = LoopWatch(self.loop_stop)
                if ended:
                    # Off while the caller holds the rows; `_step` puts them back.
                    self._unhook()
                    yield from ended
                if batch.rows:
                    fed = [
                        t[-1] if a else self.pad
                        for t, a in zip(batch.tokens, batch.alive, strict=True)
                    ]
                    self._step(batch, fed)
        finally:
            self._unhook()

    def _account(self, batch: _Batch, nxt: list[int], runs: LoopWatch | None) -> None:
        """Record each live row's new token and end the rows it finishes."""
        for i, token in enumerate(nxt):
            if batch.alive[i]:
                batch.tokens[i].append(token)
        tokenizer = self.model.tokenizer

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

        for i in range(len(nxt)):
            if not batch.alive[i]:
                continue
            tokens = batch.tokens[i]
            if tokens[-1] in self.eos:
                reason = "eos"
            elif self.stop_text is not None and self.stop_text(tokens):
                reason = "stop"
            elif runs is not None and runs.looped(i, tokens, decode):
                reason = "loop"
            elif len(tokens) >= self.max_new:
                reason = "length"
            else:
                continue
            batch.alive[i] = False
            batch.finish[i] = reason


def _pad_mask(mask: Int[Tensor, "batch pos"], width: int) -> Int[Tensor, "batch width"]:
    missing = width - mask.shape[1]
    if missing == 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
