"""The report page: one self-contained HTML file with a section per figure, and a reason
for each one left out. How it renders in a browser: test_figures_in_browser.py."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from analyses.report import report, report_sections
from workbench import compute_instruction_vector, make_pairs, sweep


@pytest.fixture(scope="module")
def page_inputs(tiny_models, tmp_path_factory):
    model = tiny_models["bridge"]
    vec = compute_instruction_vector(model, make_pairs("lowercase", n=6), keep_pair_diffs=True)
    table = sweep(
        model,
        vec,
        ["Hi", "Name a fruit."],
        layers=[1, 2],
        strengths=[1.0],
        max_new_tokens=3,
        progress=False,
    )
    return model, vec, table, tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def page(page_inputs) -> Path:
    model, vec, table, root = page_inputs
    pairs = make_pairs("lowercase", split="validation", n=4)
    return report(vec, out=root / "lowercase.html", sweep=table, model=model, pairs=pairs)


def test_every_section_has_a_figure_when_every_input_is_given(page_inputs, page):
    model, vec, table, _ = page_inputs
    pairs = make_pairs("lowercase", split="validation", n=4)
    sections = report_sections(vec, sweep=table, model=model, pairs=pairs)
    assert [s.heading for s in sections if s.figure is None] == []
    text = page.read_text()
    assert text.count('class="plotly-graph-div"') == len(sections)
    # Self-contained: plotly.js is inline and nothing is fetched from elsewhere.
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text)


def test_missing_inputs_are_listed_with_their_reason(page_inputs, tmp_path):
    vec = page_inputs[1]
    plain = compute_instruction_vector(page_inputs[0], make_pairs("lowercase", n=3))
    text = report(plain, out=tmp_path / "bare.html").read_text()
    for reason in ["--keep-pair-diffs", "keep_pair_diffs=True", "--sweep FILE", "--model NAME"]:
        assert reason in text
    # A saved vector reports the same as the object it was saved from.
    saved = vec.save(tmp_path / "v.safetensors")
    from_file = report(saved, out=tmp_path / "from_file.html").read_text()
    assert from_file.count("plotly-graph-div") == report(
        vec, out=tmp_path / "obj.html"
    ).read_text().count("plotly-graph-div")


def test_a_vector_read_at_another_hook_has_no_relative_norm_section(page_inputs):
    model = page_inputs[0]
    post = compute_instruction_vector(model, make_pairs("lowercase", n=3))
    mid = dataclasses.replace(post, hook_name="blocks.{layer}.hook_resid_mid")
    pairs = make_pairs("lowercase", split="validation", n=2)
    by_heading = {s.heading: s for s in report_sections(mid, model=model, pairs=pairs)}
    relative = by_heading["Norm relative to the residual stream"]
    assert relative.figure is None and "hook_resid_mid" in relative.reason
    assert by_heading["Projections of held-out pairs"].figure is not None
