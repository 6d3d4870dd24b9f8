"""The quality guard's labelled set (tests/data/degenerate_labels.jsonl) is well formed.

The set is made by `experiments.guard_labels` and labelled by reading; these tests
check its shape, not the labels' judgement, and load no model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import guard_measures

LABELS = Path(__file__).resolve().parents[1] / "data" / "degenerate_labels.jsonl"
FIELDS = {
    "id": int,
    "response": str,
    "degenerate": bool,
    "note": str,
    "prompt": str,
    "instruction": str,
    "with_instruction": bool,
    "kind": str,
    "guard_degenerate": bool,
    "repeated_ngram_share": float,
    "perplexity": float,
    "n_tokens": int,
    "empty": bool,
    "truncated": bool,
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    lines = LABELS.read_text(encoding="utf-8").splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:  # pragma: no cover - the message is the point
            pytest.fail(f"line {number} is not JSON: {e}")
    return out


def test_every_row_has_the_fields_with_their_types(rows):
    for row in rows:
        for name, kind in FIELDS.items():
            assert name in row, f"row {row.get('id')} lacks {name!r}"
            value = row[name]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            assert ok, f"row {row['id']}: {name} = {value!r} is not {kind.__name__}"


def test_setting_fields_are_all_missing_or_all_present(rows):
    for row in rows:
        setting = (row["layer"], row["mode"], row["strength"])
        if row["layer"] is None:
            assert setting == (None, None, None), row["id"]
        else:
            assert isinstance(row["layer"], int) and row["mode"] in {"add", "project"}
            assert isinstance(row["strength"], float) and row["strength"] > 0


def test_ids_are_distinct(rows):
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)


def test_the_set_is_large_and_holds_both_labels(rows):
    assert len(rows) >= 150
    labels = {r["degenerate"] for r in rows}
    assert labels == {True, False}
    share = sum(r["degenerate"] for r in rows) / len(rows)
    assert 0.2 < share < 0.8, "one label should not swamp the other"


def test_unsteered_and_steered_rows_are_both_present(rows):
    assert any(r["layer"] is None for r in rows)
    modes = {r["mode"] for r in rows if r["layer"] is not None}
    assert modes == {"add", "project"}
    assert any(r["with_instruction"] for r in rows)
    assert any(not r["with_instruction"] for r in rows)


@pytest.mark.parametrize("kind", ["list", "code"])
def test_normal_lists_and_code_are_present_and_not_degenerate(rows, kind):
    unsteered = [r for r in rows if r["kind"] == kind and r["layer"] is None]
    assert len(unsteered) >= 2, f"no unsteered {kind} rows"
    clean = [r for r in rows if r["kind"] == kind and not r["degenerate"]]
    assert len(clean) >= 5, f"fewer than 5 {kind} rows labelled not degenerate"
    # The unsteered code answers are all readable code; a list answer may loop.
    if kind == "code":
        assert not any(r["degenerate"] for r in unsteered)


def test_code_rows_look_like_code(rows):
    """A normal code row really holds code: a fence, a def or a function."""
    markers = ("```", "def ", "function ", "for ", "return ")
    for r in rows:
        if r["kind"] == "code" and not r["degenerate"] and r["layer"] is None:
            assert any(m in r["response"] for m in markers), r["id"]


def test_empty_responses_are_labelled_degenerate(rows):
    for r in rows:
        if not r["response"].strip():
            assert r["degenerate"], r["id"]


def test_measures_are_defined_on_every_response(rows):
    for r in rows[:40]:
        for name, (fn, direction) in guard_measures.MEASURES.items():
            value = fn(r["response"])
            assert isinstance(value, float), (name, r["id"])
            assert direction in {"low", "high"}


def test_a_loop_compresses_better_than_prose():
    loop = "also " * 60
    prose = "Bees collect nectar from flowers and turn it into honey inside the hive."
    assert guard_measures.compression_ratio(loop) < guard_measures.compression_ratio(prose)
    assert guard_measures.duplicate_line_share("1. A\n2. A\n3. A\n4. B") == 0.5
    assert guard_measures.duplicate_line_share("1. A\n2. B\n3. C") == 0.0
