"""``python -m benchmarks``: what it runs and what it refuses, with no benchmark run.

Every benchmark is swapped for a recorder, so these take milliseconds; the benchmarks
themselves (minutes each) are `make bench`.
"""

from __future__ import annotations

import pytest

from benchmarks import bench
from benchmarks.__main__ import main


@pytest.fixture
def ran(monkeypatch) -> list[tuple[str, dict]]:
    """The (name, options) of each benchmark `main` starts, in order."""
    calls: list[tuple[str, dict]] = []
    for name in list(bench.BENCHMARKS):
        monkeypatch.setitem(
            bench.BENCHMARKS, name, lambda name=name, **options: calls.append((name, options))
        )
    return calls


def refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    return err.splitlines()[-1]


def test_list_names_the_quick_set_or_with_full_every_benchmark_and_runs_none(ran, capsys):
    assert main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == bench.QUICK and ran == []
    assert main(["--list", "--full"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(bench.BENCHMARKS) and ran == []


def test_options_reach_only_the_benchmarks_that_take_them(ran):
    assert main(["load", "generate", "--device", "cpu", "--repeats", "1"]) == 0
    assert ran == [("load", {}), ("generate", {"device": "cpu", "repeats": 1})]


def test_no_names_runs_the_quick_set_and_full_runs_every_benchmark_in_order(ran, capsys):
    assert main([]) == 0
    assert [name for name, _ in ran] == bench.QUICK
    assert set(bench.QUICK) < set(bench.BENCHMARKS)
    assert capsys.readouterr().out.splitlines()[-1].startswith("BENCH suite benchmarks=6 wall_s=")
    ran.clear()
    assert main(["--full"]) == 0
    assert [name for name, _ in ran] == list(bench.BENCHMARKS)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["nope"], "unknown benchmark(s) ['nope']"),
        (["load", "load"], "benchmark(s) ['load'] given twice"),
        (["load", "--device", "cpu"], "--device 'cpu': only the benchmarks"),
        (["generate", "--config", "llama-9"], "--config 'llama-9': choose one of"),
        (["generate", "--dtype", "int8"], "'int8'"),
        (["--full", "load"], "--full runs every benchmark; do not name any"),
    ],
)
def test_a_bad_request_is_refused_before_any_benchmark_runs(ran, capsys, argv, shown):
    assert shown in refused(capsys, argv)
    assert ran == []
