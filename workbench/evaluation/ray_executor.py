"""Sweeps and the evaluation protocol on Ray: worker actors that each keep one model.

`RayExecutor` runs a sweep's work units on a Ray cluster: a local one it starts, one
``ray.init`` already connected to, or one at an address (``ray start --head`` prints
it). Each worker is an actor that loads the model once (by the name `load_model` was
given, and checks the weights' fingerprint) and keeps it across sweeps; with GPUs in
the cluster each worker takes one (``num_gpus=1``), otherwise ``cpus_per_worker``
cores. The units go out in parts of ``part_size`` (unless set: two parts per worker,
each at most four batches), the largest first, two parts queued per live worker so
that none waits on the driver.

The driver stays the only writer of the sweep's JSONL file: a part's rows are
appended when the part comes back, so a killed driver, rerun, resumes from the file
as an in-process sweep does. A part whose worker died (a killed process, a lost node)
is sent again to a live worker, up to ``attempts`` tries, and a replacement worker is
started; its rows are written once. A sweep interrupted mid-part (Ctrl-C, an error)
stops the workers, so no abandoned part holds them; the next sweep starts new ones.
Greedy decoding is batch-invariant, so the table equals the in-process sweep's row
for row, whatever the number of workers or what failed (perplexity to float32
rounding, as between shards).

Ray is imported only by this module and `workbench.evaluation.ray_workers` (the actor,
the pool, the parts in flight), when an executor first connects: the rest of the
workbench runs without it (``pip install -e ".[ray]"`` adds it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workbench.errors import ArgumentTypeError, ExecutorError, InvalidArgumentError
from workbench.model.info import recorded_info
from workbench.options import as_float, check_int
from workbench.vectors.instruction_vector import InstructionVector

from .ray_address import check_address, parse_address, same_cluster
from .ray_workers import QUEUED, ModelSpec, PartRun, SweepWorker, WorkerPool, cause, free_resources
from .sweep_units import Decoding, Unit

# How long a freshly killed executor's resources may take to come free before a
# cluster counts as busy.
FREE_WAIT_SECONDS = 10.0
# Parts of at most this many batches: few drains of a refilled batch per part, and
# little lost when a worker dies.
PART_BATCHES = 4


def model_spec(model: Any) -> ModelSpec:
    """How workers load `model`: by the name `load_model` was given (a checkpoint
    directory made absolute), its backend, prompt style and dtype, checked against its
    embedding fingerprint. A model built by hand has no such name and is refused.

    Example:
        >>> model_spec(model).backend
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
    return ModelSpec(name, info.backend, info.prompt_style, dtype, info.fingerprint)


def _part_size(units: int, batch: int, workers: int) -> int:
    """Units a part: `QUEUED` parts per worker, so that the workers end together, but
    no more than `PART_BATCHES` batches (a dead worker loses little).

    Example:
        >>> _part_size(48, 16, 2), _part_size(1000, 16, 2), _part_size(3, 16, 2)
        (12, 64, 1)
    """
    return max(1, min(PART_BATCHES * batch, math.ceil(units / (QUEUED * workers))))


class RayExecutor:
    """Run sweeps (and so the evaluation protocol) on Ray workers that keep the model.

    Args:
        address: a running cluster's address (``HOST:PORT`` as ``ray start --head``
            prints it, ``[IPv6]:PORT``, ``ray://HOST:PORT``, or ``"auto"``); None
            uses the Ray this process is connected to, or starts a local cluster.
        workers: how many worker actors (default: one per GPU when the cluster has
            GPUs, else its CPUs over ``cpus_per_worker``).
        cpus_per_worker: cores (torch threads) per CPU worker.
        gpus: whether workers take a GPU each (default: when the cluster has any, so
            a CPU driver on a GPU node gets GPU workers: the table then equals the
            in-process sweep on a GPU).
        part_size: units per part sent out (default: two parts per worker, each at
            most four of the sweep's batches).
        attempts: tries of a part whose worker died; also how many replacements each
            worker may have.
        start_timeout: seconds a worker may take to come up (schedule and load the
            model) before the start counts as failed.

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
        start_timeout: float = 600.0,
    ) -> None:
        if address is not None:
            parse_address(address)  # the form now; whether it answers, at the first sweep
        self.address = address
        self.workers = None if workers is None else check_int("workers", workers, low=1)
        self.cpus_per_worker = check_int("cpus_per_worker", cpus_per_worker, low=1)
        if gpus is not None and not isinstance(gpus, bool):
            raise ArgumentTypeError(f"gpus must be True, False or None, got {gpus!r}")
        self.gpus = gpus
        self.part_size = None if part_size is None else check_int("part_size", part_size, low=1)
        self.attempts = check_int("attempts", attempts, low=1)
        self.start_timeout = as_float("start_timeout", start_timeout)
        if self.start_timeout <= 0:
            raise InvalidArgumentError(
                f"start_timeout must be a positive number of seconds, got {start_timeout!r}"
            )
        self._ray: Any = None
        self._started = False
        self._workers: WorkerPool | None = None
        self._status = {"parts": 0, "done": 0, "retried": 0}

    # -- the cluster and the workers ---------------------------------------------------

    def _connect(self) -> Any:
        if self._ray is not None and self._ray.is_initialized():
            return self._ray
        # Never connected, or someone called ray.shutdown(): the workers are gone.
        self._ray, self._workers, self._started = None, None, False
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
            if self.address is not None and not same_cluster(self.address, current):
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
                raise ExecutorError(f"Ray could not start on {where}: {cause(e)}") from None
            self._started = True
        self._ray = ray
        return ray

    def _pool(self, model: Any) -> WorkerPool:
        """The workers for `model`, started (and the model loaded) on first use."""
        spec = model_spec(model)
        ray = self._connect()
        pool = self._workers
        if pool is not None and pool.spec == spec and (pool.live or pool.starting):
            return pool
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
        need = {"GPU": float(n)} if gpus else {"CPU": float(n * self.cpus_per_worker)}
        self._wait_free(ray, n, need)
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": self.cpus_per_worker}
        # Ray itself restarts nothing: a dead worker's parts go to the live ones at once,
        # and the pool starts its replacement.
        actor = ray.remote(max_restarts=0, max_task_retries=0, **resources)(SweepWorker)
        args = (spec, "cuda" if gpus else "cpu", None if gpus else self.cpus_per_worker)
        self._workers = WorkerPool(
            ray, spec, lambda: actor.remote(*args), n, n * self.attempts, self.start_timeout
        )
        return self._workers

    def _wait_free(self, ray: Any, n: int, need: dict[str, float]) -> None:
        """Refuse a cluster whose free resources cannot hold the workers (after a short
        wait: workers just stopped free theirs within moments)."""
        deadline = time.monotonic() + FREE_WAIT_SECONDS
        while True:
            free = ray.available_resources()
            if all(free.get(k, 0) >= v for k, v in need.items()):
                return
            if time.monotonic() > deadline:
                wanted = ", ".join(f"{v:g} {k}" for k, v in need.items())
                raise ExecutorError(
                    f"workers={n} need {wanted} free; the cluster has "
                    f"{free_resources(ray)} (another job holds the rest); ask for fewer "
                    "workers, or wait for it"
                )
            time.sleep(0.2)

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
        if self._ray.is_initialized():
            self._stop_actors()
            if self._started:
                self._ray.shutdown()
        self._ray, self._workers, self._started = None, None, False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def progress_line(self) -> str:
        """What the sweep's progress bar adds: parts done, workers alive (and starting),
        parts retried."""
        s = self._status
        pool = self._workers
        alive, n = (0, 0) if pool is None else (len(pool.live), pool.size)
        line = f"parts {s['done']}/{s['parts']}, workers {alive}/{n}"
        if pool is not None and pool.starting:
            line += f" ({len(pool.starting)} starting)"
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
        self._status = {"parts": 0, "done": 0, "retried": 0}
        if not todo:
            return
        pool = self._pool(model)
        ray = self._ray
        size = self.part_size or _part_size(len(todo), decoding.batch_size, pool.size)
        # `todo` comes sorted by prompt length, so a part's rows pad little.
        parts = [list(todo[k : k + size]) for k in range(0, len(todo), size)]
        run = PartRun(ray, parts, pool, self.attempts, ray.put(vector), ray.put(decoding))
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
            if run.inflight:
                # Interrupted: a part already running cannot be cancelled on its actor,
                # so the workers go, and the next sweep starts new ones.
                self._stop_actors()
