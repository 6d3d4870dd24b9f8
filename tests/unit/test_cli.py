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
    assert "keywords:existence" in capsys.readouterr().out


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
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        main(["extract", "bullets", "--set", "4", "--out", str(out)])


def test_layer_ranges_parse():
    assert _layers("8-10,14") == [8, 9, 10, 14]


def test_unknown_benchmark_is_named():
    with pytest.raises(SystemExit, match="'nope'"):
        main(["bench", "nope"])
