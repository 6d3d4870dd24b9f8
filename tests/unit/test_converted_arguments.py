"""Numbers arrive as numpy or tensor scalars and lists as arrays: each is converted once,
to the Python value the rest of the library (and every JSON file) holds."""

from __future__ import annotations

import json
import threading

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from analyses.geometry import cosine_table
from analyses.report import report
from analyses.style import write_html
from workbench import compute_instruction_vector, make_pairs, sweep
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.evaluation.quality import QualityThresholds, response_perplexity
from workbench.model.hooks import model_lock
from workbench.options import as_float, check_int, check_read_position, float_list, int_list
from workbench.vectors.diagnostics import pairs_to_settle, stability_curve


def test_scalars_of_every_kind_become_python_numbers():
    assert type(check_int("n", np.int64(3))) is int
    assert type(check_int("n", torch.tensor(3))) is int
    assert type(as_float("w", np.float32(0.5))) is float
    assert type(as_float("w", torch.tensor(0.5))) is float
    assert check_read_position(np.int64(4)) == 4 and type(check_read_position(np.int64(4))) is int
    for bad in (True, torch.tensor(True), torch.tensor([1, 2]), "3"):
        with pytest.raises(ArgumentTypeError):
            check_int("n", bad)


def test_lists_of_numbers_from_arrays_are_lists_of_python_numbers():
    assert int_list("layers", np.arange(2, 5), "layer") == [2, 3, 4]
    assert float_list("strengths", torch.tensor([0.5, 1.0]), "strength") == [0.5, 1.0]
    with pytest.raises(ArgumentTypeError, match=r"layers\[1\] must be an int, got float 1.5"):
        int_list("layers", [1, 1.5], "layer")
    with pytest.raises(InvalidArgumentError, match=r"repeated"):
        float_list("strengths", [1, 1.0], "strength")
    with pytest.raises(ArgumentTypeError, match="must be a list such as"):
        int_list("layers", {1, 2}, "layer")


def test_thresholds_hold_python_numbers():
    t = QualityThresholds(ngram=np.int64(3), min_compression_ratio=np.float32(0.25))
    assert type(t.ngram) is int and type(t.min_compression_ratio) is float
    assert json.dumps(t.record())


def test_a_sweep_given_numpy_counts_writes_a_json_file(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, make_pairs("lowercase", n=3))
    out = tmp_path / "s.jsonl"
    table = sweep(
        tiny_model,
        vec,
        ["Hi"],
        layers=np.array([1]),
        strengths=np.array([1.0]),
        modes=["add"],
        max_new_tokens=np.int64(2),
        batch_size=np.int64(4),
        thresholds=QualityThresholds(ngram=np.int64(4)),
        out=out,
        progress=False,
    )
    header = json.loads(out.read_text().splitlines()[0])
    assert header["config"]["max_new_tokens"] == 2
    assert len(table) == 2  # the baseline and the one setting


def test_make_pairs_refuses_more_pairs_than_the_split_holds():
    assert len(make_pairs("lowercase", split="validation", n=24)) == 24
    with pytest.raises(InvalidArgumentError, match="validation split holds only 24 queries"):
        make_pairs("lowercase", split="validation", n=25)


def test_diagnostics_take_numpy_numbers():
    diffs = torch.randn(8, 3, 16, generator=torch.Generator().manual_seed(0))
    curve = stability_curve(diffs, sizes=np.array([1, 4]), n_draws=np.int64(2), seed=np.int64(0))
    assert sorted(set(curve.n_pairs)) == [1, 4]
    assert pairs_to_settle(curve, np.float32(-1.0)).shape[0] == 3


def test_export_layers_take_an_array_and_refuse_a_set(tiny_vec, tmp_path):
    layers = np.array([1, 2])
    assert tiny_vec.to_gguf(tmp_path / "v.gguf", layers=layers, scale=np.float32(2)).layers == (
        1,
        2,
    )
    with pytest.raises(ArgumentTypeError, match="must be a list such as"):
        tiny_vec.to_gguf(tmp_path / "w.gguf", layers={1, 2})
    assert not (tmp_path / "w.gguf").exists()


def test_cosine_table_reads_its_switches_as_bools(tiny_vec):
    with pytest.raises(ArgumentTypeError, match="cluster must be True or False, got str 'no'"):
        cosine_table({"a": tiny_vec, "b": tiny_vec}, layer=1, cluster="no")


def test_write_html_returns_the_expanded_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    out = write_html(go.Figure(), "~/f.html")
    assert out == tmp_path / "f.html" and out.is_file()
    with pytest.raises(ArgumentTypeError, match="must be a str or Path"):
        write_html(go.Figure(), None)


def test_the_report_never_replaces_the_sweep_file_its_table_came_from(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, make_pairs("lowercase", n=3))
    out = tmp_path / "s.jsonl"
    table = sweep(tiny_model, vec, ["Hi"], layers=[1], max_new_tokens=2, out=out, progress=False)
    before = out.read_bytes()
    with pytest.raises(InvalidArgumentError, match="is the input file"):
        report(vec, sweep=table, out=out)
    assert out.read_bytes() == before


def test_perplexity_waits_for_another_threads_steering_block(tiny_model):
    """The unsteered perplexity pass must not run while another thread holds the model."""
    prompts, responses = [[1, 2, 3]], [[4, 5]]
    expected = response_perplexity(tiny_model, prompts, responses)
    held, release, seen = threading.Event(), threading.Event(), []

    def holder() -> None:
        with model_lock(tiny_model):
            held.set()
            release.wait(10)

    def reader() -> None:
        seen.append(response_perplexity(tiny_model, prompts, responses))

    first = threading.Thread(target=holder)
    first.start()
    held.wait(10)
    second = threading.Thread(target=reader)
    second.start()
    second.join(0.5)
    assert second.is_alive() and not seen  # waiting for the lock
    release.set()
    second.join(10)
    first.join(10)
    assert seen == [expected]
