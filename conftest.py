"""Objects the docstring examples run against (``pytest --doctest-modules``).

Every example in `workbench` and `analyses` runs on a tiny random-weight model
(3 layers, d_model 32), so the examples cannot drift from the code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import workbench
from tests.tiny import make_tiny_checkpoint


@pytest.fixture(scope="session")
def _doctest_objects(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from workbench.model.prompts import tokenize_prompts

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("doctest") / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = workbench.load_model(str(path))
    vec = workbench.compute_instruction_vector(model, workbench.make_pairs("lowercase", n=3))
    names = {name: getattr(workbench, name) for name in workbench.__all__}
    return {
        **names,
        "model": model,
        "vec": vec,
        "torch": torch,
        "Path": Path,
        "tokenize_prompts": tokenize_prompts,
    }


@pytest.fixture(autouse=True)
def _doctest_namespace(request: pytest.FixtureRequest, doctest_namespace: dict) -> None:
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update(request.getfixturevalue("_doctest_objects"))
        torch.manual_seed(0)
