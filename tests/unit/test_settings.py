"""One owner per steering concept.

- Setting -> term: a sweep's coefficient column, `select`'s term, a stored selection
  (``SteeringTerm(vec).concrete()``), the command line's ``--layer --mode --strength``
  and the default a term gets when resolved all come from `workbench.steering.settings`.
- Checks: one steering call checks each vector against the model once and each hook
  name once; a command or sweep checks a vector once, so a transfer warns once.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest

import workbench.model.hooks as hooks_module
import workbench.steering.plan as plan_module
from tests.tiny import make_tiny_checkpoint
from workbench import (
    InstructionVector,
    PerRow,
    SteeringTerm,
    compute_instruction_vector,
    generate,
    load_model,
    make_pairs,
    steer,
)
from workbench.cli.console import main
from workbench.cli.steer import _term as cli_term
from workbench.errors import InvalidArgumentError
from workbench.evaluation.selection import select
from workbench.evaluation.sweeps import sweep
from workbench.steering.plan import SteeringPlan
from workbench.steering.settings import Setting, default_coefficient

ROOT = Path(__file__).resolve().parents[2]
LAYER, STRENGTH = 1, 0.5
MODES = ("add", "project", "ablate")


def _strength(mode: str) -> float | None:
    return None if mode == "ablate" else STRENGTH


@pytest.fixture(scope="module")
def lower(tiny_models) -> InstructionVector:
    """A lowercase vector that knows its instruction (so a sweep can score against it)."""
    return compute_instruction_vector(tiny_models["bridge"], make_pairs("lowercase", n=3))


@pytest.fixture(scope="module")
def swept(tiny_models, lower):
    """A sweep of every mode at one layer (one prompt, one token each)."""
    model, vec = tiny_models["bridge"], lower
    kw = {"layers": [LAYER], "modes": list(MODES), "strengths": [STRENGTH]}
    return sweep(model, vec, ["Hi"], **kw, max_new_tokens=1, progress=False)


def _chosen(table, mode: str):
    """`table` rigged so that `mode`'s row is the one accurate setting."""
    rigged = table.copy()
    rigged["follows_strict"] = rigged["mode"].eq(mode).fillna(False).astype(bool)
    rigged["degenerate"] = False
    return rigged


def _cli(vec: InstructionVector, **flags) -> SteeringTerm:
    args = {"vector": "v.safetensors", "layer": None, "mode": None, "strength": None}
    args |= {"gate": False, "no_gate": False, "gate_threshold": None, "gate_side": None}
    return cli_term(vec, argparse.Namespace(**{**args, **flags, "positions": "all"}))


@pytest.mark.parametrize("mode", MODES)
def test_every_route_from_a_setting_to_a_term_gives_the_same_term(swept, lower, mode):
    vec = lower
    default = default_coefficient(vec, LAYER, mode)
    expected = None if mode == "ablate" else STRENGTH * default
    column = swept.loc[swept["mode"] == mode, "coefficient"].iloc[0]
    assert (None if column is None or column != column else column) == expected
    chosen = select(_chosen(swept, mode), vec)
    assert chosen.setting == Setting(LAYER, mode, _strength(mode))
    stored = vec.with_selection(chosen.record())
    terms = {
        "setting": Setting(LAYER, mode, _strength(mode)).term(vec),
        "select": chosen.term,
        "stored selection": SteeringTerm(stored).concrete(),
        "command line, flags": _cli(vec, layer=LAYER, mode=mode, strength=_strength(mode)),
        "command line, selection": _cli(stored),
    }
    for route, term in terms.items():
        assert (term.layer, term.mode, term.coefficient) == (LAYER, mode, expected), route


@pytest.mark.parametrize("mode", ["add", "project"])
def test_the_command_line_keeps_the_selected_strength_unless_the_mode_changes(swept, lower, mode):
    stored = lower.with_selection(select(_chosen(swept, mode), lower).record())
    other = "project" if mode == "add" else "add"
    at_layer = _cli(stored, layer=LAYER)
    assert (at_layer.mode, at_layer.coefficient) == (
        mode,
        STRENGTH * default_coefficient(lower, LAYER, mode),
    )
    switched = _cli(stored, layer=LAYER, mode=other)
    assert switched.coefficient == pytest.approx(default_coefficient(lower, LAYER, other))


def test_a_stored_coefficient_is_used_as_is_and_a_missing_one_is_strength_times_default(
    lower,
):
    vec = lower
    assert Setting(LAYER, "add", 2.0).term(vec, coefficient=7.0).weight == 7.0
    assert Setting(LAYER, "project", 2.0).term(vec).target == 2.0 * float(
        vec.mean_proj_with[vec.row(LAYER)]
    )
    with pytest.raises(InvalidArgumentError, match="no meaning for mode 'ablate'"):
        Setting(LAYER, "ablate").term(vec, coefficient=1.0)


@pytest.mark.parametrize("mode", ["add", "project"])
def test_a_term_left_without_a_coefficient_resolves_to_strength_one(tiny_models, lower, mode):
    model, vec = tiny_models["bridge"], lower
    bare = SteeringPlan(model, SteeringTerm(vec, layer=LAYER, mode=mode)).shared[0]
    one = SteeringPlan(model, Setting(LAYER, mode, 1.0).term(vec)).shared[0]
    assert bare.a == one.a == default_coefficient(vec, LAYER, mode)


def test_a_tensor_vector_defaults_to_its_own_norm_and_has_no_projection(lower):
    diff = lower.diff(LAYER)
    assert default_coefficient(diff, LAYER, "add") == pytest.approx(float(diff.norm()))
    with pytest.raises(InvalidArgumentError, match="tensor vector needs target="):
        default_coefficient(diff, LAYER, "project")


def test_the_setting_and_its_default_coefficient_are_defined_once():
    pattern = re.compile(r"^\s*(def default_coefficient\b|class Setting\b)", re.M)
    owners = Counter()
    for package in ("workbench", "analyses", "experiments", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            for match in pattern.finditer(path.read_text()):
                owners[(path.relative_to(ROOT).as_posix(), match.group(1).split()[1])] += 1
    assert owners == {
        ("workbench/steering/settings.py", "default_coefficient"): 1,
        ("workbench/steering/settings.py", "Setting"): 1,
    }


# ----- each check once ----------------------------------------------------------------------


@pytest.fixture
def hook_checks(monkeypatch) -> list[tuple[str, ...]]:
    """The hook names of every `check_hooks` call, whoever makes it."""
    calls, real = [], hooks_module.check_hooks

    def check_hooks(model, names, known=None):
        calls.append(tuple(names))
        return real(model, names, known)

    # check_model imports check_hooks from model.hooks at each call; plan holds its own name.
    monkeypatch.setattr(hooks_module, "check_hooks", check_hooks)
    monkeypatch.setattr(plan_module, "check_hooks", check_hooks)
    return calls


def test_one_steering_call_checks_each_vector_once_and_other_hooks_once(
    tiny_models, lower, hook_checks
):
    model, vec = tiny_models["bridge"], lower
    own = tuple(vec.hook_name.format(layer=layer) for layer in vec.layers)
    pre = "blocks.{layer}.hook_resid_pre"
    # Terms of one vector: the vector's check (all its layers' hooks) is the only one.
    with steer(model, [SteeringTerm(vec, layer=1), SteeringTerm(vec, layer=2, mode="add")]):
        assert hook_checks == [own]
    hook_checks.clear()
    # A distinct vector is checked on its own; a hook of the term's own, or a tensor
    # vector's hook, is checked by resolve unless a vector check covered it.
    twin = dataclasses.replace(vec)
    rows = PerRow(
        [
            [SteeringTerm(twin, layer=1, mode="ablate"), SteeringTerm(vec, layer=0, hook_name=pre)],
            [SteeringTerm(vec.diff(0), layer=0, mode="add"), SteeringTerm(vec, layer=2)],
            [SteeringTerm(vec.diff(0), layer=1, mode="add", hook_name=pre)],
        ]
    )
    with steer(model, rows):
        pass
    assert sorted(hook_checks) == sorted([own, own, (pre.format(layer=0),), (pre.format(layer=1),)])


def _transfer_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "Using it as a transfer" in str(w.message)]


@pytest.fixture(scope="module")
def reseeded(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(str(make_tiny_checkpoint(tmp_path_factory.mktemp("w") / "c", seed=7)))


def test_a_transfer_warns_once_per_call_and_once_per_sweep(lower, reseeded):
    vec = lower
    terms = PerRow([SteeringTerm(vec, layer=1), [SteeringTerm(vec, layer=2, mode="add")]])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        generate(reseeded, ["hi", "yo"], steering=terms, max_new_tokens=1)
        assert len(_transfer_warnings(record)) == 1
        # A second call is a call of its own: it checks, and warns, again.
        generate(reseeded, ["hi"], steering=SteeringTerm(vec, layer=1), max_new_tokens=1)
        assert len(_transfer_warnings(record)) == 2
        kw = {"layers": [1, 2], "modes": ["add"], "strengths": [1.0], "max_new_tokens": 1}
        sweep(reseeded, vec, ["Hi", "Yo"], **kw, batch_size=1, progress=False)
        assert len(_transfer_warnings(record)) == 3


def test_a_steer_command_with_a_transfer_warns_once_over_many_batches(lower, tmp_path, capsys):
    vec_path = lower.save(tmp_path / "v.safetensors")
    other = make_tiny_checkpoint(tmp_path / "seed1", seed=1)
    argv = ["steer", str(vec_path), "Hi", "Yo", "Hey", "--layer", "1", "--model", str(other)]
    argv += ["--batch-size", "1", "--compare", "--max-new-tokens", "1", "--quiet"]
    with warnings.catch_warnings():
        # Every warning raised reaches the command's printer, not only the first per line.
        warnings.simplefilter("always")
        assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    transfer = [line for line in lines if "Using it as a transfer" in line]
    assert len(transfer) == 1 and transfer[0].startswith("workbench steer: warning: ")
