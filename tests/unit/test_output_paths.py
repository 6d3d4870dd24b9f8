"""Where the command line writes: never over an input, never two outputs to one file,
never over a file of another kind without --force, never over anything but a regular
file; symlinks are followed and ``~`` is expanded. Every refusal comes before any work.

Commands run in-process (`workbench.cli.console.main`) in a fresh copy of the fixture files.
A refusal that must come before the model loads is run with ``--model`` naming no
model: a check made after loading would end in "unknown model" instead.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pytest

from workbench import compute_instruction_vector, load_model, make_pairs, sweep
from workbench.cli.console import main
from workbench.files import SWEEP_FORMAT, VECTOR_FORMAT, file_kind

NO_MODEL = ["--model", "no_such_model_dir"]
PAGE = "<!DOCTYPE html><html><body>a report</body></html>\n"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A vector, another vector, a sweep of the first, a GGUF export and an HTML page."""
    d = tmp_path_factory.mktemp("output_paths")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tiny_dir))
    vec = compute_instruction_vector(model, make_pairs("lowercase", n=3))
    vec.save(d / "v.safetensors")
    compute_instruction_vector(model, make_pairs("no_comma", n=3)).save(d / "other.safetensors")
    kw = {"layers": [1], "modes": ["add"], "strengths": [1.0], "max_new_tokens": 2}
    sweep(model, vec, ["Hi"], **kw, out=d / "s.jsonl", progress=False)
    vec.to_gguf(d / "v.gguf")
    (d / "page.html").write_text(PAGE)
    (d / "p.txt").write_text("Hi\n")
    return d


@pytest.fixture
def work(sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of `sources` as the working directory, with HOME inside it."""
    for path in sources.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(d: Path) -> dict[str, bytes | str]:
    """Every entry of `d`: a file's bytes, or what else it is."""
    seen: dict[str, bytes | str] = {}
    for path in sorted(d.iterdir()):
        if path.is_symlink():
            seen[path.name] = f"link to {os.readlink(path)}"
        elif stat.S_ISFIFO(path.lstat().st_mode):
            seen[path.name] = "fifo"
        elif path.is_file():
            seen[path.name] = path.read_bytes()
        else:
            seen[path.name] = "dir"
    return seen


def refused(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The one error line of a run that must fail with status 2 (a usage error included)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    # the model's "loading …" / "loaded … in Xs" progress lines come first
    lines = [line for line in err.splitlines() if not line.startswith(("loading ", "loaded "))]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0].strip()


def refused_untouched(capsys, work: Path, argv: list[str], shown: str) -> None:
    """`argv` fails in one line holding `shown`, and the directory is as it was."""
    before = snapshot(work)
    line = refused(capsys, argv)
    assert shown in line, line
    assert snapshot(work) == before


def succeeds(capsys, argv: list[str]) -> str:
    code = main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# --- file kinds -------------------------------------------------------------------------


def test_file_kinds_are_judged_by_content_not_name(work):
    for name, kind in [
        ("v.safetensors", "vector"),
        ("s.jsonl", "sweep"),
        ("v.gguf", "gguf"),
        ("page.html", "html"),
        ("p.txt", "other"),
    ]:
        misnamed = work / f"misnamed_{kind}.bin"
        shutil.copy(work / name, misnamed)
        assert (file_kind(work / name), file_kind(misnamed)) == (kind, kind)
    (work / "empty").write_bytes(b"")
    assert file_kind(work / "empty") == "empty"
    from safetensors.torch import save_file
    from torch import zeros

    save_file({"weight": zeros(2)}, str(work / "model.safetensors"))
    assert file_kind(work / "model.safetensors") == "safetensors"


def test_format_names_mirror_the_library():
    from workbench.evaluation.sweep_files import SWEEP_FORMAT as LIBRARY_SWEEP
    from workbench.vectors.storage import FORMAT_NAME

    assert (VECTOR_FORMAT, SWEEP_FORMAT) == (FORMAT_NAME, LIBRARY_SWEEP)


# --- extract ----------------------------------------------------------------------------

EXTRACT = ["extract", "lowercase", "--pairs", "2"]


@pytest.mark.parametrize(
    ("outputs", "shown"),
    [
        (["--out", "x.st", "--gguf", "x.st"], "--gguf 'x.st' is the same file as --out 'x.st'"),
        (["--out", "s.jsonl"], "--out 's.jsonl' holds a sweep file, not a workbench vector"),
        (["--out", "page.html"], "holds an HTML page, not a workbench vector file; pass --force"),
        (["--out", "p.txt"], "holds a file of another kind"),
        (["--out", "x.st", "--gguf", "v.safetensors"], "--gguf 'v.safetensors' holds a workbench"),
        (["--out", "/dev/null"], "--out '/dev/null' is a character device"),
        (["--out", "x.st", "--gguf", ""], "argument --gguf: path '' is empty"),
        (["--out", "-"], "output to stdout is not supported"),
    ],
)
def test_extract_refuses_bad_outputs_before_the_model_loads(work, capsys, outputs, shown):
    refused_untouched(capsys, work, [*EXTRACT, *NO_MODEL, *outputs], shown)


def test_extract_refuses_a_fifo_and_a_link_to_one(work, capsys):
    fifo(work / "pipe")
    (work / "to_pipe").symlink_to("pipe")
    (work / "dangling").symlink_to("nowhere")
    for target, shown in [
        ("pipe", "is a FIFO"),
        ("to_pipe", "is a FIFO"),
        ("dangling", "does not"),
    ]:
        refused_untouched(capsys, work, [*EXTRACT, *NO_MODEL, "--out", target], shown)


def test_extract_never_writes_a_file_of_the_model_it_reads(work, capsys, tiny_dir):
    ckpt = work / "ckpt"
    shutil.copytree(tiny_dir, ckpt)
    weights = next(ckpt.glob("*.safetensors"))
    before = weights.read_bytes()
    argv = [*EXTRACT, "--model", "ckpt", "--out", f"ckpt/{weights.name}", "--force"]
    line = refused(capsys, argv)
    assert "is a file of the model 'ckpt', which this command reads" in line, line
    assert weights.read_bytes() == before


def test_extract_over_another_kind_needs_force(work, capsys, tiny_dir):
    argv = [*EXTRACT, "--model", str(tiny_dir), "--layers", "1", "--out", "s.jsonl"]
    assert "holds a sweep file" in refused(capsys, argv)
    succeeds(capsys, [*argv, "--force"])
    assert file_kind(work / "s.jsonl") == "vector"


def test_extract_through_a_symlink_writes_its_target_and_keeps_it(work, capsys, tiny_dir):
    (work / "link.safetensors").symlink_to("other.safetensors")
    argv = [*EXTRACT, "--model", str(tiny_dir), "--layers", "1", "--out", "link.safetensors"]
    succeeds(capsys, argv)
    assert os.readlink(work / "link.safetensors") == "other.safetensors"
    from workbench import InstructionVector

    assert InstructionVector.load(work / "other.safetensors").instruction_id == (
        "change_case:english_lowercase"
    )


def test_extract_expands_home_in_both_outputs(work, capsys, tiny_dir):
    argv = [*EXTRACT, "--model", str(tiny_dir), "--layers", "1"]
    out = succeeds(capsys, [*argv, "--out", "~/v.safetensors", "--gguf", "~/v.gguf", "--json"])
    home = work / "home"
    assert json.loads(out)["path"] == str(home / "v.safetensors")
    assert file_kind(home / "v.safetensors") == "vector" and file_kind(home / "v.gguf") == "gguf"
    assert not (work / "~").exists()


def test_extract_checks_the_gguf_layers_before_writing_anything(work, capsys):
    argv = [*EXTRACT, "--layers", "0", "--out", "new.st", "--gguf", "new.gguf", *NO_MODEL]
    # Before the model loads: the layer list alone rules the export out.
    shown = "--gguf: llama.cpp control vectors have no slot for layer 0, and --layers '0' holds"
    refused_untouched(capsys, work, argv, shown)


def test_extract_names_the_models_layers_not_a_vectors(work, capsys, tiny_dir):
    argv = [*EXTRACT, "--model", str(tiny_dir), "--layers", "1,99", "--out", "new.st"]
    refused_untouched(capsys, work, argv, "--layers: the model has layers 0..2, not [99]")


# --- export-gguf --------------------------------------------------------------------------


def test_export_gguf_never_writes_over_its_vector(work, capsys):
    (work / "link.gguf").symlink_to("v.safetensors")
    os.link(work / "v.safetensors", work / "hard.gguf")
    for out in ("v.safetensors", "./v.safetensors", "link.gguf", "hard.gguf"):
        argv = ["export-gguf", "v.safetensors", "--out", out, "--force"]
        refused_untouched(capsys, work, argv, "is the vector file 'v.safetensors', which this")


@pytest.mark.parametrize(
    ("out", "shown"),
    [
        ("s.jsonl", "--out 's.jsonl' holds a sweep file, not a GGUF file; pass --force"),
        ("other.safetensors", "holds a workbench vector file, not a GGUF file"),
        ("/dev/null", "is a character device, not a regular file"),
    ],
)
def test_export_gguf_refuses_other_kinds_and_devices(work, capsys, out, shown):
    refused_untouched(capsys, work, ["export-gguf", "v.safetensors", "--out", out], shown)


def test_export_gguf_with_force_replaces_another_kind(work, capsys):
    succeeds(capsys, ["export-gguf", "v.safetensors", "--out", "s.jsonl", "--force"])
    assert file_kind(work / "s.jsonl") == "gguf"


def test_export_gguf_follows_a_symlink_and_expands_home(work, capsys):
    (work / "link.gguf").symlink_to("v.gguf")
    shutil.copy(work / "v.safetensors", work / "home" / "v.safetensors")
    succeeds(capsys, ["export-gguf", "~/v.safetensors", "--out", "link.gguf", "--layers", "2"])
    assert os.readlink(work / "link.gguf") == "v.gguf"
    import gguf

    assert [t.name for t in gguf.GGUFReader(str(work / "v.gguf")).tensors] == ["direction.2"]
    succeeds(capsys, ["export-gguf", "v.safetensors", "--out", "~/e.gguf"])
    assert file_kind(work / "home" / "e.gguf") == "gguf"


def test_export_gguf_reads_a_negative_scale_as_a_value(work, capsys):
    succeeds(capsys, ["export-gguf", "v.safetensors", "--out", "e.gguf", "--scale", "-1e3"])
    assert file_kind(work / "e.gguf") == "gguf"


# --- report -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--out", "v.safetensors"], "is the vector file 'v.safetensors', which this command"),
        (["--sweep", "s.jsonl", "--out", "s.jsonl"], "is the sweep file 's.jsonl', which this"),
        (["--out", "other.safetensors"], "holds a workbench vector file, not an HTML page"),
        (["--out", "v.gguf"], "holds a GGUF file, not an HTML page; pass --force"),
        (["--sweep", "s.jsonl", "./s.jsonl", "--out", "r.html"], "is given twice"),
        (["--out", "/dev/null"], "is a character device"),
    ],
)
def test_report_refuses_bad_outputs(work, capsys, argv, shown):
    refused_untouched(capsys, work, ["report", "v.safetensors", *argv], shown)


def test_report_refuses_its_inputs_even_with_force(work, capsys):
    argv = ["report", "v.safetensors", "--out", "v.safetensors", "--force"]
    refused_untouched(capsys, work, argv, "which this command reads")


def test_report_with_force_replaces_another_kind_through_a_link_in_home(work, capsys):
    shutil.copy(work / "v.gguf", work / "home" / "old.gguf")
    (work / "home" / "r.html").symlink_to("old.gguf")
    argv = ["report", "v.safetensors", "--out", "~/r.html"]
    assert "holds a GGUF file" in refused(capsys, argv)
    succeeds(capsys, [*argv, "--force"])
    assert os.readlink(work / "home" / "r.html") == "old.gguf"
    assert file_kind(work / "home" / "old.gguf") == "html"


# --- sweep --------------------------------------------------------------------------------

SWEEP = ["sweep", "v.safetensors", "--queries", "1", "--layers", "1", "--modes", "add"]
SWEEP += ["--strengths", "1", "--max-new-tokens", "2"]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--out", "v.safetensors"], "is the vector file 'v.safetensors', which this command"),
        (["--out", "other.safetensors"], "holds a workbench vector file, not a sweep file"),
        (["--out", "page.html"], "--out 'page.html' holds an HTML page, not a sweep file"),
        (["--out", "/dev/null"], "is a character device"),
        (["--out", "s2.jsonl", "--modes", "add,add"], "--modes 'add,add' names 'add' twice"),
        (["--out", "s2.jsonl", "--strengths", "1,1.0"], "names '1.0' twice"),
        (["--out", "s2.jsonl", "--shard", "-1/2"], "--shard '-1/2' is not a shard: give I/N"),
        (["--out", "s2.jsonl", "--shard", "1/-2"], "--shard '1/-2' is not a shard"),
    ],
)
def test_sweep_refuses_bad_outputs_and_lists(work, capsys, argv, shown):
    refused_untouched(capsys, work, [*SWEEP, *NO_MODEL, *argv], shown)


def test_sweep_never_writes_over_its_prompts_file(work, capsys):
    argv = ["sweep", "v.safetensors", "--prompts-file", "p.txt", "--out", "p.txt", "--force"]
    refused_untouched(capsys, work, [*argv, *NO_MODEL], "is the prompts file 'p.txt'")


def test_sweep_refuses_a_fifo(work, capsys):
    fifo(work / "pipe.jsonl")
    refused_untouched(capsys, work, [*SWEEP, *NO_MODEL, "--out", "pipe.jsonl"], "is a FIFO")


def test_sweep_with_force_starts_another_kind_afresh(work, capsys, tiny_dir):
    argv = [*SWEEP, "--model", str(tiny_dir), "--out", "other.safetensors"]
    succeeds(capsys, [*argv, "--force"])
    assert file_kind(work / "other.safetensors") == "sweep"
    assert len((work / "other.safetensors").read_text().splitlines()) == 1 + 2  # header, 2 rows


def test_sweep_resumes_through_a_symlink_in_home(work, capsys, tiny_dir):
    argv = [*SWEEP, "--model", str(tiny_dir), "--out", "~/link.jsonl"]
    (work / "new.jsonl").write_bytes(b"")  # a link to nothing would be refused
    (work / "home" / "link.jsonl").symlink_to(work / "new.jsonl")
    succeeds(capsys, argv)
    first = (work / "new.jsonl").read_text()
    succeeds(capsys, argv)  # resumed: nothing left to add
    assert (work / "home" / "link.jsonl").is_symlink()
    assert (work / "new.jsonl").read_text() == first and len(first.splitlines()) == 3


# --- select --write -------------------------------------------------------------------------


def test_select_write_follows_a_symlink_to_the_vector(work, capsys):
    (work / "link.safetensors").symlink_to("v.safetensors")
    # The sweep used one prompt: the baseline and the one setting make 2 rows.
    succeeds(capsys, ["select", "s.jsonl", "--vector", "link.safetensors", "--write"])
    assert (work / "link.safetensors").is_symlink()
    from workbench import InstructionVector

    assert InstructionVector.load(work / "v.safetensors").selection is not None


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["s.jsonl", "s.jsonl"], "sweep file 's.jsonl' is given twice"),
        (["s.jsonl", "--vector", "s.jsonl", "--write"], "'s.jsonl' is not a readable"),
        (["s.jsonl", "--vector", "pipe", "--write"], "vector file 'pipe' is a FIFO"),
        (["s.jsonl", "--vector", "", "--write"], "argument --vector: path '' is empty"),
    ],
)
def test_select_refuses_bad_files(work, capsys, argv, shown):
    fifo(work / "pipe")
    refused_untouched(capsys, work, ["select", *argv], shown)


# --- evaluate --out-dir ---------------------------------------------------------------------

EVALUATE = ["evaluate", "no_comma", "--out-dir", "eval", *NO_MODEL]


@pytest.mark.parametrize(
    ("plant", "source", "shown"),
    [
        ("no_comma.safetensors", "s.jsonl", "holds a sweep file, not a workbench vector file"),
        (
            "no_comma.val.instruction.jsonl",
            "v.safetensors",
            "holds a workbench vector file, not a sweep file",
        ),
    ],
)
def test_evaluate_refuses_another_kind_in_its_out_dir(work, capsys, plant, source, shown):
    (work / "eval").mkdir()
    shutil.copy(work / source, work / "eval" / plant)
    before = snapshot(work / "eval")
    line = refused(capsys, EVALUATE)
    assert f"--out-dir 'eval/{plant}' {shown}; pass --force" in line, line
    assert snapshot(work / "eval") == before
    # With --force the check passes, and the run goes on to load the model.
    assert "unknown model 'no_such_model_dir'" in refused(capsys, [*EVALUATE, "--force"])
    assert snapshot(work / "eval") == before


def test_evaluate_refuses_a_fifo_and_repeated_names(work, capsys):
    (work / "eval").mkdir()
    fifo(work / "eval" / "no_comma.test.instruction.jsonl")
    assert "is a FIFO" in refused(capsys, EVALUATE)
    line = refused(capsys, ["evaluate", "title", "concise", "title", *NO_MODEL])
    assert "instruction 'title' is given twice" in line
    assert "--modes 'add,project,add' names 'add' twice" in refused(
        capsys, ["evaluate", "title", "--modes", "add,project,add", *NO_MODEL]
    )


def test_evaluate_expands_home_in_its_out_dir_and_makes_it_only_once_the_model_loads(work, capsys):
    (work / "home" / "notes").write_text("keep me")
    line = refused(capsys, ["evaluate", "title", "--out-dir", "~/notes/raw", *NO_MODEL])
    assert f"'{work / 'home' / 'notes' / 'raw'}' cannot be made: " in line, line
    # A missing folder passes the checks; the run then fails on its model, before
    # anything is made.
    line = refused(capsys, ["evaluate", "title", "--out-dir", "~/missing/raw", *NO_MODEL])
    assert "unknown model 'no_such_model_dir'" in line, line
    assert not (work / "home" / "missing").exists()


def test_evaluate_names_the_models_layers(work, capsys, tiny_dir):
    argv = ["evaluate", "title", "--layers", "7", "--model", str(tiny_dir)]
    assert "--layers: the model has layers 0..2, not [7]" in refused(capsys, argv)


# --- demo ---------------------------------------------------------------------------------


def test_demo_refuses_another_kind_or_a_fifo_in_its_out_dir(work, capsys):
    (work / "demo").mkdir()
    shutil.copy(work / "s.jsonl", work / "demo" / "one_sentence.safetensors")
    argv = ["demo", "--out", "demo", *NO_MODEL]
    assert "holds a sweep file, not a workbench vector file" in refused(capsys, argv)
    fifo(work / "demo" / "one_sentence_report.html")
    assert "one_sentence_report.html' is a FIFO" in refused(capsys, [*argv, "--force"])
    assert file_kind(work / "demo" / "one_sentence.safetensors") == "sweep"


def test_demo_library_refuses_a_fifo_before_loading_the_model(tmp_path):
    from workbench.cli.demo import run_demo
    from workbench.errors import InvalidArgumentError

    fifo(tmp_path / "one_sentence.safetensors")
    with pytest.raises(InvalidArgumentError, match="is a FIFO"):
        run_demo(tmp_path, model_name="no_such_model_dir")
    with pytest.raises(InvalidArgumentError, match="out_dir '' is empty"):
        run_demo("", model_name="no_such_model_dir")


# --- other commands -------------------------------------------------------------------------


def test_a_value_starting_with_a_dash_reaches_its_own_check(work, capsys):
    argv = ["extract", "lowercase", "--out", "x.st", "--layers", "-1", *NO_MODEL]
    assert "--layers '-1': '-1' is not a layer" in refused(capsys, argv)
    # An option where a value belongs is still a missing value.
    assert "expected one argument" in refused(capsys, ["extract", "lowercase", "--out", "--json"])


def test_prompts_may_come_from_a_pipe_but_a_vector_may_not(work, capsys, tiny_dir):
    import threading

    pipe = fifo(work / "prompts.pipe")

    def feed() -> None:
        with open(pipe, "w") as f:
            f.write("Hi\nName a colour.\n")

    writer = threading.Thread(target=feed)
    writer.start()
    argv = ["steer", "v.safetensors", "--prompts-file", "prompts.pipe", "--layer", "1"]
    try:
        out = succeeds(capsys, [*argv, "--model", str(tiny_dir), "--max-new-tokens", "1", "--json"])
    finally:
        if writer.is_alive():  # the command never read the pipe: release the writer
            with open(pipe) as f:
                f.read()
        writer.join()
    assert [json.loads(line)["prompt"] for line in out.splitlines()] == ["Hi", "Name a colour."]
    line = refused(capsys, ["steer", "prompts.pipe", "Hi", "--layer", "1"])
    assert "vector file 'prompts.pipe' is a FIFO, not a file" in line


# --- every writer ---------------------------------------------------------------------------

WRITERS = {
    "extract --out": [*EXTRACT, *NO_MODEL, "--out", "{target}"],
    "extract --gguf": [*EXTRACT, *NO_MODEL, "--out", "x.st", "--gguf", "{target}"],
    "export-gguf --out": ["export-gguf", "v.safetensors", "--out", "{target}"],
    "report --out": ["report", "v.safetensors", "--out", "{target}"],
    "sweep --out": [*SWEEP, *NO_MODEL, "--out", "{target}"],
    "select --write": ["select", "s.jsonl", "--vector", "{target}", "--write"],
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(("target", "shown"), [("pipe", "is a FIFO"), ("/dev/null", "device")])
def test_every_writer_refuses_a_special_file_with_force_too(work, capsys, writer, target, shown):
    fifo(work / "pipe")
    argv = [word.replace("{target}", target) for word in WRITERS[writer]]
    force = [] if writer == "select --write" else ["--force"]
    refused_untouched(capsys, work, [*argv, *force], shown)
    assert stat.S_ISFIFO((work / "pipe").lstat().st_mode)


def test_select_write_expands_home(work, capsys):
    shutil.copy(work / "v.safetensors", work / "home" / "v.safetensors")
    out = succeeds(
        capsys, ["select", "s.jsonl", "--vector", "~/v.safetensors", "--write", "--json"]
    )
    assert json.loads(out)["written"] == str(work / "home" / "v.safetensors")
