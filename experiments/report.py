"""The markdown report of the reference experiments (``results/README.md``)."""

from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _setting(s: dict[str, Any]) -> str:
    if s["layer"] is None:
        return "none (baseline best)"
    strength = "" if s["strength"] is None else f" ×{s['strength']:g}"
    return f"L{s['layer']} {s['mode']}{strength}"


def render(summary: dict[str, Any]) -> str:
    """Markdown tables from `reference.run`'s summary."""
    cfg = summary["config"]
    lines = [
        "# Reference experiments on the embedded model",
        "",
        f"SmolLM2-135M-Instruct, bridge backend, greedy decoding (seed {cfg['seed']} recorded, "
        f"nothing sampled). Vectors from {cfg['n_train']} train pairs; a selection per "
        f"condition on {cfg['n_val']} validation queries, without and with the instruction "
        f"(layers {cfg['layers']}, "
        f"modes {cfg['modes']}, strengths {cfg['strengths']} × each mode's default); report on "
        f"{cfg['n_test']} test queries, {cfg['max_new_tokens']} new tokens. Wall time "
        f"{summary['wall_s'] / 60:.1f} min on {summary['machine']} (completed through: "
        f"{summary.get('completed')}). Regenerate with `make results`.",
        "",
        "Accuracy is IFEval strict (degenerate share in brackets). Each condition's "
        "steered column applies that condition's selection (without / with).",
        "",
        "| instruction | selected | no instr. | no instr. + steer | instr. | instr. + steer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["instructions"]:
        t = r["test"]
        cells = [
            f"{_pct(t[k]['accuracy'])} ({_pct(t[k]['degenerate'])})"
            for k in ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")
        ]
        chosen = " / ".join(_setting(r["selected"][c]) for c in ("without", "with"))
        lines.append(f"| {r['instruction']} | {chosen} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Length against `add` strength (layer {cfg['length_layer']}, "
        f"{cfg['length_tokens']} new tokens, test queries without instruction)",
        "",
        "| vector | strength | mean words | mean sentences | follows | degenerate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary.get("length", []):
        lines.append(
            f"| {r['vector']} | {r['strength']:g} | {r['words']:.1f} | {r['sentences']:.2f} | "
            f"{_pct(r['follows'])} | {_pct(r['degenerate'])} |"
        )
    lines += [
        "",
        f"## Keywords: rate of the word against `add` strength (layer {cfg['keyword_layer']}; "
        "negative strength subtracts the include vector)",
        "",
        "| word | strength | rate | degenerate |",
        "| --- | --- | --- | --- |",
    ]
    for r in summary.get("keywords", []):
        lines.append(
            f"| {r['word']} | {r['strength']:g} | {_pct(r['rate'])} | {_pct(r['degenerate'])} |"
        )
    lines += [
        "",
        "## Composition: a format vector with a length vector (test queries, no instruction)",
        "",
        "| format | length | steering | format follows | length follows | both |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary.get("composition", []):
        lines.append(
            f"| {r['format']} | {r['length']} | {r['steering']} | {_pct(r[r['format']])} | "
            f"{_pct(r[r['length']])} | {_pct(r['joint'])} |"
        )
    return "\n".join(lines) + "\n"
