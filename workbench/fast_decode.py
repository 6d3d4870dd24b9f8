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
the logits, else `generate` keeps TransformerLens' path for that model. It also keeps
it when the model carries a hook of its own (TransformerLens hook points, global
torch hooks, or torch hooks added to the bridge after the plain model was built),
for a hook name other than ``blocks.{l}.hook_resid_post``, on `HookedTransformer`,
and inside ``use_fast_decode(False)``. What users read through TransformerLens
(`run_with_cache`, hooks) is untouched: the bridge itself never runs here.

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

from .errors import ArgumentTypeError
from .models import model_info

_ATTR = "_workbench_fast_decoder"
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
    if not isinstance(enabled, bool):
        raise ArgumentTypeError(f"use_fast_decode takes True or False, got {enabled!r}")
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _strip(name: str) -> str:
    # The bridge keeps each Hugging Face module as `_original_component` of its wrapper.
    return name.replace("._original_component", "").replace("_original_component.", "")


def _torch_hooks(model: Any) -> tuple[bool, set[tuple[int, str, int]]]:
    """Whether any hook point carries a torch hook, and (module id, kind, handle id)
    of every torch hook on the bridge's other modules."""
    from transformer_lens.hook_points import HookPoint

    on_points = False
    others = set()
    for module in model.modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            handles = getattr(module, kind)
            if not handles:
                continue
            if isinstance(module, HookPoint):
                on_points = True
            else:
                others.update((id(module), kind, key) for key in handles)
    return on_points, others


def _has_global_hooks() -> bool:
    from torch.nn.modules import module as nn_module

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    return any(getattr(nn_module, n, None) for n in names)


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
        passes: forward passes run so far (tests check the path was taken).

    Example:
        >>> dec = FastDecoder(model)
        >>> dec.ok, sorted(dec.layers)[0]
        (True, 'blocks.0.hook_resid_post')
    """

    def __init__(self, model: Any) -> None:
        self.passes = 0
        self.ok = False
        self.reason = ""
        self.attention = ""
        self.layers: dict[str, torch.nn.Module] = {}
        self._sources: list[tuple[dict, str, Tensor]] = []
        reasons = []
        for attention in _attention_order(model):
            self.reason, self.layers, self._sources = "", {}, []
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
        # Taken after the probe, which made the bridge install its lazy hooks.
        self._own_hooks = _torch_hooks(model)[1]

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
        """False once the bridge holds another tensor than the one shared (e.g. ``.to()``)."""
        return all(store.get(key) is tensor for store, key, tensor in self._sources)

    def user_hooks(self, model: Any) -> bool:
        """Whether hooks other than the bridge's own are on the model (the plain model
        would skip them, so they need TransformerLens' path)."""
        on_points, others = _torch_hooks(model)
        return on_points or _has_global_hooks() or not others <= self._own_hooks

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
        self.passes += 1
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1] :]
        out = self.hf(
            input_ids=new_ids,
            attention_mask=full_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()


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


def decoder_for(model: Any, hooks: Sequence[tuple[str, Any]] = ()) -> FastDecoder | None:
    """The model's `FastDecoder` if `generate` may use it with `hooks`, else None.

    Built once per model and kept on it (outside its module tree), rebuilt when the
    bridge's tensors change.

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
    decoder = getattr(model, _ATTR, None)
    if decoder is None or not decoder.is_current(model):
        if _torch_hooks(model)[0] or _has_global_hooks():
            return None  # never probe through a user's hooks
        decoder = FastDecoder(model)
        object.__setattr__(model, _ATTR, decoder)  # not a submodule: invisible to TL
    if not decoder.ok or decoder.user_hooks(model):
        return None
    if any(name not in decoder.layers for name, _ in hooks):
        return None
    return decoder
