"""Sweeps and the evaluation protocol on Ray: worker actors that each keep one model.

`RayExecutor` runs a sweep's work units on a Ray cluster: a local one it starts, one
``ray.init`` already connected to, or one at an address (``ray start --head`` prints
it). Each worker is an actor that loads the model once (by the name `load_model` was
given, and checks the weights' fingerprint) and keeps it across sweeps; with GPUs in
the cluster each worker takes one (``num_gpus=1``), otherwise ``cpus_per_worker``
cores. The units go out in parts of ``part_size`` (the sweep's batch size unless set),
the largest first, two parts queued per worker so that none waits on the driver.

The driver stays the only writer of the sweep's JSONL file: a part's rows are
appended when the part comes back, so a killed driver, rerun, resumes from the file
as an in-process sweep does. A part whose worker died (a killed process, a lost node)
is sent again to a live worker, up to ``attempts`` tries; its rows are written once.
Greedy decoding is batch-invariant, so the table equals the in-process sweep's row
for row, whatever the number of workers or what failed (perplexity to float32
rounding, as between shards).

Ray is imported here only, when an executor first connects: the rest of the
workbench runs without it (``pip install -e ".[ray]"`` adds it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import ArgumentTypeError, ExecutorError, WorkbenchError
from workbench.model.info import model_info, recorded_info
from workbench.options import check_int
from workbench.vectors.checks import checks_once
from workbench.vectors.instruction_vector import InstructionVector

from .sweep_units import Decoding, Unit, scored_batches

# Parts queued per worker: one decoding, one waiting, so a worker never idles while
# the driver writes the rows of its last part.
QUEUED = 2
# How long a TCP probe of a cluster address may take before it counts as unreachable.
PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's model: `load_model`'s arguments and the weights'
    fingerprint it must find."""

    name: str
    backend: str
    prompt_style: str
    dtype: str
    fingerprint: str

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        """The spec of a model from `load_model` (a model built by hand has none).

        Example:
            >>> ModelSpec.of(model).backend
            'bridge'
        """
        info = recorded_info(model)
        if info is None:
            raise ExecutorError(
                "a RayExecutor's workers load the model by the name load_model was given; "
                f"this {type(model).__name__} was not loaded by workbench.load_model"
            )
        name = info.name
        # A relative checkpoint directory is the driver's; workers may start elsewhere.
        if Path(name).expanduser().exists():
            name = str(Path(name).expanduser().resolve())
        dtype = str(model.cfg.dtype).removeprefix("torch.")
        return cls(name, info.backend, info.prompt_style, dtype, info.fingerprint)


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
        """The worker's process id (a test kills it by this)."""
        return os.getpid()

    def run(
        self, vector: InstructionVector, units: Sequence[Unit], decoding: Decoding
    ) -> list[dict[str, Any]]:
        """Every unit's scored row (`workbench.evaluation.sweep_units.scored_batches`)."""
        with checks_once():
            return [
                row
                for batch in scored_batches(self.model, vector, units, decoding)
                for row in batch
            ]


def check_address(address: str) -> None:
    """Refuse an address that is not HOST:PORT or that nothing listens on, in seconds
    (ray.init itself retries an unreachable address for a minute or more).

    Example:
        >>> check_address("nowhere")
        Traceback (most recent call last):
        ...
        workbench.errors.ExecutorError: Ray address 'nowhere' is not HOST:PORT (e.g. 10.0.0.5:6379, ray://10.0.0.5:10001, or auto)
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorError(
            f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, "
            "ray://10.0.0.5:10001, or auto)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except OSError as e:
        raise ExecutorError(
            f"no Ray cluster at {address!r}: {e.strerror or e}; start one with "
            "`ray start --head` and pass the address it prints, or give no address "
            "for a local cluster"
        ) from None


def _cause(error: BaseException) -> str:
    """One line of a Ray failure: its last non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class RayExecutor:
    """Run sweeps (and so the evaluation protocol) on Ray workers that keep the model.

    Args:
        address: a running cluster's address (``HOST:PORT`` as ``ray start --head``
            prints it, ``ray://HOST:PORT``, or ``"auto"``); None uses the Ray this
            process is already connected to, or starts a local cluster.
        workers: how many worker actors (default: one per GPU when the cluster has
            GPUs, else its CPUs over ``cpus_per_worker``).
        cpus_per_worker: cores (torch threads) per CPU worker.
        gpus: whether workers take a GPU each (default: when the cluster has any).
        part_size: units per part sent out (default: the sweep's batch size).
        attempts: tries of a part whose worker died before the run gives up.

    Use it as a context manager, or call `close`, to stop the workers (and a local
    cluster it started). Between sweeps of one model the workers stay loaded.

    Example:
        >>> ex = RayExecutor(workers=2)  # Ray starts at the first sweep, not here
        >>> ex.progress_line()
        'parts 0/0, workers 0/0'
        >>> with ex:  # doctest: +SKIP
        ...     table = sweep(model, vec, prompts, layers=[10, 14], executor=ex)
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cpus_per_worker: int = 1,
        gpus: bool | None = None,
        part_size: int | None = None,
        attempts: int = 3,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise ArgumentTypeError(f"address must be a str or None, got {address!r}")
        self.address = address
        self.workers = None if workers is None else check_int("workers", workers, low=1)
        self.cpus_per_worker = check_int("cpus_per_worker", cpus_per_worker, low=1)
        if gpus is not None and not isinstance(gpus, bool):
            raise ArgumentTypeError(f"gpus must be True, False or None, got {gpus!r}")
        self.gpus = gpus
        self.part_size = None if part_size is None else check_int("part_size", part_size, low=1)
        self.attempts = check_int("attempts", attempts, low=1)
        self._ray: Any = None
        self._started = False
        self._workers: _Pool | None = None
        self._status = {"parts": 0, "done": 0, "retried": 0}

    # -- the cluster and the workers ---------------------------------------------------

    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise ExecutorError(
                "RayExecutor needs Ray: pip install -e '.[ray]' (or `make test`, which installs it)"
            ) from None
        if self.address is not None:
            check_address(self.address)
        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if self.address not in (None, "auto", current):
                raise ExecutorError(
                    f"this process is already connected to the Ray cluster at {current!r}, "
                    f"not {self.address!r}; call ray.shutdown() first, or give no address"
                )
        else:
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = "a local cluster" if self.address is None else repr(self.address)
                raise ExecutorError(f"Ray could not start on {where}: {_cause(e)}") from None
            self._started = True
        self._ray = ray
        return ray

    def _pool(self, model: Any) -> _Pool:
        """The workers for `model`, started (and the model loaded) on first use."""
        spec = ModelSpec.of(model)
        if self._workers is not None and self._workers.spec == spec and self._workers.live:
            return self._workers
        ray = self._connect()
        self._stop_actors()
        total = ray.cluster_resources()
        n_gpus, n_cpus = int(total.get("GPU", 0)), int(total.get("CPU", 0))
        gpus = n_gpus > 0 if self.gpus is None else self.gpus
        if gpus and n_gpus == 0:
            raise ExecutorError("gpus=True, but the Ray cluster has no GPU")
        room = n_gpus if gpus else n_cpus // self.cpus_per_worker
        n = self.workers if self.workers is not None else max(1, room)
        if n > room:
            what = f"{n_gpus} GPU(s)" if gpus else f"{n_cpus} CPU(s)"
            each = "1 GPU" if gpus else f"{self.cpus_per_worker} CPU(s)"
            raise ExecutorError(
                f"workers={n} do not fit the cluster's {what} ({each} each); at most {room}"
            )
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": self.cpus_per_worker}
        # Ray itself restarts nothing: a dead worker's parts go to the live ones at once,
        # and the driver starts its replacement (up to `attempts` per worker).
        actor = ray.remote(max_restarts=0, max_task_retries=0, **resources)(SweepWorker)
        args = (spec, "cuda" if gpus else "cpu", None if gpus else self.cpus_per_worker)
        self._workers = _Pool(ray, spec, lambda: actor.remote(*args), n, n * self.attempts)
        return self._workers

    def _stop_actors(self) -> None:
        if self._workers is not None:
            self._workers.stop()
        self._workers = None

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (empty before the first sweep)."""
        if self._workers is None:
            return []
        return self._ray.get([a.pid.remote() for a in self._workers.live.values()])

    def close(self) -> None:
        """Stop the workers, and the local cluster if this executor started it."""
        if self._ray is None:
            return
        self._stop_actors()
        if self._started:
            self._ray.shutdown()
        self._ray, self._started = None, False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def progress_line(self) -> str:
        """What the sweep's progress bar adds: parts done, workers alive, parts retried."""
        s = self._status
        pool = self._workers
        alive, n = (0, 0) if pool is None else (len(pool.live), pool.size)
        line = f"parts {s['done']}/{s['parts']}, workers {alive}/{n}"
        return line + (f", {s['retried']} retried" if s["retried"] else "")

    def _part_done(self, done: int) -> None:
        """Called after each part's rows reached the sweep (a seam for failure tests)."""

    # -- running a sweep's units ---------------------------------------------------------

    def scored_batches(
        self,
        model: Any,
        vector: InstructionVector,
        todo: Sequence[Unit],
        decoding: Decoding,
    ) -> Iterator[list[dict[str, Any]]]:
        """Decode and score `todo` on the workers, yielding each part's rows as it ends."""
        if not todo:
            return
        pool = self._pool(model)
        ray = self._ray
        size = self.part_size or decoding.batch_size
        # `todo` comes sorted by prompt length, so a part's rows pad little.
        parts = [list(todo[k : k + size]) for k in range(0, len(todo), size)]
        run = _Run(ray, parts, pool, self.attempts, ray.put(vector), ray.put(decoding))
        self._status = run.status
        written: set[int] = set()
        try:
            while run.pending:
                rows = run.next_rows()
                if rows is None:
                    continue
                fresh = [r for r in rows if r["unit"] not in written]
                written.update(r["unit"] for r in fresh)
                yield fresh
                self._part_done(run.status["done"])
        finally:
            run.cancel()


class _Pool:
    """The live workers of one model; a dead one is replaced while the budget lasts."""

    def __init__(self, ray: Any, spec: ModelSpec, make: Any, size: int, budget: int) -> None:
        self.ray, self.spec, self.make, self.size, self.budget = ray, spec, make, size, budget
        self.live: dict[int, Any] = {}
        self.started = 0
        for _ in range(size):
            self._start()
        try:
            ray.get([a.pid.remote() for a in self.live.values()])
        except Exception as e:
            self.stop()
            cause = e.cause if isinstance(getattr(e, "cause", None), WorkbenchError) else e
            raise ExecutorError(
                f"the Ray workers could not load {spec.name!r}: {_cause(cause)}"
            ) from None

    def _start(self) -> None:
        self.live[self.started] = self.make()
        self.started += 1

    def lost(self, worker: int) -> None:
        """`worker` died: forget it and, within the budget, start its replacement."""
        if self.live.pop(worker, None) is not None and self.started < self.size + self.budget:
            self._start()

    def stop(self) -> None:
        for a in self.live.values():
            try:
                self.ray.kill(a)
            except Exception:  # already gone
                pass
        self.live = {}


class _Run:
    """One sweep's parts on a pool: largest first, `QUEUED` a worker, lost ones again."""

    def __init__(
        self, ray: Any, parts: list[list[Unit]], pool: _Pool, attempts: int, *refs: Any
    ) -> None:
        from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError

        self.lost_errors = (RayActorError, WorkerCrashedError, NodeDiedError)
        self.ray, self.parts, self.pool, self.attempts, self.refs = ray, parts, pool, attempts, refs
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
        load = {w: 0 for w in self.pool.live}
        for _, w in self.inflight.values():
            if w in load:
                load[w] += 1
        for w, actor in list(self.pool.live.items()):
            while self.queue and load[w] < QUEUED:
                p = self.queue.pop(0)
                self.tries[p] += 1
                self.inflight[actor.run.remote(self.refs[0], self.parts[p], self.refs[1])] = (p, w)
                load[w] += 1
        if not self.inflight:
            raise ExecutorError(
                f"every Ray worker died ({self.pool.started} started); "
                f"{len(self.queue)} parts not run"
            )

    def next_rows(self) -> list[dict[str, Any]] | None:
        """The rows of the next part to end, or None if its worker died (it is queued again)."""
        from ray.exceptions import RayTaskError

        self._submit()
        (ref,), _ = self.ray.wait(list(self.inflight), num_returns=1)
        p, w = self.inflight.pop(ref)
        try:
            rows = self.ray.get(ref)
        except self.lost_errors as e:
            self.pool.lost(w)
            if self.tries[p] >= self.attempts:
                units = self.parts[p]
                raise ExecutorError(
                    f"a part of {len(units)} units ({units[0][0]}..{units[-1][0]}) lost its "
                    f"worker on all {self.tries[p]} tries: {_cause(e)}"
                ) from None
            self.status["retried"] += 1
            self.queue.insert(0, p)
            return None
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise ExecutorError(f"a Ray worker failed: {_cause(e)}") from None
        self.status["done"] += 1
        return rows

    def cancel(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref)
