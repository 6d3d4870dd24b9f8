"""``python -m experiments.conditional [--out results/conditional]``: conditional
steering on the embedded model, measured.

1. The gate on the validation split: per format instruction and swept layer, how many
   of the validation prompts the default gate would steer, with and without the
   instruction in the prompt (one prompt pass each; nothing is decoded past one token).
2. The protocol with three candidates on the same train vector, prompts and budgets:
   ``project``, ``clamp``, and gated ``project`` (`ProtocolConfig.gate`). Each
   candidate's layer and strength are selected on validation, per condition.

Everything is written to ``{out}/conditional.json`` and ``{out}/README.md``; each
protocol run keeps its raw rows under ``{out}/raw/{candidate}`` and resumes from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from workbench import PerRow, SteeringTerm, generate, load_model, make_pairs
from workbench.evaluation.protocol import SETTINGS, ProtocolConfig, evaluate_instruction, raw_file
from workbench.evaluation.statistics import paired_effect, wilson
from workbench.evaluation.sweep_files import merge_sweeps
from workbench.evaluation.train_vectors import train_vector
from workbench.files import write_atomic
from workbench.steering.gates import Gate
from workbench.vectors.pairs import instruction

# The bundled format instructions (IFEval's change_case, punctuation, detectable_format,
# startend and language groups), in the order they were run.
INSTRUCTIONS = (
    "no_comma",
    "bullets",
    "highlights",
    "title",
    "lowercase",
    "capitals",
    "quotation",
    "end_phrase",
    "start_word",
    "json",
    "french",
    "spanish",
    "german",
)
LAYERS = (6, 14, 22)
METRIC = "follows_loose"  # the quick preset's metric
CANDIDATES = {
    "project": {"modes": ("project",)},
    "clamp": {"modes": ("clamp",)},
    "gated project": {"modes": ("project",), "gate": True},
}
# The quick preset, cut to fit one working session on 2 CPU cores: three layers, 12
# validation queries, shorter budgets. The test split is whole (24 queries).
CHANGES = {
    "layers": LAYERS,
    "val_queries": 12,
    "val_tokens": 96,
    "val_tokens_long": 96,
    "test_tokens": 128,
}


def gate_counts(model, names, folder: Path) -> list[dict]:
    """Per instruction and layer: prompts the default gate steers, with / without."""
    rows = []
    for name in names:
        instr = instruction(name)
        vec = train_vector(model, instr, 108, list(LAYERS), folder=folder)
        pairs = make_pairs(instr, split="validation")
        prompts = [p.with_instruction for p in pairs] + [p.without_instruction for p in pairs]
        n = len(pairs)
        terms = [SteeringTerm(vec, layer=layer, gate=Gate()) for layer in LAYERS]
        out = generate(
            model,
            prompts * len(LAYERS),
            steering=PerRow([t for t in terms for _ in prompts]),
            max_new_tokens=1,
            return_tokens=True,
        )
        for k, layer in enumerate(LAYERS):
            on = [g[0] for g in out.gates[k * 2 * n : (k + 1) * 2 * n]]
            rows.append(
                {
                    "instruction": name,
                    "layer": layer,
                    "n": n,
                    "on_with": sum(on[:n]),
                    "on_without": sum(on[n:]),
                }
            )
            print(f"gate {name} L{layer}: with {sum(on[:n])}/{n}, without {sum(on[n:])}/{n}")
    return rows


def _steered(folder: Path, candidate: str, name: str, condition: str) -> dict[int, dict]:
    """The steered test rows of one protocol run, by prompt index."""
    raw = folder / "raw" / candidate.replace(" ", "_")
    table = merge_sweeps([raw / raw_file(name, f"test.{condition}")])
    rows = table[table["layer"].notna()]
    return {int(r["prompt_index"]): r for r in rows.to_dict("records")}


def versus_project(folder: Path, candidate: str, name: str) -> dict:
    """Per condition: `candidate`'s steered answers against `project`'s on the same test
    prompts, as paired effects on accuracy and on clean accuracy."""
    out = {}
    for condition, label in (("without", "no_instruction"), ("with", "instruction")):
        ours = _steered(folder, candidate, name, label)
        theirs = _steered(folder, "project", name, label)
        if sorted(ours) != sorted(theirs):
            raise ValueError(f"{name} {condition}: the two runs answered other prompts")
        keys = sorted(ours)
        follows = [bool(theirs[k][METRIC]) for k in keys], [bool(ours[k][METRIC]) for k in keys]
        clean = [
            [bool(r[k][METRIC]) and not bool(r[k]["degenerate"]) for k in keys]
            for r in (theirs, ours)
        ]
        out[condition] = {
            "raw": dataclasses.asdict(paired_effect(*follows)),
            "clean": dataclasses.asdict(paired_effect(*clean)),
        }
    return out


def protocol_runs(model, names, folder: Path, done: Callable[[dict], None]) -> None:
    """Run every candidate on every instruction in `names`, passing each row to `done`."""
    for name in names:
        instr = instruction(name)
        vec = train_vector(model, instr, 108, list(LAYERS), folder=folder / "vectors")
        for candidate, fields in CANDIDATES.items():
            config = ProtocolConfig.from_preset("quick", **CHANGES, **fields)
            raw = folder / "raw" / candidate.replace(" ", "_")
            raw.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            result = evaluate_instruction(model, instr, config, raw_dir=raw, vector=vec)
            row = {
                "instruction": name,
                "candidate": candidate,
                "seconds": time.perf_counter() - t0,
                "described": config.describe(model.cfg.n_layers),
                "selected": {
                    c: dataclasses.asdict(s.setting) for c, s in result.selections.items()
                },
                "test": {k: dataclasses.asdict(result.test[k]) for k in SETTINGS},
                "effects": {c: dataclasses.asdict(e) for c, e in result.effects.items()},
            }
            if candidate != "project":
                row["vs_project"] = versus_project(folder, candidate, name)
            done(row)
            print(json.dumps({k: row[k] for k in ("instruction", "candidate", "seconds")}))


def _label(setting: dict) -> str:
    if setting["layer"] is None:
        return "none"
    strength = "" if setting["strength"] is None else f" ×{setting['strength']:g}"
    return f"L{setting['layer']} {setting['mode']}{strength}"


def _share(t: dict, key: str = "accuracy", ci: str = "ci95") -> str:
    return f"{t[key]:.2f} [{t[ci][0]:.2f}, {t[ci][1]:.2f}]"


def _gain(e: dict) -> str:
    return (
        f"{e['gain']:+.2f} [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}] "
        f"({e['fixed']}/{e['broken']}, p={e['p_value']:.2g})"
    )


def _gate(t: dict) -> str:
    return "–" if t.get("gate_on") is None else f"{t['gate_on']}/{t['n']}"


def _excludes_zero(effect: dict) -> int:
    """+1 / -1 where the 95% interval lies above / below 0, else 0."""
    low, high = effect["ci95"]
    return 1 if low > 0 else -1 if high < 0 else 0


def _tally(effects: list[dict]) -> str:
    signs = [_excludes_zero(e) for e in effects]
    return f"{signs.count(1)} up, {signs.count(-1)} down, {signs.count(0)} neither"


def findings(summary: dict) -> list[str]:
    """The comparison's findings, counted from `summary` (bullets of the README)."""
    runs = summary.get("protocol", [])
    names = list(dict.fromkeys(r["instruction"] for r in runs))
    lines = [f"Counted over the {len(names)} instructions measured ({', '.join(names)}):", ""]
    for candidate in ("clamp", "gated project"):
        rows = [r for r in runs if r["candidate"] == candidate and "vs_project" in r]
        if not rows:
            continue
        vs = {c: [r["vs_project"][c] for r in rows] for c in ("with", "without")}
        harm = [r["effects"]["with"] for r in rows]
        lines += [
            f"- **{candidate} against project**, with the instruction: raw "
            f"{_tally([v['raw'] for v in vs['with']])}; clean "
            f"{_tally([v['clean'] for v in vs['with']])}. Without it: raw "
            f"{_tally([v['raw'] for v in vs['without']])}; clean "
            f"{_tally([v['clean'] for v in vs['without']])}. Against the instruction "
            f"alone (instr. + steer − instr.): {_tally(harm)}.",
        ]
    gated = [r for r in runs if r["candidate"] == "gated project"]
    for condition, key in (("with", "instruction+steer"), ("without", "no_instruction+steer")):
        counted = [r["test"][key] for r in gated if r["test"][key].get("gate_on") is not None]
        if counted:
            k, n = sum(t["gate_on"] for t in counted), sum(t["n"] for t in counted)
            share = wilson(k, n)
            lines.append(
                f"- **The gate on the test prompts {condition} the instruction**: on for {k} "
                f"of {n} ({share.value:.2f} [{share.low:.2f}, {share.high:.2f}]), over "
                f"the {len(counted)} instructions whose selection steered there."
            )
    return lines + [""]


def _vs(e: dict) -> str:
    return (
        f"{e['gain']:+.2f} [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}] ({e['fixed']}/{e['broken']})"
    )


def render(summary: dict) -> str:
    """The markdown tables of `summary` (what `main` writes to README.md)."""
    lines = [
        "# Conditional steering on the embedded model",
        "",
        "Written by `python -m experiments.conditional` (SmolLM2-135M-Instruct, 2 CPU "
        "threads; greedy). The raw rows of every protocol run are under `raw/`, the train "
        "vectors under `vectors/`, the numbers in `conditional.json`.",
        "",
    ]
    if "gate_counts" in summary:
        lines += [
            "Prompts the default gate steers, of the 24 validation queries, with / without "
            "the instruction in the prompt (vector from 108 train pairs):",
            "",
            "| instruction | " + " | ".join(f"L{layer}" for layer in summary["layers"]) + " |",
            "| --- |" + " --- |" * len(summary["layers"]),
        ]
        by_name: dict[str, dict] = {}
        for r in summary["gate_counts"]:
            by_name.setdefault(r["instruction"], {})[r["layer"]] = r
        for name, layers in by_name.items():
            cells = [f"{r['on_with']} / {r['on_without']}" for r in layers.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    runs = summary.get("protocol", [])
    if runs:
        lines += [
            runs[0]["described"].replace("modes project; ", "") + ".",
            "",
            "Accuracy (follows_loose) on the 24 test queries [95% Wilson]; clean = follows "
            "and not degenerate; gain = steered − plain on the same prompts [95% paired "
            "interval] (fixed/broken, exact McNemar p); gate = prompts the gate steered.",
            "",
            "| instruction | candidate | selected (without / with) | no instr. + steer "
            "(plain → steered; clean) | gain without | gate without | instr. + steer "
            "(plain → steered; clean) | gain with | gate with |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in runs:
            t, e, s = r["test"], r["effects"], r["selected"]
            lines.append(
                f"| {r['instruction']} | {r['candidate']} | {_label(s['without'])} / "
                f"{_label(s['with'])} | {t['no_instruction']['accuracy']:.2f} → "
                f"{_share(t['no_instruction+steer'])}; clean "
                f"{t['no_instruction']['clean_accuracy']:.2f} → "
                f"{_share(t['no_instruction+steer'], 'clean_accuracy', 'clean_ci95')} | "
                f"{_gain(e['without'])} | {_gate(t['no_instruction+steer'])} | "
                f"{t['instruction']['accuracy']:.2f} → {_share(t['instruction+steer'])}; clean "
                f"{t['instruction']['clean_accuracy']:.2f} → "
                f"{_share(t['instruction+steer'], 'clean_accuracy', 'clean_ci95')} | "
                f"{_gain(e['with'])} | {_gate(t['instruction+steer'])} |"
            )
        compared = [r for r in runs if "vs_project" in r]
        if compared:
            lines += [
                "",
                "Against `project` on the same test prompts: the candidate's steered answers "
                "− project's steered answers [95% paired interval] (fixed/broken):",
                "",
                "| instruction | candidate | no instr.: raw | no instr.: clean | instr.: raw "
                "| instr.: clean |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for r in compared:
                v = r["vs_project"]
                lines.append(
                    f"| {r['instruction']} | {r['candidate']} | {_vs(v['without']['raw'])} | "
                    f"{_vs(v['without']['clean'])} | {_vs(v['with']['raw'])} | "
                    f"{_vs(v['with']['clean'])} |"
                )
            lines += ["", *findings(summary)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.conditional")
    parser.add_argument("--out", type=Path, default=Path("results/conditional"))
    parser.add_argument("--instructions", default=",".join(INSTRUCTIONS))
    parser.add_argument("--skip-gate-counts", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.instructions.split(",")
    for name in names:
        instruction(name)  # an unknown name fails here, before any compute
    model = load_model()
    path = args.out / "conditional.json"
    # Rows already measured are kept: a run on some instructions adds to the others'.
    summary: dict = json.loads(path.read_text()) if path.exists() else {}
    summary["layers"] = list(LAYERS)
    summary["changes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in CHANGES.items()}

    def save() -> None:
        write_atomic(path, json.dumps(summary, indent=1).encode())
        write_atomic(args.out / "README.md", render(summary).encode())

    if not args.skip_gate_counts:
        counted = {r["instruction"] for r in summary.get("gate_counts", [])}
        todo = [n for n in names if n not in counted]
        summary.setdefault("gate_counts", []).extend(gate_counts(model, todo, args.out / "vectors"))
        save()

    def done(row: dict) -> None:
        rows = summary.setdefault("protocol", [])
        keys = [(r["instruction"], r["candidate"]) for r in rows]
        key = (row["instruction"], row["candidate"])
        if key in keys:
            # A resumed run reads its rows back; the compute was the first run's.
            old = rows[keys.index(key)]
            row["seconds"] = max(row["seconds"], old["seconds"])
            rows[keys.index(key)] = row
        else:
            rows.append(row)
        save()

    protocol_runs(model, names, args.out, done)
    print(f"wrote {path} and README.md")


if __name__ == "__main__":
    main()
