"""Sweeps on a local Ray cluster: the in-process table, whatever the workers or failures.

The cluster is started once for the module with 4 logical CPUs (two workers for these
tests, two for the killed driver's own executor) on however many cores there are.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import workbench.evaluation.ray_executor as ray_executor
from tests.tables import assert_same_sweep
from workbench import compute_instruction_vector, make_pairs
from workbench.cli.console import main
from workbench.errors import ArgumentTypeError, ExecutorError, InvalidArgumentError
from workbench.evaluation.ray_address import parse_address, same_cluster
from workbench.evaluation.ray_executor import RayExecutor, model_spec
from workbench.evaluation.sweep_files import merge_sweeps
from workbench.evaluation.sweeps import sweep

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["hello there", "tell me about owls", "why?", "a longer prompt than the rest by far"]
KW = {"layers": [1, 2], "modes": ["add", "project"], "strengths": [0.5, 1.0]}
KW = {**KW, "max_new_tokens": 12, "progress": False, "batch_size": 3}


@pytest.fixture(scope="module")
def cluster():
    try:
        import ray
    except ImportError as e:
        if os.environ.get("CI"):
            raise  # CI installs the ray extra: there it must start
        pytest.skip(f"Ray is not installed ({e}); `make test` installs the ray extra")
    # Ray prints its own start-up lines; quiet, and with no dashboard to serve.
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as e:
        if os.environ.get("CI"):
            raise  # there it must start
        pytest.skip(f"Ray cannot start here: {type(e).__name__}: {e}")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["bridge"]


@pytest.fixture(scope="module")
def lower(model):
    return compute_instruction_vector(model, make_pairs("lowercase", n=4))


@pytest.fixture(scope="module")
def full(model, lower):
    return sweep(model, lower, PROMPTS, **KW)


def _units(path):
    """The unit of every row line of a sweep file, in file order (the header skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [json.loads(line)["unit"] for line in lines]


def test_two_workers_give_the_in_process_table(cluster, model, lower, full):
    with RayExecutor(workers=2) as ex:
        table = sweep(model, lower, PROMPTS, **KW, executor=ex)
        # 36 units, two parts a worker: 9 units each (under the cap of 4 batches of 3).
        assert ex.progress_line() == "parts 4/4, workers 2/2"
        # The workers stay loaded between sweeps of one model.
        pids = ex.worker_pids()
        again = sweep(model, lower, PROMPTS[:1], **KW, executor=ex)
        assert ex.worker_pids() == pids
    assert_same_sweep(table, full)
    assert_same_sweep(again, sweep(model, lower, PROMPTS[:1], **KW))


class KillsAWorker(RayExecutor):
    """Kills its first worker's process (SIGKILL) once the first part's rows are in."""

    killed: int | None = None

    def _part_done(self, done: int) -> None:
        if done == 1:
            self.killed = self.worker_pids()[0]
            os.kill(self.killed, signal.SIGKILL)


def test_a_killed_worker_loses_nothing_and_writes_nothing_twice(
    cluster, model, lower, full, tmp_path
):
    out = tmp_path / "s.jsonl"
    with KillsAWorker(workers=2, part_size=2) as ex:
        table = sweep(model, lower, PROMPTS, **KW, out=out, executor=ex)
        line = ex.progress_line()
        # The parts it held went to the other worker, and a replacement was started
        # (live once its model has loaded, which may come after the last part).
        assert re.search(r"retried", line) and re.search(
            r"workers (2/2|1/2 \(1 starting\))", line
        ), line
        assert ex.killed not in ex.worker_pids()
    assert_same_sweep(table, full)
    units = _units(out)
    assert sorted(units) == list(range(len(full)))


class KillsAWorkerAndFillsItsPlace(RayExecutor):
    """As `KillsAWorker`, then takes every free CPU, as if the worker's node were lost."""

    blockers: list = []

    def _part_done(self, done: int) -> None:
        if done == 1:
            import ray

            os.kill(self.worker_pids()[0], signal.SIGKILL)
            free = int(ray.cluster_resources()["CPU"]) - 1  # the other worker holds one
            blocker = ray.remote(num_cpus=1)(Blocker)
            self.blockers = [blocker.remote() for _ in range(free)]
            ray.get([b.ping.remote() for b in self.blockers])  # placed: nothing is left


class Blocker:
    def ping(self) -> int:
        return 1


def test_a_replacement_that_cannot_start_holds_no_part(cluster, model, lower, full):
    import ray

    ex = KillsAWorkerAndFillsItsPlace(workers=2, part_size=2)
    try:
        table = sweep(model, lower, PROMPTS, **KW, executor=ex)
        # The sweep ended on the one live worker; its replacement is still waiting.
        assert ex.progress_line().startswith("parts 18/18, workers 1/2 (1 starting)")
    finally:
        ex.close()
        for b in ex.blockers:
            ray.kill(b)
    assert_same_sweep(table, full)


def test_a_busy_cluster_is_refused_saying_what_is_free(cluster, model, lower, monkeypatch):
    monkeypatch.setattr(ray_executor, "FREE_WAIT_SECONDS", 1.0)
    with RayExecutor(workers=4) as holder:
        sweep(model, lower, PROMPTS[:1], **KW, executor=holder)
        with pytest.raises(
            ExecutorError, match=r"workers=1 need 1 CPU free; the cluster has 0 of 4 CPU"
        ):
            sweep(model, lower, PROMPTS[:1], **KW, executor=RayExecutor(workers=1))


DRIVER = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    from workbench import compute_instruction_vector, load_model, make_pairs
    from workbench.evaluation.ray_executor import RayExecutor
    from workbench.evaluation.sweeps import sweep

    class DiesAfterTwoParts(RayExecutor):
        def _part_done(self, done):
            if done == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    model = load_model(sys.argv[1])
    vec = compute_instruction_vector(model, make_pairs("lowercase", n=4))
    with DiesAfterTwoParts(sys.argv[3], workers=2, part_size=3) as ex:
        sweep(model, vec, {prompts!r}, **{kw!r}, out=sys.argv[2], executor=ex)
    """
).format(prompts=PROMPTS, kw=KW)


def test_a_killed_driver_resumes_from_its_file(cluster, tiny_dir, model, lower, full, tmp_path):
    out = tmp_path / "s.jsonl"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_dir), str(out), cluster],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(_units(out)) == 2 * KW["batch_size"]  # two parts written, then killed
    with RayExecutor(workers=2, part_size=3) as ex:
        table = sweep(model, lower, PROMPTS, **KW, out=out, executor=ex)
        # Only what the file lacked went out.
        remaining = len(full) - 2 * KW["batch_size"]
        assert ex.progress_line().startswith(f"parts {-(-remaining // KW['batch_size'])}/")
    assert_same_sweep(table, full)
    assert sorted(_units(out)) == list(range(len(full)))


def test_a_bad_address_is_one_line(cluster, model, lower):
    with pytest.raises(ExecutorError, match=r"^no Ray cluster at '127\.0\.0\.1:1': ") as e:
        sweep(model, lower, PROMPTS, **KW, executor=RayExecutor("127.0.0.1:1"))
    assert "\n" not in str(e.value)
    # A malformed one is refused before anything connects.
    with pytest.raises(InvalidArgumentError, match="'nowhere' is not HOST:PORT"):
        RayExecutor("nowhere")


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head:10001", ("head", 10001)),
        ("[fd00::5]:6379", ("fd00::5", 6379)),
        ("auto", None),
    ],
)
def test_addresses_are_host_and_port(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize(
    "address",
    ["", "host:", ":6379", "ray://", "h:0", "h:65536", "h:" + "9" * 30, "h:６３７９", "http://h:1"],
)
def test_a_malformed_address_is_refused_naming_it(address):
    with pytest.raises(
        InvalidArgumentError, match=f"Ray address {re.escape(repr(address))} is not HOST:PORT"
    ):
        parse_address(address)


def test_one_cluster_under_two_spellings_is_the_same():
    assert same_cluster("localhost:6379", "127.0.0.1:6379")
    assert same_cluster("auto", "10.0.0.5:6379")
    assert not same_cluster("127.0.0.1:6380", "127.0.0.1:6379")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, InvalidArgumentError, "workers"),
        ({"cpus_per_worker": 0}, InvalidArgumentError, "cpus_per_worker"),
        ({"part_size": 1.5}, ArgumentTypeError, "part_size"),
        ({"address": 6379}, ArgumentTypeError, "address must be a str"),
        ({"gpus": "yes"}, ArgumentTypeError, "gpus must be"),
        ({"start_timeout": 0}, InvalidArgumentError, "start_timeout must be a positive"),
        ({"start_timeout": True}, ArgumentTypeError, "start_timeout must be a real number"),
        (
            {"start_timeout": float("inf")},
            InvalidArgumentError,
            "start_timeout inf is not a finite",
        ),
        ({"attempts": 0}, InvalidArgumentError, "attempts"),
    ],
)
def test_bad_executor_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        RayExecutor(**kwargs)


def test_workers_that_do_not_fit_or_a_hand_built_model_are_refused(cluster, model, lower):
    with pytest.raises(ExecutorError, match=r"workers=9 do not fit the cluster's 4 CPU\(s\)"):
        sweep(model, lower, PROMPTS, **KW, executor=RayExecutor(workers=9))
    with pytest.raises(ExecutorError, match="the Ray cluster has no GPU"):
        sweep(model, lower, PROMPTS, **KW, executor=RayExecutor(gpus=True))
    with pytest.raises(ArgumentTypeError, match="executor must be a RayExecutor"):
        sweep(model, lower, PROMPTS, **KW, executor="ray")
    # Workers load the model by its load_model name; a model built by hand has none.
    with pytest.raises(ExecutorError, match="was not loaded by workbench.load_model"):
        model_spec(object())


def test_the_command_line_sweeps_on_ray(cluster, tiny_dir, model, lower, tmp_path, capsys):
    vec_file = tmp_path / "v.safetensors"
    lower.save(vec_file)
    args = ["sweep", str(vec_file), "--model", str(tiny_dir), "--layers", "1", "--modes", "add"]
    args += ["--strengths", "1", "--max-new-tokens", "4", "--queries", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "here.jsonl")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray.jsonl"), "--ray", "--ray-workers", "2"]) == 0
    capsys.readouterr()
    assert_same_sweep(
        merge_sweeps([tmp_path / "ray.jsonl"]), merge_sweeps([tmp_path / "here.jsonl"])
    )
    assert main([*args, "--out", str(tmp_path / "bad.jsonl"), "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no Ray cluster at '127.0.0.1:1'" in err, err
    assert main([*args, "--out", str(tmp_path / "w.jsonl"), "--ray-workers", "2"]) == 2
    assert "give --ray too" in capsys.readouterr().err


def test_the_protocol_runs_on_ray(cluster, model):
    from workbench.evaluation.protocol import ProtocolConfig, evaluate_instruction

    config = ProtocolConfig(
        layers=[1],
        modes=["add"],
        strengths=[1],
        train_pairs=2,
        val_queries=2,
        test_queries=2,
        val_tokens=3,
        val_tokens_long=3,
        test_tokens=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        here = evaluate_instruction(model, "no_comma", config)
        with RayExecutor(workers=2) as ex:
            there = evaluate_instruction(model, "no_comma", config, executor=ex)
    assert there.test == here.test and there.effects == here.effects
    assert {c: s.record() for c, s in there.selections.items()} == {
        c: s.record() for c, s in here.selections.items()
    }
    json.dumps({c: s.record() for c, s in there.selections.items()})


def test_workers_that_cannot_load_the_model_fail_in_one_line(cluster, tiny_dir, tmp_path):
    import shutil

    from workbench import load_model

    copy = shutil.copytree(tiny_dir, tmp_path / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gone = load_model(str(copy))
    vec = compute_instruction_vector(gone, make_pairs("lowercase", n=2))
    shutil.rmtree(copy)  # the workers load by name: now there is nothing there
    with pytest.raises(ExecutorError, match=r"^the Ray workers could not load '.*ckpt': ") as e:
        sweep(gone, vec, PROMPTS[:1], **KW, executor=RayExecutor(workers=2))
    assert "\n" not in str(e.value)


def test_the_command_line_evaluates_on_ray(cluster, tiny_dir, capsys):
    args = ["evaluate", "no_comma", "--model", str(tiny_dir), "--train-pairs", "2"]
    args += ["--val-queries", "2", "--test-queries", "2", "--layers", "1", "--modes", "add"]
    args += ["--strengths", "1", "--val-tokens", "3", "--test-tokens", "3", "--json", "--quiet"]
    results = []
    for extra in ([], ["--ray", "--ray-workers", "2"]):
        assert main([*args, *extra]) == 0
        (line,) = capsys.readouterr().out.splitlines()
        results.append(json.loads(line))
    assert results[0] == results[1]
    assert main([*args, "--ray-workers", "2"]) == 2
    assert "--ray-workers 2 sets the Ray workers; give --ray too" in capsys.readouterr().err


def test_another_cluster_than_the_one_connected_to_is_refused(cluster, model, lower):
    import socket

    with socket.socket() as other:  # something listening, as a second cluster would
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(ExecutorError, match="already connected to the Ray cluster at .*, not"):
            sweep(model, lower, PROMPTS[:1], **KW, executor=RayExecutor(address))
    # The one it is connected to, under another spelling, is the same cluster.
    port = cluster.rpartition(":")[2]
    with RayExecutor(f"localhost:{port}", workers=1) as ex:
        sweep(model, lower, PROMPTS[:1], **KW, executor=ex)
        assert ex.progress_line().endswith("workers 1/1")


def test_an_interrupted_sweep_stops_its_workers(cluster, model, lower):
    from workbench.evaluation.quality import QualityThresholds
    from workbench.evaluation.sweep_units import Decoding
    from workbench.evaluation.sweeps import SweepPrompt, settings_grid

    grid = settings_grid(lower, [1, 2], ["add"], [0.5, 1.0])
    prompt = SweepPrompt(PROMPTS[0], lower.instruction_id, dict(lower.kwargs))
    todo = [(u, s, 0, prompt) for u, s in enumerate(grid)]
    decoding = Decoding(12, 1, QualityThresholds(), True, None, None)
    with RayExecutor(workers=2, part_size=1) as ex:
        batches = ex.scored_batches(model, lower, todo, decoding)
        assert len(next(batches)) == 1
        assert len(ex.worker_pids()) == 2
        batches.close()  # what Ctrl-C in the sweep's loop does to it
        # Parts still on the workers cannot be cancelled there: the workers went.
        assert ex.worker_pids() == [] and ex.progress_line().endswith("workers 0/0")
