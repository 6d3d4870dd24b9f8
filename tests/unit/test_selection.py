"""The selection rule on synthetic sweep tables: ties, degenerate settings, baseline best."""

from __future__ import annotations

import pandas as pd
import pytest

from workbench import InstructionVector, SteeringTerm
from workbench.errors import InvalidArgumentError
from workbench.evaluation.selection import select, summarize
from workbench.steering.settings import Setting


def _rows(settings: list[tuple], n: int = 4) -> pd.DataFrame:
    """`settings`: (layer, mode, strength, coefficient, n_follow, n_degenerate) each."""
    rows = []
    for layer, mode, strength, coefficient, follow, degenerate in settings:
        for i in range(n):
            rows.append(
                {
                    "layer": layer,
                    "mode": mode,
                    "strength": strength,
                    "coefficient": coefficient,
                    "follows_strict": i < follow,
                    "follows_loose": i < follow + 1,
                    "degenerate": i < degenerate,
                }
            )
    return pd.DataFrame(rows)


BASE = (None, None, None, None, 1, 1)


def test_the_most_accurate_setting_that_degenerates_no_more_than_baseline_wins(tiny_vec):
    rows = _rows(
        [BASE, (1, "add", 1.0, 3.0, 4, 2), (2, "add", 1.0, 5.0, 3, 1), (2, "add", 0.5, 2.5, 2, 0)]
    )
    chosen = select(rows, tiny_vec)
    assert chosen.setting == Setting(2, "add", 1.0)
    assert chosen.term.weight == 5.0 and chosen.term.layer == 2
    evidence = chosen.evidence.set_index(["layer", "strength"])
    assert not evidence.loc[(1, 1.0), "eligible"]  # more degenerate than the baseline
    assert evidence["chosen"].sum() == 1


def test_ties_prefer_baseline_then_lower_layer_then_smaller_strength(tiny_vec):
    tie_with_base = _rows([BASE, (1, "add", 1.0, 3.0, 1, 0)])
    assert select(tie_with_base, tiny_vec).setting == Setting(None)
    assert select(tie_with_base, tiny_vec).term is None
    layers = _rows([BASE, (2, "add", 1.0, 5.0, 3, 0), (1, "add", 1.0, 3.0, 3, 0)])
    assert select(layers, tiny_vec).setting.layer == 1
    strengths = _rows([BASE, (1, "project", 1.0, 6.0, 3, 0), (1, "project", 0.5, 3.0, 3, 0)])
    chosen = select(strengths, tiny_vec)
    assert chosen.setting == Setting(1, "project", 0.5) and chosen.term.target == 3.0


def test_when_every_steered_setting_degenerates_the_baseline_is_kept(tiny_vec):
    rows = _rows([BASE, (1, "add", 1.0, 3.0, 4, 3), (2, "project", 1.0, 2.0, 4, 2)])
    chosen = select(rows, tiny_vec)
    assert chosen.setting.layer is None and chosen.term is None
    assert chosen.evidence["eligible"].tolist() == [True, False, False]


def test_the_metric_can_be_loose(tiny_vec):
    rows = _rows([BASE, (1, "add", 1.0, 3.0, 1, 0)])
    assert select(rows, tiny_vec, metric="follows_loose").setting == Setting(None)
    with pytest.raises(InvalidArgumentError, match="metric 'accuracy' is not one of"):
        select(rows, metric="accuracy")


def test_a_table_without_baseline_or_columns_is_refused():
    with pytest.raises(InvalidArgumentError, match="no unsteered baseline"):
        select(_rows([(1, "add", 1.0, 3.0, 1, 0)]))
    with pytest.raises(InvalidArgumentError, match=r"lack columns \['degenerate'\]"):
        summarize(_rows([BASE]).drop(columns=["degenerate"]))


def test_a_stored_selection_steers_with_the_chosen_setting_and_survives_a_file(tiny_vec, tmp_path):
    rows = _rows([BASE, (2, "project", 0.5, -1.25, 3, 0)])
    chosen = select(rows, tiny_vec)
    vec = tiny_vec.with_selection(chosen.record())
    term = SteeringTerm(vec).concrete()
    assert (term.layer, term.mode, term.target) == (2, "project", -1.25)
    loaded = InstructionVector.load(vec.save(tmp_path / "v.safetensors"))
    assert loaded.selection == vec.selection and loaded.selected_layer == 2
    again = SteeringTerm(loaded).concrete()
    assert (again.layer, again.mode, again.target) == (2, "project", -1.25)
    # Anything given explicitly means the user is not asking for the selection.
    assert SteeringTerm(loaded, layer=1).concrete().mode == "project"


def test_a_selection_not_to_steer_is_refused_when_asked_to_steer(tiny_vec):
    vec = tiny_vec.with_selection(select(_rows([BASE]), tiny_vec).record())
    with pytest.raises(InvalidArgumentError, match="selection is not to steer"):
        SteeringTerm(vec).concrete()


def test_the_clean_objective_does_not_count_passing_answers_that_are_degenerate(tiny_vec):
    # Baseline: 1 of 4 follows, 2 degenerate. Layer 1 passes 4 of 4, but 2 of the passes
    # are the degenerate ones; layer 2 passes 3 of 4 with 1 degenerate.
    rows = _rows(
        [(None, None, None, None, 1, 2), (1, "add", 1.0, 3.0, 4, 2), (2, "add", 1.0, 5.0, 3, 1)]
    )
    assert select(rows, tiny_vec).setting == Setting(1, "add", 1.0)
    chosen = select(rows, tiny_vec, objective="clean_accuracy")
    evidence = chosen.evidence.set_index("layer")
    # Rows i < degenerate are degenerate and rows i < follow follow: clean = follow - degenerate.
    assert evidence["clean_accuracy"].tolist() == [0.0, 0.5, 0.5]
    assert chosen.setting == Setting(1, "add", 1.0)  # a tie at 0.5: the lower layer
    assert chosen.record()["objective"] == "clean_accuracy"
    assert chosen.record()["clean_accuracy"] == 0.5
    rows = _rows(
        [(None, None, None, None, 1, 2), (1, "add", 1.0, 3.0, 4, 2), (2, "add", 1.0, 5.0, 4, 0)]
    )
    assert select(rows, tiny_vec).setting == Setting(1, "add", 1.0)  # a tie on raw accuracy
    assert select(rows, tiny_vec, objective="clean_accuracy").setting == Setting(2, "add", 1.0)
    with pytest.raises(InvalidArgumentError, match="objective 'clean' is not one of"):
        select(rows, objective="clean")
