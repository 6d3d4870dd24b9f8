"""Subcommand ``steer``: generate with a saved vector, gated or not."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from typing import Any

from workbench.errors import InvalidArgumentError
from workbench.options import GateSide, Mode, Positions, choices

from .arguments import check_layers_in, finite_float
from .loading import check_fits, load_model_from, read_vector
from .output import emit_json, progress, say
from .parser import add_command, add_model_options, count_option
from .paths import path_arg, read_prompts
from .sweep import VECTOR_MODEL


def register(sub: Any) -> None:
    """Add ``steer`` to `sub`."""
    p = add_command(
        sub,
        "steer",
        "generate with a saved vector (its selected setting, or the one given)",
        'workbench steer one_sentence.safetensors "Describe a forest." --compare\n'
        "workbench steer one_sentence.safetensors --prompts-file prompts.txt --layer 14 --mode add "
        "--strength 2 --json",
    )
    p.add_argument("vector", type=path_arg, help="a vector file from `workbench extract`")
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="user messages")
    p.add_argument(
        "--prompts-file",
        type=path_arg,
        default=None,
        metavar="FILE",
        help="one prompt a line; - = stdin",
    )
    p.add_argument("--layer", type=int, default=None, help="(default: the vector's selection)")
    p.add_argument(
        "--mode",
        default=None,
        choices=choices(Mode),
        help="(default: the selection's, else project)",
    )
    p.add_argument("--strength", type=finite_float, default=None, help="x the mode's default")
    p.add_argument("--positions", default="all", choices=choices(Positions))
    gating = p.add_mutually_exclusive_group()
    gating.add_argument(
        "--gate",
        action="store_true",
        help="steer a prompt only if its last token's projection at the layer is on "
        "--gate-side of --gate-threshold (workbench.steering.gates)",
    )
    gating.add_argument(
        "--no-gate",
        action="store_true",
        help="steer ungated a setting that was chosen gated (evaluate --gate, a gated sweep)",
    )
    p.add_argument(
        "--gate-threshold",
        type=finite_float,
        default=None,
        help="with --gate (default: midway between the vector's mean projections)",
    )
    p.add_argument(
        "--gate-side", default=None, choices=choices(GateSide), help="with --gate (default: below)"
    )
    p.add_argument("--compare", action="store_true", help="also generate unsteered")
    count_option(p, "--max-new-tokens", 64)
    p.add_argument(
        "--temperature", type=finite_float, default=None, help="sample (default: greedy)"
    )
    p.add_argument("--top-p", type=finite_float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: drawn, printed)")
    count_option(p, "--batch-size", 16)
    add_model_options(p, None, VECTOR_MODEL)
    p.set_defaults(func=run_steer)


def _gate(args: argparse.Namespace) -> Any:
    """The gate --gate asks for; None without it (the selection's then holds)."""
    from workbench.steering.gates import Gate

    tuned = [
        f
        for f, v in [("--gate-threshold", args.gate_threshold), ("--gate-side", args.gate_side)]
        if v is not None
    ]
    if tuned and not args.gate:
        raise InvalidArgumentError(f"{' and '.join(tuned)} apply with --gate; pass --gate")
    if not args.gate:
        return None
    return Gate(threshold=args.gate_threshold, side=args.gate_side or "below")


def _term(vec: Any, args: argparse.Namespace) -> Any:
    """The steering term: the vector's selection unless a layer, mode or strength is given;
    gated as the selection was chosen, or as --gate / --no-gate say."""
    from workbench.steering.gates import Gate

    gate = _gate(args)
    term = _setting_term(vec, args)
    if gate is not None or args.no_gate:
        return dataclasses.replace(term, gate=gate)
    stored = (vec.selection or {}).get("gate")
    if term.gate is None and stored is not None:
        # --layer, --mode or --strength change part of a setting chosen gated: still gated.
        term = dataclasses.replace(term, gate=Gate(**stored))
    return term


def _setting_term(vec: Any, args: argparse.Namespace) -> Any:
    from workbench.steering.settings import Setting
    from workbench.steering.terms import SteeringTerm

    explicit = (args.layer, args.mode, args.strength) != (None, None, None)
    if not explicit and vec.selection is not None:
        if vec.selection.get("layer") is None:
            raise InvalidArgumentError(
                f"vector {str(args.vector)!r} holds the selection 'do not steer' (the unsteered "
                "baseline was best on validation); pass --layer (and --mode, --strength) to "
                "steer anyway"
            )
        return SteeringTerm(vec, positions=args.positions).concrete()
    # What is not given comes from the vector's selection (or its selected layer).
    sel = vec.selection if vec.selection and vec.selection.get("layer") is not None else {}
    layer = args.layer if args.layer is not None else sel.get("layer", vec.selected_layer)
    if layer is None:
        raise InvalidArgumentError(
            f"vector {str(args.vector)!r} holds no selected setting; pass --layer (one of "
            f"{list(vec.layers)}), or store one with `workbench select --vector ... --write`"
        )
    check_layers_in([layer], vec.layers, "--layer")
    mode = args.mode or sel.get("mode") or "project"
    if mode == "ablate" and args.strength is not None:
        raise InvalidArgumentError(f"--strength {args.strength} has no meaning with --mode ablate")
    strength = args.strength
    if strength is None:
        # The selection's strength belongs to its mode; another mode starts from x1.
        carried = sel.get("strength") if sel.get("mode") == mode else None
        strength = 1.0 if carried is None else carried
    term = Setting(layer, mode, None if mode == "ablate" else strength).term(vec)
    return dataclasses.replace(term, positions=args.positions)


def _describe(term: Any, gate: Any) -> dict[str, Any]:
    """The term as the JSON rows give it; `gate` is its resolved gate (or None)."""
    return {
        "layer": term.layer,
        "mode": term.mode,
        "weight": term.weight,
        "target": term.target,
        "positions": term.positions,
        "gate": None
        if gate is None
        else {"layer": gate.layer, "side": gate.side, "threshold": gate.threshold},
    }


def run_steer(args: argparse.Namespace) -> None:
    """Generate for each prompt with the vector's steering (and unsteered with --compare)."""
    from workbench.steering.gates import gate_count_line
    from workbench.steering.generation import Sampling

    prompts = read_prompts(args.prompts, args.prompts_file)
    vec = read_vector(args.vector)
    term = _term(vec, args)
    seed = None
    if args.temperature is not None:
        seed = args.seed if args.seed is not None else secrets.randbits(48)
        Sampling(args.temperature, args.top_p, seed)  # checks the values before loading
    elif args.seed is not None or args.top_p != 1.0:
        raise InvalidArgumentError("--seed and --top-p apply to sampling; pass --temperature")
    model = load_model_from(args, vec.model_name)
    check_fits(vec, args.vector, model)
    gate = None
    if term.gate is not None:
        from workbench.steering.gates import resolve_gate

        gate = resolve_gate(model, term.gate, vec, term.layer, vec.hook_name)
    steered, plain, gates = _generate(model, term, prompts, seed, args)
    if args.json:
        described = _describe(term, gate)
        for i, (prompt, text) in enumerate(zip(prompts, steered, strict=True)):
            row = {"prompt": prompt, "response": text, "steering": described, "seed": seed}
            if gate is not None:
                row["gate_on"] = gates[i]
            if args.compare:
                row["unsteered"] = plain[i]
            emit_json(row)
        return
    kind = {"add": "weight", "project": "target", "clamp": "target"}.get(term.mode)
    value = term.weight if term.mode == "add" else term.target
    amount = f" {kind} {value:.4g}" if kind and value is not None else ""
    sampled = "" if seed is None else f"; sampled, seed {seed}"
    gated = (
        ""
        if gate is None
        else f"; gated: steers prompts {gate.side} {gate.threshold:.4g} at layer {gate.layer} "
        f"({gate_count_line(sum(gates), len(gates))})"
    )
    say(
        f"steering: layer {term.layer} {term.mode}{amount}, positions {term.positions}"
        f"{sampled}{gated}"
    )
    for i, (prompt, text) in enumerate(zip(prompts, steered, strict=True)):
        say(f"\n> {prompt}" + ("" if gate is None or gates[i] else "  [gate off: unsteered]"))
        if args.compare:
            say(f"  unsteered: {plain[i]!r}")
            say(f"  steered:   {text!r}")
        else:
            say(f"  {text!r}")


def _generate(model: Any, term: Any, prompts: list[str], seed: int | None, args: Any) -> tuple:
    """Steered texts, unsteered texts (with --compare) and each prompt's gate decision."""
    from workbench.steering.generation import Sampling, generate

    steered, plain, gates = [], [], []
    starts = range(0, len(prompts), args.batch_size)
    for start in progress(starts, args, desc="steer", unit="batch"):
        chunk = prompts[start : start + args.batch_size]
        # Prompt i is sampled with seed + i whatever its batch, as generate does.
        sampling = None if seed is None else Sampling(args.temperature, args.top_p, seed + start)
        kw = {"max_new_tokens": args.max_new_tokens, "sampling": sampling, "batch_size": len(chunk)}
        out = generate(model, chunk, steering=term, return_tokens=True, **kw)
        steered += out.texts
        gates += [g[0] if g else None for g in out.gates]
        if args.compare:
            plain += generate(model, chunk, **kw)
    return steered, plain, gates
