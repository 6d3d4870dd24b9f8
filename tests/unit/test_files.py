"""What an atomic write may replace: regular files (through symlinks), nothing else."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.files import atomic_path, user_path, write_atomic, write_target


def test_a_new_file_is_written(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    assert write_atomic(target, b"abc") == target
    assert target.read_bytes() == b"abc"


def test_an_existing_regular_file_is_replaced_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "old.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symlink_to_a_regular_file_writes_the_target_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    assert write_atomic(link, b"new") == link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"


def test_a_chain_of_symlinks_is_followed_to_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    (tmp_path / "a").symlink_to(real)
    (tmp_path / "b").symlink_to(tmp_path / "a")
    write_atomic(tmp_path / "b", b"new")
    assert real.read_bytes() == b"new" and (tmp_path / "b").is_symlink()


def test_a_fifo_is_refused_and_left_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgumentError, match="is a FIFO, not a regular file"):
        write_atomic(fifo, b"x")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary left


def test_a_symlink_to_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    with pytest.raises(InvalidArgumentError, match="FIFO"):
        write_atomic(link, b"x")
    assert link.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_character_device_is_refused_untouched() -> None:
    before = os.stat("/dev/null")
    with pytest.raises(InvalidArgumentError, match="'/dev/null' is a character device"):
        write_atomic("/dev/null", b"x")
    with pytest.raises(InvalidArgumentError, match="character device"):
        with atomic_path("/dev/null"):
            pytest.fail("the block must not run")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="is a directory, not a regular file"):
        write_atomic(tmp_path, b"x")
    assert tmp_path.is_dir()


def test_a_dangling_symlink_is_refused_and_kept(tmp_path: Path) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgumentError, match="does not exist; refusing to replace the link"):
        write_atomic(link, b"x")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_tilde_is_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/v.bin") == tmp_path / "v.bin"
    write_atomic("~/v.bin", b"x")
    assert (tmp_path / "v.bin").read_bytes() == b"x"
    assert not Path("~").exists()


@pytest.mark.parametrize("bad", ["", "   "])
def test_an_empty_path_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is empty; give a file name"):
        user_path(bad, "out")


@pytest.mark.parametrize("bad", [None, 3, b"v.bin", ["v.bin"]])
def test_a_path_of_another_type_is_refused(bad: object) -> None:
    with pytest.raises(ArgumentTypeError, match="out must be a str or Path"):
        write_target(bad, "out")


def test_every_refusal_is_a_workbench_error(tmp_path: Path) -> None:
    for bad in ("", None, tmp_path, "/dev/null"):
        with pytest.raises(WorkbenchError):
            write_atomic(bad, b"x")  # type: ignore[arg-type]


SWEEP_LINE = '{"format": "workbench.sweep", "version": 2, "config": {}, "shard": null}\n'


def test_a_file_of_another_kind_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text(SWEEP_LINE)
    with pytest.raises(InvalidArgumentError, match="holds a sweep file, not an HTML page"):
        write_atomic(target, b"<html></html>", kind="html")
    assert target.read_text() == SWEEP_LINE
    write_atomic(target, b"<html></html>", kind="html", force=True)
    assert target.read_bytes() == b"<html></html>"
    write_atomic(target, b"<!doctype html>", kind="html")  # same kind: no consent needed
    empty = tmp_path / "empty.html"
    empty.touch()
    write_atomic(empty, b"<html></html>", kind="html")
    assert empty.read_bytes() == b"<html></html>"


def test_the_library_writers_never_replace_another_kind(tiny_vec, tmp_path: Path) -> None:
    import plotly.graph_objects as go

    from analyses.report import report
    from analyses.style import write_html

    sweep_file = tmp_path / "s.jsonl"
    sweep_file.write_text(SWEEP_LINE)
    vector_file = tiny_vec.save(tmp_path / "v.safetensors")
    vector_bytes = vector_file.read_bytes()
    attempts = [
        (lambda: tiny_vec.save(sweep_file), sweep_file, "a sweep file"),
        (lambda: tiny_vec.to_gguf(vector_file), vector_file, "a workbench vector file"),
        (lambda: report(tiny_vec, out=sweep_file), sweep_file, "a sweep file"),
        (lambda: write_html(go.Figure(), vector_file), vector_file, "a workbench vector file"),
    ]
    for write, path, kind in attempts:
        before = path.read_bytes()
        with pytest.raises(InvalidArgumentError, match=f"holds {kind}, not .*force=True"):
            write()
        assert path.read_bytes() == before
    assert sweep_file.read_text() == SWEEP_LINE
    assert vector_file.read_bytes() == vector_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "v.safetensors"]
    tiny_vec.save(sweep_file, force=True)
    assert sweep_file.read_bytes()[8:9] == b"{"  # now a safetensors header
    assert tiny_vec.to_gguf(tmp_path / "v.gguf", force=True).path.read_bytes()[:4] == b"GGUF"
