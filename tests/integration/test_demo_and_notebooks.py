"""The README's demo and the notebooks run end to end (so they cannot drift from the code)."""

from __future__ import annotations

import ast
import json
import shlex
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from workbench import InstructionVector
from workbench.cli.console import main
from workbench.cli.demo import run_demo
from workbench.evaluation.scoring import score

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs_and_switch_size_in_one_place():
    """pytest --nbmake runs them; here: stored clean, and one parameter sets their size."""
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart",
        "02_layer_sweeps",
        "03_vector_geometry",
        "04_composition_and_transfer",
    ]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), path.name
        params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1 and 'os.environ.get("WORKBENCH_FULL"' in "".join(
            params[0]["source"]
        ), path.name
        # Thin: no library code (function or class definitions) lives in a notebook.
        assert not any(
            line.startswith(("def ", "class "))
            for c in code
            for line in "".join(c["source"]).splitlines()
        ), path.name


def test_notebooks_run_through_the_registered_workbench_kernel():
    """nbmake starts each notebook's own kernel: a missing or broken `workbench` kernel
    (registered by `make install`) fails the notebook runs, and this says why."""
    for path in NOTEBOOKS:
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec["name"] == "workbench", path.name
    kernel = KernelSpecManager().get_kernel_spec("workbench")
    assert Path(kernel.argv[0]).absolute() == Path(sys.executable).absolute()


def test_demo_chooses_on_validation_scores_its_answers_and_saves_what_it_steered(
    tmp_path, smol, capsys
):
    demo = run_demo(tmp_path, n_pairs=16, n_val=3, n_prompts=2, max_new_tokens=64)
    printed = capsys.readouterr().out
    assert "<- chosen" in printed and "UNSTEERED" in printed
    assert "one sentence and not degenerate: unsteered" in printed
    vec = InstructionVector.load(demo.vector, model=smol)
    assert vec.n_pairs == 16
    # The file holds the whole selection, chosen among the demo's grid.
    chosen = vec.selection
    assert chosen["n"] == 3 and chosen["objective"] == "clean_accuracy"
    assert (chosen["layer"], chosen["mode"]) in {(layer, "add") for layer in (10, 14, 18)}
    html = demo.report.read_text()
    assert "Answers, unsteered and steered" in html and "validation queries" in html
    assert html.count('class="plotly-graph-div"') >= 5

    # `workbench steer FILE PROMPT` reproduces the demo's steered answer.
    first = demo.answers.iloc[0]
    assert f'workbench steer {demo.vector} "{first.prompt}"' in printed
    assert main(["steer", str(demo.vector), first.prompt, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["response"] == first.steered


def test_the_readme_cli_tour_runs_as_written_and_ends_in_an_answer_that_follows(
    tmp_path, monkeypatch, capsys
):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## On the command line", 1)[1].split("\n## ", 1)[0]
    tour = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in tour.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == [
        "list", "extract", "sweep", "select", "steer", "report",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    printed = {}
    for line in lines:
        argv = shlex.split(line)[1:]
        assert main([*argv, "--quiet"]) == 0, line
        printed[argv[0]] = capsys.readouterr().out
    assert "selected: L" in printed["select"]  # a steered setting, not the baseline
    steered = next(s for s in printed["steer"].splitlines() if s.startswith("  steered:"))
    answer = ast.literal_eval(steered.split(":", 1)[1].strip())
    one_sentence = {"relation": "less than", "num_sentences": 2}
    assert score(answer, "length_constraints:number_sentences", one_sentence, loose=True), answer
    assert (tmp_path / "one_sentence.html").stat().st_size > 0
