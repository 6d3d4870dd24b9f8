"""Every figure reads cleanly where a reader sees it: drawn by plotly.js in headless Chromium.

Two pages are rendered: the report page of a 30-layer tiny model (as many layers as the
embedded model) and a page of the notebooks' figures, with the bundled instructions'
names and tokens as long as real ones. In the browser the test measures what a
screenshot shows (each figure is also saved as a PNG under the test's tmp_path):

- no two labels overprint (titles, legend, colour bar, ticks);
- labels drawn in a plot stay inside it, and a heatmap's cell text fits its cell;
- no mark covers a cell's value, and heatmaps draw no gridlines;
- square heatmaps are square and large, and a log axis is ticked at the values drawn.

The browser is Debian's `chromium` (installed by `make install` where the machine allows
it), driven by Playwright without any browser download. Where either is missing, these
tests skip with the reason printed by pytest's -ra summary.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import plotly.io as pio
import pytest

from analyses import (
    accuracy_grid,
    composition_table,
    cosine_table,
    difference_pca,
    interference_table,
    joint_responses,
    plot_accuracy_heatmap,
    plot_composition,
    plot_cosine_heatmap,
    plot_difference_pca,
    plot_interference,
    plot_stability,
    plot_token_projections,
)
from analyses.report import report
from tests.tiny import make_tiny_checkpoint
from tests.unit.test_analyses_sweeps import sweep_table
from workbench import compute_instruction_vector, load_model, make_pairs, stability_curve, sweep

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
NOTEBOOK_03 = ["lowercase", "capitals", "french", "spanish", "concise", "one_sentence"]
NOTEBOOK_03 += ["no_comma", "title"]

# Boxes of what each figure draws, in page pixels: [left, top, right, bottom].
MEASURE = """() => [...document.querySelectorAll('.plotly-graph-div')].map(gd => {
    const box = el => { const r = el.getBoundingClientRect();
                        return [r.left, r.top, r.right, r.bottom]; };
    // A rotated label's corners, so two tilted tick labels side by side do not count
    // as overlapping because their upright boxes do.
    const corners = t => { const b = t.getBBox(), m = t.getScreenCTM();
        return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height],
                [b.x, b.y + b.height]].map(([x, y]) =>
                    [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]); };
    const texts = sel => [...gd.querySelectorAll(sel)]
        .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
        .map(t => ({text: t.textContent, box: box(t), corners: corners(t)}));
    const furniture = '.g-gtitle text, .g-xtitle text, .g-ytitle text, .legend text, '
        + '.cbtitle text, .colorbar text, .xtick text, .ytick text';
    return {
        title: (gd.layout.title && gd.layout.title.text) || '',
        subtitle: (gd.layout.title && gd.layout.title.subtitle
                   && gd.layout.title.subtitle.text) || '',
        svg: box(gd.querySelector('svg.main-svg')),
        plot: box(gd.querySelector('.nsewdrag')),
        furniture: texts(furniture),
        xticks: texts('.xtick text').map(t => t.text),
        labels: texts('.textpoint text'),
        cells: texts('.heatmap-label'),
        points: [...gd.querySelectorAll('.scatterlayer .point')].map(box),
        heatmaps: [...gd.querySelectorAll('.hm image')].map(box),
        columns: gd.calcdata.filter(c => c[0].trace.type === 'heatmap')
            .map(c => c[0].z[0].length),
        gridlines: gd.querySelectorAll('.gridlayer path').length,
        only_heatmaps: gd.data.every(t => t.type === 'heatmap'),
        log_x: gd.layout.xaxis.type === 'log',
    };
})"""


def _chromium() -> str | None:
    found = os.environ.get("WORKBENCH_CHROMIUM") or shutil.which("chromium")
    return found or shutil.which("chromium-browser")


def _overlap(a: list[float], b: list[float]) -> float:
    """The area two boxes share, in px²."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)


def _overprint(a: list[list[float]], b: list[list[float]], slack: float = 1.0) -> bool:
    """Whether two (possibly rotated) rectangles, given by their corners, overlap by more
    than `slack` px: no edge normal of either separates them."""
    for quad in (a, b):
        for (x0, y0), (x1, y1) in zip(quad, quad[1:] + quad[:1], strict=True):
            normal = (y0 - y1, x1 - x0)
            length = (normal[0] ** 2 + normal[1] ** 2) ** 0.5 or 1.0
            pa = [(x * normal[0] + y * normal[1]) / length for x, y in a]
            pb = [(x * normal[0] + y * normal[1]) / length for x, y in b]
            if min(max(pa), max(pb)) - max(min(pa), min(pb)) <= slack:
                return False
    return True


def _inside(inner: list[float], outer: list[float], slack: float = 1.0) -> bool:
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def render(page: Path, shots: Path) -> list[dict]:
    """Open `page` in headless Chromium, save a PNG of each figure, and measure them all.

    Any page error, console error or request leaving the file fails the test.
    """
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
            figures = tab.evaluate(MEASURE)
            for i in range(n_divs):
                shot = shots / f"{page.stem}-{i}.png"
                tab.locator(".plotly-graph-div").nth(i).screenshot(path=str(shot))
                figures[i]["shot"] = shot
        finally:
            browser.close()
    assert errors == []
    return figures


def check_reads_cleanly(fig: dict) -> None:
    """What every figure owes its reader (module docstring)."""
    name = fig["title"]
    furniture = fig["furniture"]
    for i, a in enumerate(furniture):
        assert _inside(a["box"], fig["svg"]), (name, "cut by the figure's edge", a)
        for b in furniture[i + 1 :]:
            assert not _overprint(a["corners"], b["corners"]), (name, "overprinted", a, b)
    for label in fig["labels"] + fig["cells"]:
        assert _inside(label["box"], fig["plot"]), (name, "cut by the plot area", label)
    for i, a in enumerate(fig["labels"]):
        for b in fig["labels"][i + 1 :]:
            assert not _overprint(a["corners"], b["corners"]), (name, "labels collide", a, b)
    for heatmap, columns in zip(fig["heatmaps"], fig["columns"], strict=False):
        width = (heatmap[2] - heatmap[0]) / columns
        for cell in fig["cells"]:
            wide = cell["box"][2] - cell["box"][0]
            assert wide <= width - 2, (name, "wider than its cell", wide, width, cell["text"])
    for cell in fig["cells"]:
        for point in fig["points"]:
            assert _overlap(cell["box"], point) < 4, (name, "a mark covers a value", cell)
    if fig["only_heatmaps"]:
        assert fig["gridlines"] == 0, (name, "gridlines across a heatmap")
    assert Path(fig["shot"]).stat().st_size > 5_000, name


@pytest.fixture(scope="module")
def tiny_30(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "ckpt", n_layers=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(path))


def test_the_report_page_renders_every_figure_cleanly(tiny_30, tmp_path):
    vec = compute_instruction_vector(tiny_30, make_pairs("one_sentence", n=8), keep_pair_diffs=True)
    table = sweep(
        tiny_30,
        vec,
        ["Hi", "Name a fruit."],
        layers=[6, 14, 22],
        modes=["add", "project"],
        strengths=[0.5, 1.0],
        max_new_tokens=3,
        progress=False,
    )
    pairs = make_pairs("one_sentence", split="validation", n=4)
    page = report(vec, out=tmp_path / "report.html", sweep=table, model=tiny_30, pairs=pairs)
    figures = render(page, tmp_path)
    assert len(figures) >= 7
    for fig in figures:
        check_reads_cleanly(fig)
    by_title = {f["title"]: f for f in figures}
    heat = by_title["Accuracy by layer and strength (add)"]
    # The baseline as a count of its prompts, not "unsteered accuracy 0.000".
    assert re.match(r"unsteered \d+/2 = \d\.\d\d; n=2 a cell", heat["subtitle"]), heat["subtitle"]
    (square,) = by_title[next(t for t in by_title if "between the layers" in t)]["heatmaps"]
    width, height = square[2] - square[0], square[3] - square[1]
    assert width > 450 and abs(width - height) < 0.02 * width, square
    stability = next(f for f in figures if f["log_x"])
    assert stability["xticks"] == ["1", "2", "4"], stability["xticks"]


def test_the_notebook_figures_render_cleanly(tiny_models, tmp_path):
    model = tiny_models["bridge"]
    vectors = {
        name: compute_instruction_vector(model, make_pairs(name, n=4), keep_pair_diffs=True)
        for name in NOTEBOOK_03
    }
    trio = {name: vectors[name] for name in ["one_sentence", "lowercase", "no_comma"]}
    prompts = ["Name a tree.", "Describe rain.", "Say hi."]
    responses = joint_responses(model, trio, prompts, layer=1, max_new_tokens=3)
    # Tokens as long as a real tokenizer's (a byte-level tiny one has none).
    words = [" headphones", " interference", " technology", " by", ",", " allowing"] * 3
    tokens = pd.DataFrame(
        {
            "setting": ["unsteered"] * 18 + ["steered"] * 18,
            "position": list(range(18)) * 2,
            "token": words * 2,
            "projection": [float(i % 7) for i in range(36)],
        }
    )
    tokens.attrs.update(layer=1, label="one_sentence", mean_proj_without=2.0, mean_proj_with=5.0)
    figures = {
        # A planted sweep (notebook 02's heatmap) with a selected and a refused cell.
        "accuracy": plot_accuracy_heatmap(accuracy_grid(sweep_table())),
        "cosines": plot_cosine_heatmap(cosine_table(vectors, layer=1)),
        "pca": plot_difference_pca(difference_pca(vectors, layer=1)),
        "stability": plot_stability(stability_curve(vectors["lowercase"], n_draws=4)),
        "tokens": plot_token_projections(tokens),
        "composition": plot_composition(composition_table(responses, trio)),
        "interference": plot_interference(interference_table(responses)),
    }
    divs = [
        pio.to_html(f, full_html=False, include_plotlyjs=i == 0)
        for i, f in enumerate(figures.values())
    ]
    page = tmp_path / "notebooks.html"
    page.write_text(f"<html><body style='max-width:1100px'>{''.join(divs)}</body></html>")
    measured = render(page, tmp_path)
    assert len(measured) == len(figures)
    for fig in measured:
        check_reads_cleanly(fig)
    stability = measured[list(figures).index("stability")]
    assert stability["xticks"] == ["1", "2"], stability["xticks"]
    composition = measured[list(figures).index("composition")]
    assert len(composition["labels"]) == 3  # one per pair, none cut
    accuracy = measured[list(figures).index("accuracy")]
    assert {"1.00 ★", "1.00 ×"} <= {cell["text"] for cell in accuracy["cells"]}
    cosines = measured[list(figures).index("cosines")]
    assert len(cosines["cells"]) == len(NOTEBOOK_03) ** 2
