"""`experiments.conditional`'s tables and findings, on a summary built by hand: every
count in the README is counted from the numbers, not written."""

from __future__ import annotations

from experiments.conditional import _excludes_zero, findings, render


def _effect(gain, low, high, fixed=0, broken=0):
    return {"gain": gain, "ci95": [low, high], "p_value": 1.0, "fixed": fixed, "broken": broken}


def _column(accuracy, gate_on=None, n=24):
    return {
        "accuracy": accuracy,
        "ci95": [0.0, 1.0],
        "clean_accuracy": accuracy,
        "clean_ci95": [0.0, 1.0],
        "n": n,
        "gate_on": gate_on,
    }


def _run(name, candidate, vs_with=None, harm=None, gate_with=None, gate_without=None):
    none = {"layer": None, "mode": None, "strength": None}
    row = {
        "instruction": name,
        "candidate": candidate,
        "seconds": 1.0,
        "described": "preset quick (changed: layers); layers 6,14,22",
        "selected": {"without": none, "with": {"layer": 14, "mode": "project", "strength": 1.0}},
        "test": {
            "no_instruction": _column(0.1),
            "no_instruction+steer": _column(0.1, gate_without),
            "instruction": _column(0.5),
            "instruction+steer": _column(0.6, gate_with),
        },
        "effects": {"without": _effect(0, -0.1, 0.1), "with": harm or _effect(0.1, -0.1, 0.3)},
    }
    if candidate != "project":
        zero = {"raw": _effect(0, -0.1, 0.1), "clean": _effect(0, -0.1, 0.1)}
        row["vs_project"] = {"without": zero, "with": vs_with or zero}
    return row


def test_an_interval_counts_only_when_it_excludes_zero():
    assert _excludes_zero(_effect(0.2, 0.01, 0.4)) == 1
    assert _excludes_zero(_effect(-0.2, -0.4, -0.01)) == -1
    assert _excludes_zero(_effect(0.2, 0.0, 0.4)) == 0  # touching 0 is no evidence


def test_findings_count_each_candidate_against_project_and_the_gate():
    better = {"raw": _effect(0.3, 0.1, 0.5, 7, 0), "clean": _effect(0.1, -0.1, 0.3)}
    summary = {
        "protocol": [
            _run("a", "project"),
            _run("a", "clamp", vs_with=better),
            _run("a", "gated project", gate_with=2, gate_without=20),
            _run("b", "project"),
            _run("b", "clamp", harm=_effect(-0.3, -0.5, -0.1, 0, 7)),
            _run("b", "gated project", gate_with=1, gate_without=24),
        ]
    }
    lines = findings(summary)
    assert lines[0] == "Counted over the 2 instructions measured (a, b):"
    clamp = next(line for line in lines if line.startswith("- **clamp against project**"))
    assert (
        "with the instruction: raw 1 up, 0 down, 1 neither; clean 0 up, 0 down, 2 neither" in clamp
    )
    assert clamp.endswith(
        "Against the instruction alone (instr. + steer − instr.): 0 up, 1 down, 1 neither."
    )
    gate = [line for line in lines if line.startswith("- **The gate")]
    assert "with the instruction**: on for 3 of 48 (0.06 [" in gate[0]
    assert "without the instruction**: on for 44 of 48 (0.92 [" in gate[1]
    page = render(summary)
    assert page.startswith("# Conditional steering on the embedded model")
    assert (
        "| a | clamp | +0.00 [-0.10, +0.10] (0/0) | +0.00 [-0.10, +0.10] (0/0) | +0.30 [+0.10, +0.50] (7/0) |"
        in page
    )
    assert "| b | gated project |" in page and "| 1/24 |" in page
