"""The README and docs/ say what runs: every Python block executes as written, and every
`workbench` command line in a shell block parses with the real parser.

A page's Python blocks run in order in one namespace, as a reader pasting them into one
notebook would run them; each page starts afresh, so a page must import and define
every name it uses. `load_model()` (the embedded model) is served by a 30-layer tiny
random model, so the layer numbers the pages use exist and the blocks run in seconds;
no other name is replaced.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import warnings
from pathlib import Path

import pytest

import workbench
from tests.tiny import make_tiny_checkpoint
from workbench.cli.console import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
EMBEDDED = "smollm2-135m-instruct"


def blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(page.read_text()) if lang == language]


def test_every_page_is_linked_from_the_readme_and_the_readme_stays_short():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"docs/{page.name} is not linked"
    # The first page a user reads: what it is, the two commands, where to go next.
    assert len(readme.encode()) < 15_000


@pytest.fixture(scope="module")
def tiny_30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("docs") / "ckpt", n_layers=30)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_every_python_block_runs_as_written(page, tiny_30, tmp_path, monkeypatch):
    real = workbench.load_model
    loaded: dict[str, object] = {}

    def load_model(name: str = EMBEDDED, **kwargs):
        if name != EMBEDDED:
            return real(name, **kwargs)
        if "model" not in loaded:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded["model"] = real(str(tiny_30), **kwargs)
        return loaded["model"]

    monkeypatch.setattr(workbench, "load_model", load_model)
    monkeypatch.chdir(tmp_path)  # the files the blocks write land here
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, code in enumerate(blocks(page, "python")):
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                exec(compile(code, f"{page.name} block {i + 1}", "exec"), namespace)
            except Exception as e:  # noqa: BLE001 - reported with the block that failed
                pytest.fail(f"{page.name}, Python block {i + 1}: {type(e).__name__}: {e}")


def command_lines(page: Path) -> list[str]:
    text = "\n".join(blocks(page, "bash"))
    joined = text.replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line.startswith("workbench ")]


@pytest.mark.parametrize("page", [p for p in PAGES if command_lines(p)], ids=lambda p: p.name)
def test_every_command_line_parses(page):
    parser = build_parser()
    for line in command_lines(page):
        argv = shlex.split(line)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"{page.name}: `{line}` does not parse (exit {e.code})")
