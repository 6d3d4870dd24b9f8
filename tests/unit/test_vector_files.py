"""Vector files: safetensors + JSON metadata, refusing anything inconsistent; GGUF export."""

from __future__ import annotations

import json
import os
import stat
import warnings

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tests.tiny import make_tiny_checkpoint
from workbench import InstructionVector, compute_instruction_vector, load_model, make_pairs
from workbench.errors import (
    ArgumentTypeError,
    FileWriteError,
    InvalidArgumentError,
    VectorFileError,
    VectorMismatchError,
)

PAIRS = [
    ("Tell me about owls. Answer in lowercase.", "Tell me about owls."),
    ("Describe rain. Answer in lowercase.", "Describe rain."),
    ("Name a fruit. Use only lowercase letters.", "Name a fruit."),
    ("How do kites fly? Write in lowercase.", "How do kites fly?"),
]


def _rewrite(path, change_meta=None, change_tensors=None):
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["workbench"])
    tensors = st_load(raw)
    if change_meta:
        meta = change_meta(meta) or meta
    if change_tensors:
        change_tensors(tensors)
    path.write_bytes(st_save(tensors, metadata={"workbench": json.dumps(meta)}))


def test_save_load_round_trip(tiny_model, tmp_path):
    vec = compute_instruction_vector(
        tiny_model, make_pairs("bullets", n=4), keep_pair_diffs=True, position=2
    ).select_layer(1)
    path = vec.save(tmp_path / "sub" / "bullets.safetensors")
    loaded = InstructionVector.load(path, model=tiny_model)
    for name in ("diffs", "directions", "mean_proj_with", "mean_proj_without", "pair_diffs"):
        assert torch.equal(getattr(loaded, name), getattr(vec, name)), name
    assert loaded.kwargs == {"num_bullets": 3}
    assert loaded.instruction_id == "detectable_format:number_bullet_lists"
    assert (loaded.layers, loaded.selected_layer, loaded.n_pairs) == ((0, 1, 2), 1, 4)
    assert (loaded.prompt_style, loaded.position) == ("chat", 2)
    # Metadata lives in the safetensors header as JSON; no pickle anywhere.
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["workbench"])
    assert meta["hook_names"] == [f"blocks.{layer}.hook_resid_post" for layer in range(3)]
    assert meta["d_model"] == 32 and meta["fingerprint"] == vec.fingerprint
    assert meta["prompt_style"] == "chat" and meta["format_version"] == 2
    # Written atomically: no temporary file is left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["bullets.safetensors"]


@pytest.fixture
def saved(tiny_model, tmp_path):
    return compute_instruction_vector(tiny_model, PAIRS).save(tmp_path / "v.safetensors")


def test_files_get_the_permissions_of_an_ordinary_write(saved, tiny_model, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(saved.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    os.chmod(saved, 0o640)
    compute_instruction_vector(tiny_model, PAIRS).save(saved)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o640


def test_a_write_error_names_the_target(tiny_model, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    vec = compute_instruction_vector(tiny_model, PAIRS)
    target = blocker / "v.safetensors"
    with pytest.raises(FileWriteError, match=f"cannot write '{target}'"):
        vec.save(target)


@pytest.mark.parametrize("cut", [0, 7, 100, 1000])
def test_truncated_file_is_a_clear_error(saved, cut):
    data = saved.read_bytes()
    saved.write_bytes(data[: min(cut, len(data) - 10)])
    with pytest.raises(VectorFileError, match="not a readable workbench vector"):
        InstructionVector.load(saved)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(VectorFileError, match="not a readable workbench vector"):
        InstructionVector.load(path)


def _drop(key):
    def change(meta):
        del meta[key]

    return change


def _set(key, value):
    def change(meta):
        meta[key] = value

    return change


@pytest.mark.parametrize(
    ("change_meta", "match"),
    [
        (_set("format_version", 99), "format version 99; this workbench reads up to 2"),
        (_set("format_version", "1"), "format_version '1' is not a positive int"),
        (_drop("layers"), r"missing metadata \['layers'\]"),
        (lambda m: [m], "not a workbench vector"),
        (_set("layers", None), "layers must be a list and d_model an int, got None"),
        (_set("layers", 3), "layers must be a list"),
        (_set("layers", [-1, 0, 1]), r"layers: \[-1\] are not layer indices"),
        (_set("layers", [0, 0, 1]), "contain duplicates"),
        (_set("selected_layer", 99), "selected_layer: 99 is not one of the layers"),
        (
            _set("hook_name", "blocks.{lay}.x"),
            "hook_name: hook_name 'blocks.{lay}.x' must be a template",
        ),
        (_set("position", "middle"), "position: position 'middle'"),
        (_set("n_pairs", -2), "n_pairs: must be a positive int"),
    ],
)
def test_edited_metadata_is_refused_naming_the_key(saved, change_meta, match):
    _rewrite(saved, change_meta=change_meta)
    with pytest.raises(VectorFileError, match=match) as info:
        InstructionVector.load(saved)
    assert str(saved) in str(info.value)


@pytest.mark.parametrize(
    ("change_tensors", "match"),
    [
        (lambda t: t.update(diffs=t["diffs"][:2]), r"'diffs': \(2, 32\).*contradict its metadata"),
        (lambda t: t["mean_proj_with"].fill_(float("nan")), "mean_proj_with: contains NaN"),
        (
            lambda t: t.update(pair_diffs=torch.zeros(5, 2, 32)),
            r"'pair_diffs': \(5, 2, 32\).*contradict",
        ),
        (lambda t: t.pop("directions"), r"tensors \['directions'\]"),
    ],
)
def test_inconsistent_tensors_are_refused(saved, change_tensors, match):
    _rewrite(saved, change_tensors=change_tensors)
    with pytest.raises(VectorFileError, match=match):
        InstructionVector.load(saved)


def test_version_one_files_load_with_unknown_prompt_style(saved):
    def downgrade(meta):
        meta["format_version"] = 1
        meta.pop("prompt_style")

    _rewrite(saved, change_meta=downgrade)
    assert InstructionVector.load(saved).prompt_style is None


def test_mismatched_model_is_refused(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deeper = load_model(str(make_tiny_checkpoint(tmp_path / "deep", n_layers=4)))
    with pytest.raises(VectorMismatchError, match="3-layer model"):
        InstructionVector.load(saved, model=deeper)


def test_mismatched_width_is_refused(saved, smol_like_width):
    with pytest.raises(VectorMismatchError, match="d_model=32"):
        InstructionVector.load(saved, model=smol_like_width)


def test_other_weights_warn_but_load(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = load_model(str(make_tiny_checkpoint(tmp_path / "other", seed=7)))
    with pytest.warns(UserWarning, match="transfer"):
        vec = InstructionVector.load(saved, model=other)
    assert vec.d_model == 32


def _gguf_tensors(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: np.asarray(t.data).reshape(-1) for t in reader.tensors}


def test_gguf_control_vector_round_trip(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    out = vec.to_gguf(tmp_path / "cv.gguf", layers=[1, 2], scale=2.0)
    reader, tensors = _gguf_tensors(out.path)
    assert sorted(tensors) == ["direction.1", "direction.2"]
    assert (out.layers, out.skipped) == ((1, 2), ())
    for layer in (1, 2):
        np.testing.assert_allclose(tensors[f"direction.{layer}"], 2.0 * vec.diff(layer).numpy())
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = reader.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 2


def test_gguf_default_exports_what_llama_cpp_takes_and_reports_the_rest(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    out = vec.to_gguf(tmp_path / "cv.gguf")
    assert (out.layers, out.skipped) == ((1, 2), (0,))
    assert sorted(_gguf_tensors(out.path)[1]) == ["direction.1", "direction.2"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [0, 1]}, InvalidArgumentError, "cannot steer layer 0"),
        ({"layers": [5]}, VectorMismatchError, "not layer 5"),
        ({"scale": float("nan")}, InvalidArgumentError, "scale nan is not a finite number"),
    ],
)
def test_gguf_bad_arguments_write_nothing(tiny_model, tmp_path, kwargs, error, match):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    with pytest.raises(error, match=match):
        vec.to_gguf(tmp_path / "cv.gguf", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_gguf_refuses_a_vector_read_at_another_hook(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    mid = InstructionVector(**{**vec.__dict__, "hook_name": "blocks.{layer}.hook_resid_mid"})
    with pytest.raises(VectorMismatchError, match="off by one"):
        mid.to_gguf(tmp_path / "cv.gguf")
    assert list(tmp_path.iterdir()) == []


# --- paths: empty, None, ~, symlinks, FIFOs ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        ("", InvalidArgumentError, "vector file path '' is empty; give a file name"),
        ("  ", InvalidArgumentError, "vector file path '  ' is empty"),
        (None, ArgumentTypeError, "vector file path must be a str or Path, got NoneType None"),
        (7, ArgumentTypeError, "must be a str or Path, got int 7"),
    ],
)
def test_saving_to_no_path_is_a_one_line_error(saved, tmp_path, monkeypatch, path, error, match):
    monkeypatch.chdir(tmp_path)
    vec = InstructionVector.load(saved)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error, match=match) as info:
        vec.save(path)
    assert len(str(info.value).splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("path", ["", None])
def test_loading_no_path_is_a_one_line_error(path):
    with pytest.raises(VectorFileError, match="vector file path") as info:
        InstructionVector.load(path)
    assert len(str(info.value).splitlines()) == 1


def test_home_is_expanded_in_save_load_and_gguf(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    vec = InstructionVector.load(saved)
    written = vec.save("~/sub/v.safetensors")
    assert written == tmp_path / "home" / "sub" / "v.safetensors" and written.is_file()
    assert torch.equal(InstructionVector.load("~/sub/v.safetensors").diffs, vec.diffs)
    export = vec.to_gguf("~/v.gguf")
    assert export.path == tmp_path / "home" / "v.gguf" and export.path.is_file()
    assert not (tmp_path / "~").exists()


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(saved, tmp_path):
    target = tmp_path / "target.safetensors"
    target.write_bytes(saved.read_bytes())
    link = tmp_path / "link.safetensors"
    link.symlink_to(target.name)
    vec = InstructionVector.load(saved).select_layer(2)
    assert vec.save(link) == link
    assert link.is_symlink() and os.readlink(link) == target.name
    assert InstructionVector.load(target).selected_layer == 2
    # The GGUF export follows the same rule; over a vector it needs consent.
    with pytest.raises(InvalidArgumentError, match="holds a workbench vector file"):
        vec.to_gguf(link)
    vec.to_gguf(link, force=True)
    assert link.is_symlink() and target.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("via_link", [False, True])
def test_a_fifo_is_never_replaced_nor_read(saved, tmp_path, via_link):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    path = pipe
    if via_link:
        path = tmp_path / "link"
        path.symlink_to("pipe")
    vec = InstructionVector.load(saved)
    with pytest.raises(InvalidArgumentError, match="is a FIFO, not a regular file"):
        vec.save(path)
    with pytest.raises(InvalidArgumentError, match="is a FIFO, not a regular file"):
        vec.to_gguf(path)
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    # Reading a FIFO would wait for a writer forever: it is refused instead.
    with pytest.raises(VectorFileError, match="it is not a regular file"):
        InstructionVector.load(path)


def test_a_character_device_is_never_replaced(saved):
    vec = InstructionVector.load(saved)
    with pytest.raises(InvalidArgumentError, match="'/dev/null' is a character device"):
        vec.save("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(VectorFileError, match="'/dev/null': it is not a regular file"):
        InstructionVector.load("/dev/null")
