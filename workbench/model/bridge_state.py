"""What a `TransformerBridge` is made of, to tell when the fast decode path's plain
model no longer computes what the bridge computes (see `workbench.model.fast_decode`).

A `BridgeState` records every module of the bridge and of its ``original_model``,
every config they hold, and their classes, one level deep; comparing one with the
live model costs a few list comparisons in C (about 1 ms for SmolLM2's 2000 modules).
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import Tensor

# The attribute the fast decoder is kept in, on the bridge (outside its module tree).
DECODER_ATTR = "_workbench_fast_decoder"


def has_global_hooks() -> bool:
    """Whether torch has module hooks registered for every module (global hooks)."""
    from torch.nn.modules import module as nn_module

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    return any(getattr(nn_module, n, None) for n in names)


# The hook dicts torch's Module.__call__ consults.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_GETTERS = tuple(operator.attrgetter(k) for k in _HOOK_DICTS)
# Every dict torch keeps hooks in (the others never change what forward computes).
_TORCH_DICTS = (
    *_HOOK_DICTS,
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# Entries of the bridge's own __dict__ that change with no change to what it computes:
# the fast decoder, and what TransformerLens' `generate` caches or toggles for
# calls without position ids (neither path makes one; see `kv.forward`).
_VOLATILE = frozenset(
    {DECODER_ATTR, "_derived_position_ids_ok", "_capture_hf_cache", "_last_hf_cache"}
)
# What `TransformerBridge.to()` writes on ``model.cfg`` along with the tensors it moves.
_MOVED = frozenset({"device", "dtype"})
_TENSOR_SLOTS = frozenset({"_parameters", "_buffers", "_modules"})
# Hooks these packages install on a bridge (output capturing, TransformerLens' block
# wiring) are the bridge's own; used only for bridges not from `load_model`.
_LIBRARIES = ("transformers.", "transformer_lens.")


_EMPTY: dict[type, Any] = {}


def _copy(container: Any) -> Any:
    if container:
        return container.copy()
    # Most of a module's dicts are empty: one shared empty copy per type serves them
    # all (copies are never written to).
    return _EMPTY.setdefault(type(container), container.copy())


def _freeze(obj: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    # Containers are copied one level deep, so a hook added to a module's hook dict (or
    # an entry to a config's rope dict) makes the live dict differ from the copy.
    return {
        k: _copy(v) if isinstance(v, (dict, list, set)) else v
        for k, v in vars(obj).items()
        if k not in skip
    }


def _config_types() -> tuple[type, ...]:
    from transformer_lens.config import TransformerLensConfig
    from transformers import PretrainedConfig

    return (PretrainedConfig, TransformerLensConfig)


def _same(a: Any, b: Any, depth: int = 3) -> bool:
    """Whether two attribute values are the same for computing: one object, or equal
    non-tensor values (containers element by element)."""
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor) or type(a) is not type(b) or not depth:
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], depth - 1) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, depth - 1) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # an array or an object whose == does not give a bool
        return False


def _filled(slots: dict[str, Any]) -> dict[str, bool]:
    # A slot's tensor (or module) or, in a state `without_tensors`, whether it had one.
    return {k: v if isinstance(v, bool) else v is not None for k, v in slots.items()}


class BridgeState:
    """What a `TransformerBridge` is made of, apart from its tensors' values.

    Every module of the bridge and of ``model.original_model`` and every config they
    hold (TransformerLens' and Hugging Face's, sub-configs included), each by path
    (``blocks.1.ln2``, ``model.cfg``): its type and its attributes one level deep
    (hook dicts, submodules, parameter slots, scalars); and the attributes of their
    classes. `same` tells at C speed whether the live model still matches;
    `changes` lists what differs between two states beyond the tensors.

    Example:
        >>> state = BridgeState(model)
        >>> handle = model.blocks[1].register_forward_hook(lambda m, a, out: None)
        >>> state.same(model), state.changes(BridgeState(model))
        (False, ['blocks.1._forward_hooks changed'])
        >>> handle.remove()
    """

    def __init__(self, model: Any) -> None:
        from transformer_lens.hook_points import HookPoint

        # Breadth first from both roots (original_model is not a submodule of the
        # bridge; most of its tree is), so each module gets its shortest path:
        # blocks.1.attn, not blocks.1._original_component.self_attn (the same module).
        found: dict[int, tuple[str, Any]] = {}
        queue = [("model", model), ("original_model", model.original_model)]
        for path, obj in queue:
            if id(obj) in found:
                continue
            found[id(obj)] = (path, obj)
            prefix = "" if obj is model else f"{path}."
            for name, child in obj._modules.items():
                if child is not None and id(child) not in found:
                    queue.append((prefix + name, child))
        # Then every config they hold, named after its first holder (``model.cfg``).
        configs = _config_types()
        pending = list(found.values())
        for owner, obj in pending:  # grows as configs are found: sub-configs too
            for key, value in vars(obj).items():
                if isinstance(value, configs) and id(value) not in found:
                    found[id(value)] = (f"{owner}.{key}", value)
                    pending.append(found[id(value)])
        self.root = model
        self.names = [name for name, _ in found.values()]
        self.objects = [obj for _, obj in found.values()]
        self.types = list(map(type, self.objects))
        self.frozen = [_freeze(o, _VOLATILE if o is model else frozenset()) for o in self.objects]
        skip = (torch.nn.Module, object)
        self.classes = list(
            dict.fromkeys(c for t in self.types for c in t.__mro__ if c not in skip)
        )
        self.class_dicts = [dict(vars(c)) for c in self.classes]
        self._index_for_same(model, HookPoint)

    def _index_for_same(self, model: Any, hook_point: type) -> None:
        # `same` runs on every generate, so it compares lists in C: the modules' own
        # dicts against copies in which torch's hook dicts are the live objects (an
        # identity check); the hook dicts' contents are compared apart, and most are
        # empty. Most modules are TransformerLens hook points without hooks, whose
        # forward is the identity: for those, no hook and no new attribute is what counts.
        bare, full, self._full_fast, self._empty, self._hooked = [], [], [], [], []
        for obj, frozen in zip(self.objects[1:], self.frozen[1:], strict=True):
            attrs = vars(obj)
            hooks = [attrs[k] for k in _HOOK_DICTS if k in attrs]
            if type(obj) is hook_point and not any(hooks):
                bare.append(obj)
                self._empty += hooks
                continue
            full.append(obj)
            live = {k: attrs[k] for k in _TORCH_DICTS if k in attrs}
            self._full_fast.append({**frozen, **live})
            for hook in hooks:
                if hook:
                    self._hooked.append((hook, hook.copy()))
                else:
                    self._empty.append(hook)
        self._bare, self._full = bare, full
        self._bare_sizes = list(map(len, map(vars, bare)))
        self._hooked_live = [live for live, _ in self._hooked]
        self._hooked_copies = [copy for _, copy in self._hooked]

    def same(self, model: Any) -> bool:
        """Whether `model` is still in this state, tensors included (the same objects)."""
        if model is not self.root:
            return False
        try:
            return (
                list(map(type, self.objects)) == self.types
                and not any(self._empty)
                and self._hooked_live == self._hooked_copies
                and list(map(len, map(vars, self._bare))) == self._bare_sizes
                and list(map(vars, self._full)) == self._full_fast
                and {k: v for k, v in vars(model).items() if k not in _VOLATILE} == self.frozen[0]
                and list(map(vars, self.classes)) == self.class_dicts
            )
        except Exception:  # a replaced tensor attribute compares elementwise
            return False

    def changes(self, now: BridgeState) -> list[str]:
        """What differs in `now` from this state, beyond which tensors fill the
        parameter and buffer slots and ``model.cfg``'s device and dtype (what
        ``.to()`` changes); empty when nothing else does."""
        out = []
        later = {n: (t, f) for n, t, f in zip(now.names, now.types, now.frozen, strict=True)}
        for name, kind, before in zip(self.names, self.types, self.frozen, strict=True):
            if name not in later:
                out.append(f"{name} was removed")
                continue
            kind_now, after = later.pop(name)
            if kind_now is not kind:
                out.append(f"{name} is a {kind_now.__name__}, was a {kind.__name__}")
                continue
            for key in sorted(before.keys() | after.keys()):
                if key not in before or key not in after:
                    out.append(f"{name}.{key} was {'added' if key in after else 'removed'}")
                elif key in _TENSOR_SLOTS:
                    # Submodules are compared under their own names; tensors are shared.
                    if _filled(before[key]) != _filled(after[key]):
                        out.append(f"{name}.{key} changed")
                elif not (name == "model.cfg" and key in _MOVED):
                    if not _same(before[key], after[key]):
                        out.append(f"{name}.{key} changed")
        out += [f"{name} was added" for name in later]
        classes = dict(zip(now.classes, now.class_dicts, strict=True))
        for cls, before in zip(self.classes, self.class_dicts, strict=True):
            after = classes.get(cls)
            if after is not None and not _same(before, after, depth=1):
                out.append(f"class {cls.__qualname__} changed")
        return out

    def without_tensors(self) -> BridgeState:
        """This state for `changes` only, holding no tensor: as a lasting reference it
        would otherwise keep every replaced parameter alive."""
        out = copy.copy(self)
        out.frozen = [
            {
                k: {n: t is not None for n, t in v.items()} if k in _TENSOR_SLOTS else v
                for k, v in frozen.items()
            }
            for frozen in self.frozen
        ]
        out.root, out.objects, out._bare, out._full, out._full_fast = None, [], [], [], []
        out._empty, out._hooked, out._hooked_live, out._hooked_copies = [], [], [], []
        return out

    def holds_tensors_of(self, other: BridgeState) -> bool:
        """Whether every parameter and buffer slot holds the same tensor object in both."""
        slots = dict(zip(other.names, other.frozen, strict=True))
        for name, frozen in zip(self.names, self.frozen, strict=True):
            theirs = slots.get(name)
            for key in ("_parameters", "_buffers"):
                mine = frozen.get(key)
                if mine is None:
                    continue
                if theirs is None or mine.keys() != theirs.get(key, {}).keys():
                    return False
                if any(t is not theirs[key][k] for k, t in mine.items()):
                    return False
        return True


def foreign_hooks(model: Any) -> bool:
    """Whether a hook not installed by transformers or TransformerLens is on `model`
    (any hook on a hook point counts: TransformerLens adds those for users)."""
    from transformer_lens.hook_points import HookPoint

    if has_global_hooks():
        return True
    for module in (*model.modules(), model.original_model):
        for get in _HOOK_GETTERS:
            for fn in get(module).values():
                origin = getattr(fn, "__module__", None) or ""
                if isinstance(module, HookPoint) or not origin.startswith(_LIBRARIES):
                    return True
    return False
