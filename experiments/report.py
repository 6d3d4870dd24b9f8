"""The markdown report of the reference experiments (``results/README.md``)."""

from __future__ import annotations

from typing import Any

COLUMNS = ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")


def _setting(s: dict[str, Any]) -> str:
    if s["layer"] is None:
        return "none"
    strength = "" if s["strength"] is None else f" ×{s['strength']:g}"
    return f"L{s['layer']} {s['mode']}{strength}"


def _share(value: float, ci95: Any) -> str:
    return f"{value:.2f} [{ci95[0]:.2f}, {ci95[1]:.2f}]"


def _cell(t: dict[str, Any]) -> str:
    return (
        f"{_share(t['accuracy'], t['ci95'])}; clean {t['clean_accuracy']:.2f}; "
        f"degen. {t['degenerate']:.2f}"
    )


def _effect(e: dict[str, Any]) -> str:
    return (
        f"{e['gain']:+.2f} [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}] "
        f"({e['fixed']}/{e['broken']}, p={e['p_value']:.2g})"
    )


def _protocol_table(rows: list[dict[str, Any]], first: str) -> list[str]:
    lines = [
        f"| {first} | selected (without / with) | no instr. | no instr. + steer | instr. | "
        "instr. + steer | gain without | gain with |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        chosen = " / ".join(_setting(r["selected"][c]) for c in ("without", "with"))
        cells = [_cell(r["test"][k]) for k in COLUMNS]
        gains = [_effect(r["effects"][c]) for c in ("without", "with")]
        label = r["instruction"] if "word" not in r else f"{r['kind']} '{r['word']}'"
        lines.append(f"| {label} | {chosen} | " + " | ".join(cells + gains) + " |")
    return lines


def render(summary: dict[str, Any]) -> str:
    """Markdown tables from `reference.run`'s summary."""
    cfg = summary["config"]
    protocol = summary["protocol"]
    n = summary["instructions"][0]["test"]["instruction"]["n"] if summary["instructions"] else 0
    lines = [
        "# Reference experiments on the embedded model",
        "",
        f"SmolLM2-135M-Instruct, bridge backend, greedy decoding (seed {cfg['seed']} recorded, "
        f"nothing sampled). {summary['described']}.",
        "",
        f"Compute time {summary['compute_s'] / 60:.1f} min on {summary['machine']}, summed "
        "over the runs that produced `raw/` (completed through: "
        f"{summary.get('completed')}; this run {summary['wall_s'] / 60:.1f} min); per part "
        "in `summary.json`. Regenerate with `make results`; a rerun resumes from `raw/`.",
        "",
        f"Each cell: {protocol['metric']} accuracy on the {n} test queries [95% Wilson "
        "interval]; clean = follows and not degenerate; degen. = the quality guard's share. "
        "Each condition's steered column applies that condition's own selection. A gain is "
        "steered minus unsteered on the same prompts [95% paired interval, Newcombe] "
        "(prompts fixed/broken, exact McNemar p). Length instructions are swept with `add` "
        "instead of the preset's modes.",
        "",
        *_protocol_table(summary["instructions"], "instruction"),
    ]
    if summary.get("keywords"):
        lines += [
            "",
            f"## Keywords (layers {summary['keyword_layers']}, `add`; exclusion subtracts "
            "the inclusion vector)",
            "",
            *_protocol_table(summary["keywords"], "keyword"),
        ]
    if "composition" in summary:
        lines += ["", "## Composition (test queries, no instruction in the prompt)", ""]
        if not summary["composition"]:
            lines.append(f"Not run: {summary.get('composition_note')}.")
        else:
            lines += [
                "| format | length | steering | format follows | length follows | both | "
                "degenerate |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
        for r in summary["composition"]:
            cells = [r[r["format"]], r[r["length"]], r["joint"], r["degenerate"]]
            text = " | ".join(_share(c["value"], c["ci95"]) for c in cells)
            lines.append(f"| {r['format']} | {r['length']} | {r['steering']} | {text} |")
    return "\n".join(lines) + "\n"


# The README's copy of the results lies between these lines, rewritten by
# ``python -m experiments --readme README.md`` (``make results``).
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _move(plain: dict[str, Any], steered: dict[str, Any]) -> str:
    return (
        f"{plain['accuracy']:.2f} → {steered['accuracy']:.2f} "
        f"(clean {plain['clean_accuracy']:.2f} → {steered['clean_accuracy']:.2f})"
    )


def render_short(summary: dict[str, Any]) -> str:
    """The README's table: per instruction the selections, the accuracy unsteered →
    steered in each condition, and the paired gains with their intervals."""
    n = summary["instructions"][0]["test"]["instruction"]["n"] if summary["instructions"] else 0
    lines = [
        f"{summary['described']}. {n} test queries a column; compute "
        f"{summary['compute_s'] / 60:.0f} min on {summary['machine']} "
        f"({summary.get('threads', '?')} threads).",
        "",
        "| instruction | selected (without / with) | no instr.: plain → steered | "
        "instr.: plain → steered | gain without | gain with |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in [*summary["instructions"], *summary.get("keywords", [])]:
        chosen = " / ".join(_setting(r["selected"][c]) for c in ("without", "with"))
        label = r["instruction"] if "word" not in r else f"{r['kind']} '{r['word']}'"
        t = r["test"]
        moves = [_move(t[a], t[a + "+steer"]) for a in COLUMNS[::2]]
        gains = [_effect(r["effects"][c]) for c in ("without", "with")]
        lines.append(f"| {label} | {chosen} | " + " | ".join(moves + gains) + " |")
    return "\n".join(lines) + "\n"


def splice(text: str, block: str) -> str:
    """`text` with what lies between `BEGIN` and `END` replaced by `block`.

    Example:
        >>> splice(f"a\\n{BEGIN}\\nold\\n{END}\\nb\\n", "new\\n")
        'a\\n<!-- results:begin -->\\nnew\\n<!-- results:end -->\\nb\\n'
    """
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the file must hold {BEGIN!r} once, then {END!r} once")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}{END}{tail}"
