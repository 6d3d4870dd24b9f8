"""The Ray side of `RayExecutor`: the worker actor, the pool that keeps workers alive,
and one sweep's parts in flight. Every function gets the `ray` module from its caller;
nothing here imports Ray at import time.

A worker counts as live once its model has loaded (its ``pid`` call came back).
Parts go only to live workers, so a replacement that never comes up (its node is gone,
the cluster is full) holds no part; it is dropped after ``start_timeout`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import ExecutorError, WorkbenchError
from workbench.model.info import model_info
from workbench.vectors.checks import checks_once
from workbench.vectors.instruction_vector import InstructionVector

from .sweep_units import Decoding, Unit, scored_batches

# Parts queued per worker: one decoding, one waiting, so a worker never idles while
# the driver writes the rows of its last part.
QUEUED = 2
# How often a run looks at workers still starting while it waits for parts (seconds).
POLL_SECONDS = 5.0


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's model: `load_model`'s arguments and the
    fingerprint (of the token embedding) the weights must have. Workers load from the
    name, so edits made to the driver's model after `load_model` do not reach them."""

    name: str
    backend: str
    prompt_style: str
    dtype: str
    fingerprint: str


class SweepWorker:
    """A Ray actor's body: one model, loaded once, decoding and scoring parts of sweeps."""

    def __init__(self, spec: ModelSpec, device: str, threads: int | None) -> None:
        import torch

        from workbench.model.loading import load_model

        if threads is not None:
            torch.set_num_threads(threads)
        self.model = load_model(
            spec.name,
            backend=spec.backend,
            device=device,
            dtype=spec.dtype,
            prompt_style=spec.prompt_style,
        )
        got = model_info(self.model).fingerprint
        if got != spec.fingerprint:
            raise ExecutorError(
                f"a worker loaded {spec.name!r} with weights {got}, the driver's model has "
                f"{spec.fingerprint}: the nodes hold different checkpoints under that name"
            )

    def pid(self) -> int:
        """The worker's process id (answered once the model has loaded)."""
        return os.getpid()

    def run(
        self, vector: InstructionVector, units: Sequence[Unit], decoding: Decoding
    ) -> list[dict[str, Any]]:
        """Every unit's scored row (`workbench.evaluation.sweep_units.scored_batches`)."""
        with checks_once():
            batches = scored_batches(self.model, vector, units, decoding)
            return [row for batch in batches for row in batch]


def cause(error: BaseException) -> str:
    """One line of a Ray failure: its last non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """What Ray raises for a task whose worker, node or result is gone."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError)


class WorkerPool:
    """The workers of one model; a dead one is replaced while the budget lasts."""

    def __init__(
        self,
        ray: Any,
        spec: ModelSpec,
        make: Callable[[], Any],
        size: int,
        budget: int,
        start_timeout: float,
    ) -> None:
        self.ray, self.spec, self.make = ray, spec, make
        self.size, self.budget, self.start_timeout = size, budget, start_timeout
        self.live: dict[int, Any] = {}
        # ready ref -> (worker id, actor, when it was started)
        self.starting: dict[Any, tuple[int, Any, float]] = {}
        self.started = 0
        for _ in range(size):
            self._start()
        refs = list(self.starting)
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=start_timeout)
        try:
            for ref in done:
                self.settle(ref, strict=True)
        except Exception as e:
            self.stop()
            error = e.cause if isinstance(getattr(e, "cause", None), WorkbenchError) else e
            raise ExecutorError(
                f"the Ray workers could not load {spec.name!r}: {cause(error)}"
            ) from None
        if waiting:
            self.stop()
            raise ExecutorError(
                f"{len(waiting)} of {size} Ray workers did not start within "
                f"{start_timeout:g} s (free now: {free_resources(ray)}); raise start_timeout "
                "for a model that loads slowly, or ask for fewer workers"
            )

    def _start(self) -> None:
        actor = self.make()
        self.starting[actor.pid.remote()] = (self.started, actor, time.monotonic())
        self.started += 1

    def settle(self, ref: Any, strict: bool = False) -> None:
        """A starting worker answered: live if its model loaded, else dropped (raised
        with `strict`, at the pool's start)."""
        worker, actor, _ = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except Exception:
            if strict:
                raise
            self._kill(actor)
            self._replace()
            return
        self.live[worker] = actor

    def expire(self) -> None:
        """Drop replacements that have not come up within `start_timeout`."""
        now = time.monotonic()
        for ref, (_, actor, t0) in list(self.starting.items()):
            if now - t0 > self.start_timeout:
                del self.starting[ref]
                self._kill(actor)

    def lost(self, worker: int) -> None:
        """`worker` died: forget it and, within the budget, start its replacement."""
        if self.live.pop(worker, None) is not None:
            self._replace()

    def _replace(self) -> None:
        if self.started < self.size + self.budget:
            self._start()

    def _kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # already gone
            pass

    def stop(self) -> None:
        for actor in [*self.live.values(), *(a for _, a, _ in self.starting.values())]:
            self._kill(actor)
        self.live, self.starting = {}, {}


def free_resources(ray: Any) -> str:
    """The cluster's free CPUs and GPUs, e.g. ``'0 of 4 CPU, 0 of 0 GPU'``."""
    free, total = ray.available_resources(), ray.cluster_resources()
    return ", ".join(f"{free.get(k, 0):g} of {total.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


class PartRun:
    """One sweep's parts on a pool: largest first, `QUEUED` a live worker, lost ones again."""

    def __init__(
        self, ray: Any, parts: list[list[Unit]], pool: WorkerPool, attempts: int, *refs: Any
    ) -> None:
        self.ray, self.parts, self.pool, self.attempts, self.refs = ray, parts, pool, attempts, refs
        self.lost_errors = lost_errors(ray)
        # Largest first: most units, then most prompt text (at one budget, the longest).
        self.queue = sorted(
            range(len(parts)),
            key=lambda p: (-len(parts[p]), -sum(len(u[3].text) for u in parts[p]), p),
        )
        self.tries = [0] * len(parts)
        self.inflight: dict[Any, tuple[int, int]] = {}
        self.status = {"parts": len(parts), "done": 0, "retried": 0}

    @property
    def pending(self) -> bool:
        return bool(self.queue or self.inflight)

    def _submit(self) -> None:
        load = dict.fromkeys(self.pool.live, 0)
        for _, w in self.inflight.values():
            if w in load:
                load[w] += 1
        for w, actor in list(self.pool.live.items()):
            while self.queue and load[w] < QUEUED:
                p = self.queue.pop(0)
                self.tries[p] += 1
                self.inflight[actor.run.remote(self.refs[0], self.parts[p], self.refs[1])] = (p, w)
                load[w] += 1
        if not self.inflight and not self.pool.starting:
            raise ExecutorError(
                f"every Ray worker died ({self.pool.started} started); "
                f"{len(self.queue)} parts not run"
            )

    def next_rows(self) -> list[dict[str, Any]] | None:
        """The rows of the next part to end; None when nothing ended yet, a worker came
        up, or a part's worker died (the part is queued again)."""
        self._submit()
        waiting = [*self.inflight, *self.pool.starting]
        ready, _ = self.ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)
        self.pool.expire()
        if not ready:
            return None
        (ref,) = ready
        if ref in self.pool.starting:
            self.pool.settle(ref)
            return None
        p, w = self.inflight.pop(ref)
        try:
            rows = self.ray.get(ref)
        except self.lost_errors as e:
            self.pool.lost(w)
            if self.tries[p] >= self.attempts:
                units = self.parts[p]
                raise ExecutorError(
                    f"a part of {len(units)} units ({units[0][0]}..{units[-1][0]}) lost its "
                    f"worker on all {self.tries[p]} tries: {cause(e)}"
                ) from None
            self.status["retried"] += 1
            self.queue.insert(0, p)
            return None
        except self.ray.exceptions.RayTaskError as e:
            error = getattr(e, "cause", None)
            if isinstance(error, BaseException):
                raise error from None
            raise ExecutorError(f"a Ray worker failed: {cause(e)}") from None
        self.status["done"] += 1
        return rows
