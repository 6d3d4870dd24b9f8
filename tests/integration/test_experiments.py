"""The reference experiments (`make results`) run end to end on the embedded model at
tiny budgets, and their report carries the preset, the intervals and the effects."""

from __future__ import annotations

import json

import pytest

from experiments.reference import SMOKE, run
from experiments.report import BEGIN, END, render_short, splice


def test_the_smoke_run_reports_every_part_with_its_preset_and_intervals(tmp_path):
    summary = run(SMOKE, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["completed"] == "all" and saved["protocol"]["preset"] == "quick"
    assert [r["instruction"] for r in saved["instructions"]] == ["lowercase", "one_sentence"]
    assert [(r["kind"], r["word"]) for r in saved["keywords"]] == [
        ("include", "ocean"),
        ("exclude", "ocean"),
    ]
    # Exclusion steers with the inclusion vector subtracted: negative strengths only.
    exclude = saved["keywords"][1]["validation"]["without"]
    assert exclude["strength"] is None or exclude["strength"] < 0
    for row in saved["instructions"] + saved["keywords"]:
        for column in row["test"].values():
            assert column["n"] == 4 and column["ci95"][0] <= column["accuracy"] <= column["ci95"][1]
        assert set(row["effects"]) == {"without", "with"}
    report = (tmp_path / "README.md").read_text()
    assert "preset quick (changed:" in report and "[95% Wilson interval]" in report
    assert "| lowercase |" in report and "| exclude 'ocean' |" in report
    assert summary["wall_s"] > 0
    # The README's short table: one row per instruction and keyword, gains with intervals.
    short = render_short(summary)
    assert short.count("\n| ") == 2 + 2 + 2  # head and rule, 2 instructions, 2 keywords
    assert "| lowercase |" in short and "| include 'ocean' |" in short and " → " in short
    page = splice(f"intro\n{BEGIN}\nold\n{END}\nafter\n", short)
    assert page.startswith(f"intro\n{BEGIN}\n") and page.endswith(f"{END}\nafter\n")
    assert "old" not in page and short in page
    with pytest.raises(ValueError, match="must hold"):
        splice("no markers", short)


def test_a_rerun_resumes_every_part_and_keeps_the_compute_time_it_reports(tmp_path):
    first = run(SMOKE, tmp_path)
    timings = json.loads((tmp_path / "raw" / "timings.json").read_text())
    composed = sorted((tmp_path / "raw").glob("composition.*.json"))
    assert {"lowercase", "one_sentence", "keywords"} <= set(timings)
    second = run(SMOKE, tmp_path)
    # Nothing is computed again: the same rows come back, and the compute time
    # reported is the first run's plus only the seconds spent reading back.
    assert second["instructions"] == first["instructions"]
    assert second["keywords"] == first["keywords"]
    assert second["composition"] == first["composition"]
    assert sorted((tmp_path / "raw").glob("composition.*.json")) == composed
    assert second["compute_s"] >= first["compute_s"]
    assert second["compute_s"] - first["compute_s"] <= second["wall_s"]
    assert "summed over the runs that produced `raw/`" in (tmp_path / "README.md").read_text()
