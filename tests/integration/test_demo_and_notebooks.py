"""The README's demo and the notebooks run end to end (so they cannot drift from the code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench import InstructionVector
from workbench.demo import run_demo

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_demo_writes_a_loadable_vector_and_its_report(tmp_path, smol, capsys):
    outputs = run_demo(tmp_path, n_pairs=16, n_prompts=2, max_new_tokens=12)
    printed = capsys.readouterr().out
    assert "UNSTEERED" in printed and "STEERED" in printed
    vec = InstructionVector.load(outputs["vector"], model=smol)
    assert vec.n_pairs == 16 and vec.selected_layer == 14
    html = outputs["report"].read_text()
    assert "one_sentence" in html and html.count('class="plotly-graph-div"') >= 5


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(notebook, smol):
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert "vec" in namespace
