"""The report page: one self-contained HTML file, checked in a real headless browser.

The browser is Debian's `chromium` (installed by `make install` where the machine allows
it), driven by Playwright without any browser download. Where either is missing, the
browser test skips with the reason printed by pytest's -ra summary.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from analyses.report import report, report_sections
from workbench import compute_instruction_vector, make_pairs, sweep

# Chromium's own background connections are refused on a closed network; these flags
# stop them, and --no-sandbox is needed when the tests run as root (as CI does).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _chromium() -> str | None:
    found = os.environ.get("WORKBENCH_CHROMIUM") or shutil.which("chromium")
    return found or shutil.which("chromium-browser")


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


def test_the_page_renders_every_figure_in_headless_chromium(page, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install .[dev])"
    )
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip(
            "no chromium on PATH: `make install` installs Debian's chromium when run as "
            "root with apt-get; set WORKBENCH_CHROMIUM to use another build"
        )
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            tab.on(
                "console",
                lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None,
            )
            # Any request leaving the file would be a CDN fetch: fail it loudly.
            tab.route(
                re.compile(r"^(?!file:|data:|blob:|about:)"),
                lambda route: (errors.append(f"request: {route.request.url}"), route.abort()),
            )
            tab.goto(page.as_uri(), wait_until="load")
            n_divs = tab.locator(".plotly-graph-div").count()
            tab.wait_for_function(
                "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
                arg=n_divs,
                timeout=30_000,
            )
            sizes = tab.evaluate(
                """() => [...document.querySelectorAll('.plotly-graph-div')].map(d => {
                    const svg = d.querySelector('svg.main-svg');
                    const box = svg.getBoundingClientRect();
                    return [box.width, box.height,
                            d.querySelectorAll('.trace, .hm, .violin, .point').length];
                })"""
            )
            shot = tab.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert n_divs >= 5
    assert all(w > 100 and h > 100 and n > 0 for w, h, n in sizes), sizes
    assert len(shot) > 10_000 and (tmp_path / "report.png").stat().st_size == len(shot)
