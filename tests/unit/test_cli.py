"""The installed ``workbench`` console script, run in subprocesses on a tiny checkpoint.

Each run costs seconds of interpreter and import start-up, so every command is started
once, in the background, by the session fixture `runs` (two or three at a time: the
machine may have two cores), and the tests read the results. Commands that need a
file another command writes start when that file exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import gguf
import pytest

from tests.tiny import make_tiny_checkpoint
from workbench import InstructionVector, base_queries

SCRIPT = Path(sys.executable).parent / "workbench"
WORKBENCH = str(SCRIPT) if SCRIPT.is_file() else shutil.which("workbench")
SWEEP = ["sweep", "v.safetensors", "--queries", "2", "--modes", "add", "--strengths", "1"]
SWEEP += ["--max-new-tokens", "2", "--json"]
PROMPT_1 = base_queries("validation")[1].text
# One bad input of each kind: (arguments, text the one error line must hold).
BAD = {
    "missing_file": (["sweep", "missing.safetensors", "--out", "s.jsonl"], "'missing.safetensors'"),
    "unknown_instruction": (["extract", "lowercas", "--out", "x.safetensors"], "'lowercas'"),
    "bad_layers": (["extract", "lowercase", "--layers", "", "--out", "x.safetensors"], "''"),
    "bad_set": (["extract", "bullets", "--set", "num_bullets=abc", "--out", "x.st"], "'abc'"),
    "missing_dir": (["extract", "lowercase", "--out", "nodir/x.safetensors"], "'nodir'"),
    # demo needs the embedded model, so only its refusal runs here.
    "demo_missing_dir": (["demo", "--out", "nodir/demo"], "'nodir'"),
    # The console script never writes over its input, nor two outputs to one file.
    "gguf_over_its_vector": (
        ["export-gguf", "v.safetensors", "--out", "v.safetensors", "--force"],
        "--out 'v.safetensors' is the vector file 'v.safetensors', which this command reads",
    ),
    "two_outputs_one_file": (
        ["extract", "lowercase", "--out", "x.safetensors", "--gguf", "x.safetensors"],
        "--gguf 'x.safetensors' is the same file as --out 'x.safetensors'",
    ),
    "negative_shard": (["sweep", "v.safetensors", "--out", "s.jsonl", "--shard", "-1/2"], "I/N"),
}


class Jobs:
    """Console-script runs in the background, by name.

    The chain of runs that wait for each other's files has a thread of its own, so
    it never queues behind the independent runs, which share two more threads.
    """

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.chain = ThreadPoolExecutor(1)
        self.pool = ThreadPoolExecutor(2)
        self.futures: dict[str, Future] = {}

    def start(self, name: str, *args: str, chain: bool = False, env: dict | None = None) -> None:
        run = subprocess.run
        kw = {"cwd": self.cwd, "capture_output": True, "text": True, "timeout": 600}
        # Tiny models gain nothing from several threads, and the runs share the cores.
        kw["env"] = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        pool = self.chain if chain else self.pool
        self.futures[name] = pool.submit(run, [WORKBENCH, *args], **kw)

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        return self.futures[name].result()

    def ok(self, name: str) -> subprocess.CompletedProcess:
        """The finished run `name`, which must have succeeded without a traceback."""
        done = self[name]
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Jobs:
    d = tmp_path_factory.mktemp("cli")
    jobs = Jobs(d)
    tiny = str(tiny_dir)
    # The chain extract -> sweep (two shards, the second resumed) -> select, report.
    jobs.start(
        "extract",
        *("extract", "bullets", "--set", "num_bullets=2", "--model", tiny, "--pairs", "3"),
        *("--layers", "1-2", "--keep-pair-diffs", "--out", "v.safetensors", "--gguf", "v.gguf"),
        "--json",
        chain=True,
    )
    jobs.start(
        "evaluate",
        *("evaluate", "no_comma", "--model", tiny, "--train-pairs", "2", "--val-queries", "2"),
        *("--test-queries", "2", "--layers", "1", "--modes", "add", "--strengths", "1"),
        *("--val-tokens", "2", "--test-tokens", "2", "--out-dir", "evaluation/raw", "--json"),
    )
    jobs.start("list", "list", "--json")
    jobs.start("help", "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    jobs.start("bench", "bench", "load")
    wide = make_tiny_checkpoint(d / "wide", d_model=48)
    (d / "prompts.txt").write_text("Name a colour.\n\n  Describe rain.  \n")
    jobs.ok("extract")
    jobs.start("sweep0", *SWEEP, "--shard", "0/2", "--out", "part0.jsonl", chain=True)
    jobs.start(
        "steer",
        *("steer", "v.safetensors", "Hi there", "--prompts-file", "prompts.txt", "--layer", "1"),
        *("--mode", "add", "--strength", "2", "--max-new-tokens", "2", "--compare", "--json"),
    )
    jobs.start("wrong_model", "steer", "v.safetensors", "Hi", "--layer", "1", "--model", str(wide))
    jobs.start(
        "export", "export-gguf", "v.safetensors", "--out", "e.gguf", "--layers", "2", "--json"
    )
    for name, (args, _) in BAD.items():
        jobs.start(name, *args)
    demo = ("demo", "--model", tiny, "--pairs", "4", "--json")
    jobs.start("demo", *demo, "--layer", "1", "--out", "demo")
    jobs.start("demo_bad_layer", *demo, "--layer", "99", "--out", "demo_bad")
    jobs.ok("sweep0")
    # Shard 1 resumes a file that already holds unit 1 (as if a first run had been
    # killed after it): the rerun keeps that row and generates only units 3 and 5.
    header, first = (json.loads(line) for line in (d / "part0.jsonl").read_text().splitlines()[:2])
    held = {**first, "unit": 1, "prompt_index": 1, "prompt": PROMPT_1, "response": "HELD"}
    lines = [{**header, "shard": [1, 2]}, held]
    (d / "part1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    jobs.start("sweep1", *SWEEP, "--shard", "1/2", "--out", "part1.jsonl", chain=True)
    shutil.copy(d / "v.safetensors", d / "selected.safetensors")
    both = ["part0.jsonl", "part1.jsonl"]
    # Queued behind sweep1 on the chain's thread, so they read its finished file.
    jobs.start(
        "select",
        *("select", *both, "--vector", "selected.safetensors", "--write", "--json"),
        chain=True,
    )
    jobs.start(
        "report",
        *("report", "v.safetensors", "--sweep", *both, "--out", "r.html", "--json"),
        chain=True,
    )
    return jobs


def rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_help_lists_every_subcommand_without_loading_model_libraries(runs):
    done = runs.ok("help")
    for command in ("list", "extract", "sweep", "select", "steer", "evaluate", "report"):
        assert f"    {command} " in done.stdout
    assert "export-gguf" in done.stdout and "demo" in done.stdout
    assert "    bench " not in done.stdout


def test_bench_is_not_a_subcommand(runs):
    # The benchmarks live beside the package: `make bench` or `python -m benchmarks`.
    done = runs["bench"]
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("workbench: error: ") and "'bench'" in done.stderr
    # PYTHONPROFILEIMPORTTIME lists every imported module on stderr.
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not imported & {"transformers", "transformer_lens", "plotly", "gguf"}


def test_list_json_has_instructions_with_typed_placeholders_and_models(runs):
    listing = json.loads(runs.ok("list").stdout)
    by_name = {row["name"]: row for row in listing["instructions"]}
    assert len(by_name) == 20 and by_name["title"]["instruction_id"] == "detectable_format:title"
    (count,) = by_name["bullets"]["placeholders"]
    assert count["name"] == "num_bullets" and (count["type"], count["min"], count["max"]) == (
        "int",
        1,
        10,
    )
    assert by_name["bullets"]["kwargs"] == {"num_bullets": 3}
    assert "smollm2-135m-instruct" in [m["name"] for m in listing["models"]]


def test_extract_writes_vector_and_gguf(runs):
    done = runs.ok("extract")
    (out,) = rows(done.stdout)
    vec = InstructionVector.load(runs.cwd / out["path"])
    assert vec.kwargs == {"num_bullets": 2} == out["kwargs"]
    assert vec.layers == (1, 2) and vec.n_pairs == 3 and vec.pair_diffs is not None
    assert out["gguf"]["layers"] == [1, 2] and out["gguf"]["skipped"] == []
    assert "reading activations" in done.stderr  # the library's progress bar


def test_sweep_shards_write_jsonl_rows_and_show_progress(runs):
    parts = [rows(runs.ok(f"sweep{i}").stdout) for i in (0, 1)]
    # Baseline plus layers 1 and 2, two prompts: six units, split by unit % 2.
    assert [sorted(r["unit"] for r in part) for part in parts] == [[0, 2, 4], [1, 3, 5]]
    assert {r["layer"] for r in parts[0] + parts[1]} == {None, 1, 2}
    assert "sweep" in runs["sweep0"].stderr  # the library's progress bar


def test_sweep_rerun_resumes_from_its_file(runs):
    done = runs.ok("sweep1")
    by_unit = {r["unit"]: r for r in rows(done.stdout)}
    assert by_unit[1]["response"] == "HELD" and by_unit[3]["response"] != "HELD"
    # The bar starts at the row the file already held.
    assert "1/3" in done.stderr.replace(" ", "")
    header = json.loads((runs.cwd / "part1.jsonl").read_text().splitlines()[0])
    assert header["shard"] == [1, 2]


def test_select_merges_shards_and_writes_the_selection_into_the_vector(runs):
    out = json.loads(runs.ok("select").stdout)
    assert {e["n"] for e in out["evidence"]} == {2} and len(out["evidence"]) == 3
    assert sum(e["chosen"] for e in out["evidence"]) == 1
    vec = InstructionVector.load(runs.cwd / "selected.safetensors")
    assert dict(vec.selection) == out["selection"] and out["written"] == "selected.safetensors"


def test_steer_reads_arguments_and_a_prompts_file(runs):
    out = rows(runs.ok("steer").stdout)
    assert [r["prompt"] for r in out] == ["Hi there", "Name a colour.", "Describe rain."]
    assert all(isinstance(r["response"], str) and "unsteered" in r for r in out)
    steering = out[0]["steering"]
    assert (steering["layer"], steering["mode"], steering["positions"]) == (1, "add", "all")
    vec = InstructionVector.load(runs.cwd / "v.safetensors")
    assert steering["weight"] == pytest.approx(2 * float(vec.diff(1).norm()))


def test_evaluate_prints_the_four_setting_table_as_json(runs):
    (result,) = rows(runs.ok("evaluate").stdout)
    assert result["instruction"] == "no_comma"
    assert list(result["test"]) == [
        "no_instruction",
        "no_instruction+steer",
        "instruction",
        "instruction+steer",
    ]
    assert all(cell["n"] == 2 for cell in result["test"].values())
    for cell in result["test"].values():
        low, high = cell["ci95"]
        assert 0 <= low <= cell["accuracy"] <= high <= 1 and low < high
        assert 0 <= cell["clean_accuracy"] <= cell["accuracy"]
    assert list(result["effects"]) == ["without", "with"]
    for condition, label in [("without", "no_instruction"), ("with", "instruction")]:
        effect = result["effects"][condition]
        test = result["test"]
        gain = test[label + "+steer"]["accuracy"] - test[label]["accuracy"]
        assert effect["gain"] == pytest.approx(gain)
        assert effect["gain"] == pytest.approx((effect["fixed"] - effect["broken"]) / 2)
        assert effect["ci95"][0] <= effect["gain"] <= effect["ci95"][1]
        assert 0 <= effect["p_value"] <= 1
    # --out-dir is made when missing, with its parents.
    kept = sorted(p.name for p in (runs.cwd / "evaluation" / "raw").iterdir())
    assert "no_comma.safetensors" in kept
    assert {"no_comma.vector.safetensors", "no_comma.vector.json"} <= set(kept)
    assert {"no_comma.val.no_instruction.jsonl", "no_comma.val.instruction.jsonl"} <= set(kept)
    # A selection per condition, each with its validation evidence.
    assert list(result["selected"]) == list(result["validation"]) == ["without", "with"]


def test_report_writes_an_html_page(runs):
    out = json.loads(runs.ok("report").stdout)
    page = (runs.cwd / out["path"]).read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "plotly" in page


def test_demo_runs_on_any_model_at_the_layer_given(runs):
    paths = json.loads(runs.ok("demo").stdout.splitlines()[-1])
    vec = InstructionVector.load(runs.cwd / paths["vector"])
    assert vec.instruction_id is not None and 1 in vec.layers
    assert (runs.cwd / paths["report"]).read_text().count("plotly-graph-div") >= 3
    line = _one_error_line(runs["demo_bad_layer"], "demo")
    assert "99" in line and not (runs.cwd / "demo_bad").exists()


def test_export_gguf_writes_the_chosen_layers(runs):
    out = json.loads(runs.ok("export").stdout)
    names = [t.name for t in gguf.GGUFReader(str(runs.cwd / out["path"])).tensors]
    assert names == ["direction.2"] and out["layers"] == [2]


def _one_error_line(done: subprocess.CompletedProcess, command: str) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    # the model's "loading …" / "loaded … in Xs" progress lines come first
    lines = [
        line for line in done.stderr.splitlines() if not line.startswith(("loading ", "loaded "))
    ]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"workbench {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_on_stderr(runs, name):
    args, shown = BAD[name]
    assert shown in _one_error_line(runs[name], args[0])
    assert not (runs.cwd / "x.safetensors").exists()
    assert InstructionVector.load(runs.cwd / "v.safetensors").layers == (1, 2)


def test_a_vector_for_another_model_is_refused_in_one_line(runs):
    line = _one_error_line(runs["wrong_model"], "steer")
    assert "'v.safetensors' does not fit this model" in line and "d_model=48" in line
