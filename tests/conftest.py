"""Shared fixtures. Models are session-scoped and treated as read-only by every test."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from workbench import compute_instruction_vector, load_model, model_info

BACKENDS = ("bridge", "hooked")
LOWERCASE_PAIRS = [
    ("Tell me about owls. Answer in lowercase.", "Tell me about owls."),
    ("Describe rain. Answer in lowercase.", "Describe rain."),
    ("Name a fruit. Use only lowercase letters.", "Name a fruit."),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose tokenizer has no chat template."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_plain") / "ckpt", chat=False)


@pytest.fixture(scope="session")
def tiny_models(tiny_dir: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {b: load_model(str(tiny_dir), backend=b) for b in BACKENDS}


@pytest.fixture(scope="session", params=BACKENDS)
def tiny_model(request: pytest.FixtureRequest, tiny_models: dict):
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def tiny_vecs(tiny_models: dict) -> dict:
    """A lowercase vector at every layer of each backend's tiny model (read-only)."""
    return {b: compute_instruction_vector(m, LOWERCASE_PAIRS) for b, m in tiny_models.items()}


@pytest.fixture
def tiny_vec(tiny_model, tiny_vecs: dict):
    """`tiny_vecs` for the backend of the `tiny_model` under test."""
    return tiny_vecs[model_info(tiny_model).backend]


@pytest.fixture(scope="session")
def smol_like_width(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model whose width (d_model 48) differs from the standard tiny model's."""
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("wide") / "ckpt", d_model=48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(path))


@pytest.fixture(scope="session")
def embedded_models() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {b: load_model(backend=b) for b in BACKENDS}


@pytest.fixture(scope="session")
def smol(embedded_models: dict):
    """The embedded SmolLM2-135M-Instruct on the default (bridge) backend."""
    return embedded_models["bridge"]
