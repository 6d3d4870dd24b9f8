"""The README's demo and the notebooks run end to end (so they cannot drift from the code)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench import InstructionVector
from workbench.cli.demo import run_demo

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


def test_demo_writes_a_loadable_vector_and_its_report(tmp_path, smol, capsys):
    outputs = run_demo(tmp_path, n_pairs=16, n_prompts=2, max_new_tokens=12)
    printed = capsys.readouterr().out
    assert "UNSTEERED" in printed and "STEERED" in printed
    vec = InstructionVector.load(outputs["vector"], model=smol)
    assert vec.n_pairs == 16 and vec.selected_layer == 14
    html = outputs["report"].read_text()
    assert "one_sentence" in html and html.count('class="plotly-graph-div"') >= 5
