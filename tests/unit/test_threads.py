"""One model, several threads: steering in one thread never reaches another's passes.

TransformerLens hooks live on the model, so `generate` and `steer()` blocks hold the
model's reentrant lock; a second thread waits. Interleavings are forced with events
on a lock that reports when a second thread waits on it, never with sleeps.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from workbench import SteeringTerm, generate, steer
from workbench.model import hooks as hooks_module
from workbench.model.prompts import format_prompt, tokenize_prompts

PROMPTS = ["hello there", "tell me a story about owls"]
N_NEW = 6
# Generous deadlock guard only: every wait below is released by an event, not by time.
GUARD_S = 120


def _run_threads(*targets):
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # re-raised in the main thread below
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD_S)
    assert not any(t.is_alive() for t in threads), "a thread did not finish (deadlock?)"
    if errors:
        raise errors[0]


class _SpyLock:
    """An RLock that sets `contended` when a thread has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


@pytest.fixture
def spy_lock(tiny_model):
    """Swap the model's lock for a `_SpyLock` for one test (the model is shared)."""
    locks = hooks_module._LOCKS
    original = hooks_module.model_lock(tiny_model)
    locks[tiny_model] = spy = _SpyLock()
    try:
        yield spy
    finally:
        locks[tiny_model] = original


def _term(vec):
    return SteeringTerm(vec, layer=1, mode="add", weight=9.0)


def test_a_steered_and_an_unsteered_thread_get_their_single_thread_answers(tiny_model, tiny_vec):
    term = _term(tiny_vec)
    steered = generate(tiny_model, PROMPTS, steering=term, max_new_tokens=N_NEW)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    assert steered != plain  # otherwise the test could not fail
    got: dict[str, list] = {"steered": [], "plain": []}

    def steered_thread():
        for i in range(8):
            if i % 2:
                got["steered"].append(
                    generate(tiny_model, PROMPTS, steering=term, max_new_tokens=N_NEW)
                )
            else:  # the same steering through a steer() block
                with steer(tiny_model, term):
                    got["steered"].append(generate(tiny_model, PROMPTS, max_new_tokens=N_NEW))

    def plain_thread():
        for _ in range(8):
            got["plain"].append(generate(tiny_model, PROMPTS, max_new_tokens=N_NEW))

    _run_threads(steered_thread, plain_thread)
    assert got["steered"] == [steered] * 8
    assert got["plain"] == [plain] * 8


def test_a_steer_block_in_one_thread_does_not_steer_another_threads_generate(
    tiny_model, tiny_vec, spy_lock
):
    term = _term(tiny_vec)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    steered = generate(tiny_model, PROMPTS, steering=term, max_new_tokens=N_NEW)
    entered = threading.Event()
    got: dict[str, object] = {}

    def first():
        with steer(tiny_model, term):
            entered.set()
            # Stay in the block until the second thread's generate waits on the lock.
            got["contended"] = spy_lock.contended.wait(GUARD_S)
            got["inside"] = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)

    def second():
        entered.wait(GUARD_S)
        got["other"] = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)

    _run_threads(first, second)
    assert got["contended"], "the second thread's generate did not wait for the steer() block"
    assert got["inside"] == steered
    assert got["other"] == plain


def test_a_generate_in_one_thread_does_not_see_another_threads_steer_block(
    tiny_model, tiny_vec, spy_lock
):
    """The other order: the unsteered generate runs first; a steer() block waits for it."""
    term = _term(tiny_vec)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    ids, mask = tokenize_prompts(tiny_model, [format_prompt(tiny_model, p) for p in PROMPTS])
    with torch.inference_mode(), steer(tiny_model, term):
        steered_logits = tiny_model(ids, attention_mask=mask)
    started = threading.Event()
    got: dict[str, object] = {}

    def pause(x, hook):
        """Holds the unsteered generate mid-pass until the other thread's steer() waits."""
        if not started.is_set():
            started.set()
            got["contended"] = spy_lock.contended.wait(GUARD_S)
        return x

    def first():
        # hooks_held: the user's own hook, added under the model's lock.
        with hooks_module.hooks_held(tiny_model, [("blocks.0.hook_resid_post", pause)]):
            got["plain"] = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)

    def second():
        started.wait(GUARD_S)
        with torch.inference_mode(), steer(tiny_model, term):
            got["steered"] = tiny_model(ids, attention_mask=mask)

    _run_threads(first, second)
    assert got["contended"]
    assert got["plain"] == plain
    torch.testing.assert_close(got["steered"], steered_logits, rtol=0, atol=0)


def test_nesting_in_one_thread_still_works(tiny_model, tiny_vec):
    """generate inside steer, and steer inside steer, do not wait on their own lock."""
    one = SteeringTerm(tiny_vec, layer=1, mode="add", weight=5.0)
    two = SteeringTerm(tiny_vec, layer=2, mode="add", weight=-3.0)
    with steer(tiny_model, one), steer(tiny_model, two):
        nested = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    together = generate(tiny_model, PROMPTS, steering=[one, two], max_new_tokens=N_NEW)
    assert nested == together
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_a_copied_model_gets_its_own_lock(tiny_models):
    model = tiny_models["hooked"]
    lock = hooks_module.model_lock(model)
    twin = copy.deepcopy(model)
    assert hooks_module.model_lock(twin) is not lock
    assert hooks_module.model_lock(model) is lock
    # The lock is not stored on the model (no attribute, submodule or state).
    rlock = type(threading.RLock())
    assert not any(isinstance(value, rlock) for value in vars(model).values())
