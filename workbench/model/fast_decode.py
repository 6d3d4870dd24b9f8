"""Steered decoding on a TransformerBridge at Hugging Face's own speed.

`TransformerBridge` replaces the Hugging Face modules inside ``model.original_model``
with bridge components: attention is re-implemented eagerly (the grouped-query KV
cache is expanded on every step) and each step makes several times more module
calls than Hugging Face. Decoding is where steered sampling spends its time, so for
the bridge `generate` runs a *plain* Hugging Face model instead:

- the same class as ``model.original_model``, built on the meta device from a copy
  of its config (SDPA attention in float32, eager in 16-bit types; see
  `_attention_order`), whose parameters and buffers *are* the bridge's
  tensors (shared, nothing copied; no extra memory);
- steering through torch forward hooks on its decoder layers, whose outputs are
  what ``blocks.{l}.hook_resid_post`` names; each hook calls the very function
  `SteeringPlan.hooks` gives TransformerLens, so the arithmetic, position windows
  and per-row terms are those of the TransformerLens path.

The equivalence is not assumed: when the plain model is built, one short left-padded
forward pass through both must agree at every layer's ``hook_resid_post`` and on
the logits, else `generate` keeps TransformerLens' path for that model. Nor is it
assumed to last: the plain model only ever computes the bridge as it was checked, so
every `generate` compares the bridge with a `BridgeState` taken then (every module's
and config's attributes one level deep: submodules, hook dicts, scalars such as an
RMSNorm's ``variance_epsilon``, parameter slots; and the classes' own attributes).
What may differ from the *reference* state, the one `load_model` takes before it
returns (so before any user code ran, and after the probe's forward pass made the
bridge install its own lazy hooks), decides what happens:

- only tensors (a new `Parameter`, ``.to()``, which also writes ``model.cfg.device``
  and ``dtype``): the plain model is rebuilt on the new tensors and probed again;
- anything else (a torch hook on any module, a swapped submodule, an edited attribute
  or config value, a patched class): `generate` takes TransformerLens' path for as
  long as the change stays (`FastDecoder.change` names it).

It also keeps that path with a TransformerLens hook or a global torch hook, for a hook
name other than ``blocks.{l}.hook_resid_post``, on `HookedTransformer`, and inside
``use_fast_decode(False)``. What users read through TransformerLens
(`run_with_cache`, hooks) is untouched: the bridge itself never runs here. A bridge
not from `load_model` gets its reference on its first `generate`, which refuses the
fast path while any hook on it comes from outside transformers and TransformerLens.

In float32, SDPA and the bridge's eager attention round differently (about 1e-6
relative), so a greedy near-tie could resolve differently on the two paths (none did
in 4096 tokens on SmolLM2); in 16-bit types the plain model's eager attention
computes what the bridge computes.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import re
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.options import check_bool

from .bridge_state import DECODER_ATTR as _ATTR
from .bridge_state import BridgeState, foreign_hooks, has_global_hooks
from .info import model_info

_RESID_POST = re.compile(r"blocks\.(\d+)\.hook_resid_post")
_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "workbench_fast_decode", default=True
)
# Largest relative difference (to the largest activation) the probe accepts between
# the bridge and the plain model: SDPA vs eager rounding is ~1e-6 in float32 and a
# few 1e-3 in 16-bit types; a wrong mapping (another layer, a missing scale) is O(1).
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-4}
_TOLERANCE_16BIT = 5e-2


@contextlib.contextmanager
def use_fast_decode(enabled: bool) -> Iterator[None]:
    """Within the block, `generate` on a bridge uses (or not) the fast decode path.

    Example:
        >>> with use_fast_decode(False):  # TransformerLens' own forward pass
        ...     out = generate(model, ["Hi"], max_new_tokens=2)
        >>> len(out)
        1
    """
    check_bool("use_fast_decode", enabled)
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _strip(name: str) -> str:
    # The bridge keeps each Hugging Face module as `_original_component` of its wrapper.
    return name.replace("._original_component", "").replace("_original_component.", "")


class FastDecoder:
    """A plain Hugging Face model sharing a `TransformerBridge`'s weights.

    Attributes:
        hf: the plain model, never registered on the bridge.
        attention: its attention implementation: ``"sdpa"`` in float32/64,
            ``"eager"`` in 16-bit types (see `_attention_order`) or where the other
            failed the probe or the class lacks SDPA.
        layers: decoder layer of each ``blocks.{l}.hook_resid_post`` name.
        ok: whether the probe found the plain model equal to the bridge.
        reason: why not, when `ok` is False.
        reference: the bridge's `BridgeState` the plain model must match (see the
            module docstring); kept across rebuilds.
        checked: the bridge's state when the probe ran, tensors included.
        state: the bridge's state when last looked at, tensors included.
        change: what in `state` differs from `reference` ("" if nothing but tensors);
            while it is set, `generate` takes TransformerLens' path.
        passes: forward passes run so far (tests check the path was taken).

    Example:
        >>> dec = FastDecoder(model)
        >>> dec.ok, sorted(dec.layers)[0]
        (True, 'blocks.0.hook_resid_post')
    """

    def __init__(self, model: Any, reference: BridgeState | None = None) -> None:
        self.passes = 0
        self.change = ""
        self.ok = False
        self.reason = ""
        self.attention = ""
        self.layers: dict[str, torch.nn.Module] = {}
        self._sources: list[tuple[dict, str, Tensor]] = []
        self._unshared: list[tuple[Tensor, int, int]] = []
        reasons = []
        for attention in _attention_order(model):
            self.reason, self.layers, self._sources, self._unshared = "", {}, [], []
            try:
                self.hf = self._build(model.original_model, attention)
                self._sources = self._share_tensors(model.original_model)
                self.layers = self._find_layers(model)
                self.ok = not self.reason and self._probe(model)
            except Exception as e:
                # An architecture whose Hugging Face class cannot be rebuilt this way is
                # not an error for `generate`: it decodes through the bridge as before.
                self.ok, self.reason = False, f"{type(e).__name__}: {e}"
            if self.ok:
                self.attention = attention
                break
            reasons.append(f"{attention} attention: {self.reason}")
        self.reason = "" if self.ok else "; ".join(reasons)
        # Taken after the probe, whose forward pass made the bridge install its lazy hooks.
        self.state = self.checked = BridgeState(model)
        self.reference = self.state.without_tensors() if reference is None else reference

    @staticmethod
    def _build(original: Any, attention: str) -> Any:
        config = copy.deepcopy(original.config)
        # TransformerLens turns these on; they would make Hugging Face install its
        # output-capturing hooks (and fall back to eager attention).
        config.output_attentions = False
        config.output_hidden_states = False
        config._attn_implementation = attention
        with torch.device("meta"):  # no memory: every tensor is replaced by the bridge's
            hf = type(original)(config)
        return hf.eval()

    def _share_tensors(self, original: Any) -> list[tuple[dict, str, Tensor]]:
        """Point every parameter and buffer of `hf` at the bridge's tensor of that name."""
        by_name: dict[str, tuple[dict, str, Tensor]] = {}
        for prefix, module in original.named_modules(remove_duplicate=False):
            for store in (module._parameters, module._buffers):
                for key, tensor in store.items():
                    if tensor is not None:
                        full = _strip(f"{prefix}.{key}" if prefix else key)
                        by_name.setdefault(full, (store, key, tensor))
        used: set[int] = set()
        sources = []
        for prefix, module in self.hf.named_modules(remove_duplicate=False):
            for store in (module._parameters, module._buffers):
                for key, tensor in list(store.items()):
                    if tensor is None:
                        continue
                    full = f"{prefix}.{key}" if prefix else key
                    if full not in by_name:
                        self.reason = f"the bridge has no tensor for {full!r}"
                        return []
                    source = by_name[full]
                    store[key] = source[2]
                    used.add(id(source[2]))
                    sources.append(source)
        for prefix, module in self.hf.named_modules():
            for key, value in vars(module).items():
                if isinstance(value, Tensor) and value.is_meta:
                    self.reason = f"{prefix}.{key} is a tensor the bridge does not hold"
                    return []
        # TransformerLens adds a zero unembedding bias that Hugging Face lacks; any
        # other parameter left over would change the result.
        for full, (_, _, tensor) in by_name.items():
            if id(tensor) not in used and isinstance(tensor, torch.nn.Parameter):
                if tensor.is_floating_point() and bool(tensor.any()):
                    self.reason = f"the bridge's parameter {full!r} has no Hugging Face twin"
                    return []
        # Tensors the plain model does not share may still be edited in place (that
        # bias filled), which bumps their version counter: `is_current` watches it.
        self._unshared = [
            (tensor, _version(tensor), tensor.data_ptr())
            for _, _, tensor in by_name.values()
            if id(tensor) not in used
        ]
        return sources

    def _find_layers(self, model: Any) -> dict[str, torch.nn.Module]:
        paths = {id(m): _strip(n) for n, m in model.original_model.named_modules()}
        layers = {}
        for layer, block in enumerate(model.blocks):
            path = paths.get(id(block))
            if path is None:
                self.reason = f"block {layer} is not inside original_model"
                return {}
            layers[f"blocks.{layer}.hook_resid_post"] = self.hf.get_submodule(path)
        return layers

    def is_current(self, model: Any) -> bool:
        """False once the bridge holds another tensor than the one shared (e.g. ``.to()``),
        or a tensor the plain model does not share was written to."""
        return all(store.get(key) is tensor for store, key, tensor in self._sources) and all(
            _version(t) == version and t.data_ptr() == ptr for t, version, ptr in self._unshared
        )

    @torch.inference_mode()
    def _probe(self, model: Any) -> bool:
        n_ctx = min(8, model.cfg.n_ctx)
        vocab = model.cfg.d_vocab
        ids = (torch.arange(2 * n_ctx).view(2, n_ctx) * 7919 + 11) % vocab
        ids = ids.to(model.cfg.device)
        mask = torch.ones_like(ids)
        mask[1, : n_ctx // 2] = 0  # one left-padded row
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        names = list(self.layers)
        bridge: dict[str, Tensor] = {}
        plain: dict[str, Tensor] = {}
        with model.hooks(fwd_hooks=[(n, _recorder(bridge, n)) for n in names]):
            logits = model(ids, attention_mask=mask, position_ids=positions)
        with self.steering([(n, _recorder(plain, n)) for n in names]):
            plain_logits = self.hf(ids, attention_mask=mask, position_ids=positions).logits
        keep = mask.bool()
        tol = _TOLERANCE.get(model.cfg.dtype, _TOLERANCE_16BIT)
        pairs = [(n, plain.get(n), bridge.get(n)) for n in names]
        pairs.append(("logits", plain_logits, logits))
        for name, ours, theirs in pairs:
            if ours is None or theirs is None or ours.shape != theirs.shape:
                self.reason = f"{name}: no matching activation"
                return False
            a, b = ours[keep].float(), theirs[keep].float()
            err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
            if not err < tol:
                self.reason = f"{name} differs from the bridge (relative error {err:.2g})"
                return False
        return True

    def new_cache(self) -> Any:
        """An empty cache laid out as Hugging Face's `generate` lays it out."""
        from transformers import DynamicCache

        return DynamicCache(config=self.hf.config)

    @contextlib.contextmanager
    def steering(self, hooks: Sequence[tuple[str, Callable[..., Tensor]]]) -> Iterator[None]:
        """TransformerLens-style ``(name, fn(x, hook))`` hooks as torch hooks on the
        decoder layers; removed when the block exits, also when it raises."""
        handles = []
        try:
            for name, fn in hooks:
                point = SimpleNamespace(name=name)
                handles.append(self.layers[name].register_forward_hook(_adapt(fn, point)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def next_token_logits(
        self,
        new_ids: Int[Tensor, "batch new"],
        full_mask: Int[Tensor, "batch total"],
        cache: Any,
    ) -> Float[Tensor, "batch d_vocab"]:
        """The last position's float32 logits; positions from the mask as in `kv.forward`."""
        return self._logits(new_ids, full_mask, cache, keep=1)[:, -1].float()

    def last_logits(
        self, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"], keep: int
    ) -> Float[Tensor, "batch keep d_vocab"]:
        """One uncached pass over `ids`; the logits of the last `keep` positions only
        (the rest are never unembedded). Positions from the mask as in `kv.forward`."""
        return self._logits(ids, mask, None, keep=keep)

    def _logits(self, new_ids: Tensor, full_mask: Tensor, cache: Any, keep: int) -> Tensor:
        self.passes += 1
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1] :]
        out = self.hf(
            input_ids=new_ids,
            attention_mask=full_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            logits_to_keep=keep,
        )
        return out.logits


def _version(tensor: Tensor) -> int:
    # Tensors made under inference_mode keep no version counter.
    return -1 if tensor.is_inference() else tensor._version


def _attention_order(model: Any) -> tuple[str, ...]:
    """Attention implementations to try for the plain model, best first.

    In float32 SDPA is where the speed is, and it rounds within ~1e-6 of the bridge
    (0 of 4096 greedy tokens differ on SmolLM2). In 16-bit types SDPA drifts several
    percent from the bridge over the layers (up to 5.7% of a position's norm on
    SmolLM2 in bfloat16) and flips greedy tokens, while Hugging Face's eager attention
    is the bridge's arithmetic (0 difference there), so exactness picks eager first.
    """
    sdpa = getattr(type(model.original_model), "_supports_sdpa", False)
    if model.cfg.dtype in _TOLERANCE:
        return ("sdpa", "eager") if sdpa else ("eager",)
    return ("eager", "sdpa") if sdpa else ("eager",)


def _recorder(store: dict[str, Tensor], name: str) -> Callable[..., None]:
    def record(x: Tensor, hook: Any) -> None:
        store[name] = x.clone()

    return record


def _adapt(fn: Callable[..., Tensor], point: Any) -> Callable[..., Any]:
    def hook(module: Any, args: Any, output: Any) -> Any:
        hidden = output if isinstance(output, Tensor) else output[0]
        new = fn(hidden, hook=point)
        if new is None:  # a TransformerLens hook may return None: no change
            return None
        return new if isinstance(output, Tensor) else (new, *output[1:])

    return hook


def prepare(model: Any) -> None:
    """Build `model`'s `FastDecoder` now, taking the bridge's state as the reference.

    `load_model` calls it before it returns the bridge, so no user code has run yet:
    every hook then on the bridge is its own (those its first forward pass installs
    included), and every later change is measured against this state.
    """
    if model_info(model).backend == "bridge":
        object.__setattr__(model, _ATTR, FastDecoder(model))  # not a submodule: invisible to TL


def decoder_for(model: Any, hooks: Sequence[tuple[str, Any]] = ()) -> FastDecoder | None:
    """The model's `FastDecoder` if `generate` may use it with `hooks`, else None.

    Built once per model and kept on it (outside its module tree). Each call checks
    the bridge against the state the plain model was probed on (about 1 ms on the
    embedded model's 2000 modules, under 1% of one decode step on CPU):
    a change of tensors rebuilds it, any other change from the reference state sends
    `generate` to TransformerLens' path while it lasts (see the module docstring).

    Example:
        >>> decoder_for(model, [("blocks.1.hook_resid_post", lambda x, hook: x)]).ok
        True
        >>> decoder_for(model, [("blocks.1.hook_resid_mid", lambda x, hook: x)]) is None
        True
    """
    if not _ENABLED.get() or model_info(model).backend != "bridge":
        return None
    if any(_RESID_POST.fullmatch(name) is None for name, _ in hooks):
        return None
    if has_global_hooks():
        return None
    decoder = getattr(model, _ATTR, None)
    if decoder is None:
        # A bridge not from `load_model`: its reference is taken now, so only hooks
        # that provably come from the libraries may be on it.
        if foreign_hooks(model):
            return None
        decoder = FastDecoder(model)
        object.__setattr__(model, _ATTR, decoder)
    elif not (decoder.state.same(model) and decoder.is_current(model)):
        now = BridgeState(model)
        changes = decoder.reference.changes(now)
        # Kept, so that the next call on the bridge unchanged answers at once.
        decoder.state, decoder.change = now, "; ".join(changes)
        if changes:
            return None
        if not (now.holds_tensors_of(decoder.checked) and decoder.is_current(model)):
            decoder = FastDecoder(model, decoder.reference)
            object.__setattr__(model, _ATTR, decoder)
        # Else the bridge is back to the state the probe saw (a hook came and went).
    if not decoder.ok or decoder.change:
        return None
    if any(name not in decoder.layers for name, _ in hooks):
        return None
    return decoder
