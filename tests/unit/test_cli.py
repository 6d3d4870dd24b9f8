"""The command line on a tiny checkpoint."""

from __future__ import annotations

import warnings

import gguf
import pytest

from workbench import InstructionVector
from workbench.cli import _layers, main


def test_extract_writes_vector_and_gguf(tiny_dir, tmp_path, capsys):
    out, cv = tmp_path / "kw.safetensors", tmp_path / "kw.gguf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "extract",
                "include_keyword",
                "--set",
                "keyword=ocean",
                "--model",
                str(tiny_dir),
                "--pairs",
                "4",
                "--layers",
                "0-2",
                "--out",
                str(out),
                "--gguf",
                str(cv),
            ]
        )
    vec = InstructionVector.load(out)
    assert vec.kwargs == {"keywords": ["ocean"]} and vec.n_pairs == 4
    assert sorted(t.name for t in gguf.GGUFReader(str(cv)).tensors) == [
        "direction.1",
        "direction.2",
    ]
    printed = capsys.readouterr().out
    assert "keywords:existence" in printed and "left out layers [0]" in printed


def test_numeric_placeholders_become_ints(tiny_dir, tmp_path):
    out = tmp_path / "b.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "extract",
                "bullets",
                "--set",
                "num_bullets=4",
                "--model",
                str(tiny_dir),
                "--pairs",
                "2",
                "--out",
                str(out),
            ]
        )
    assert InstructionVector.load(out).kwargs == {"num_bullets": 4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "4"], "--set expects NAME=VALUE, got '4'"),
        (["--layers", "a-b"], "--layers 'a-b': 'a-b' is not a layer"),
        (["--layers", "5-2"], "ascending range"),
        (["--layers", ""], "--layers '': '' is not a layer"),
        (["--layers", "0,7"], "layer 7 is out of range"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tiny_dir, tmp_path, capsys, args, message):
    out = tmp_path / "b.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["extract", "bullets", "--model", str(tiny_dir), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2
    # Model loading may draw its own progress bar above; the error is one last line.
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n")
    assert errors[0].startswith("workbench extract: error: ") and message in errors[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_layer_ranges_parse():
    assert _layers("8-10,14") == [8, 9, 10, 14]
    assert _layers(" 3 ") == [3]


def test_unknown_benchmark_is_named():
    with pytest.raises(SystemExit, match="'nope'"):
        main(["bench", "nope"])
