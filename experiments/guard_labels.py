"""Responses for the quality guard's labelled set (issue 17, section 4).

``python -m experiments.guard_labels generate OUT.jsonl`` runs sweeps on the embedded
model (`workbench.load_model()`, no network) over settings that cover the whole range
of quality: unsteered, ``project`` ×1 at two layers, ``add`` ×1 (×2 for one vector)
at two layers and ``add`` at 3×-8× at the same layers (the strong ones turn answers into
loops and gibberish). Each of four bundled vectors (lowercase, no_comma, bullets,
one_sentence) is swept over its own seven prompts: four validation queries, a list
query, a code request and the same code or list request with the instruction
appended, so normal lists and code are in the set. Greedy, 96 new tokens; about
eight minutes on two CPU cores (455 s measured). Each row keeps the response, prompt, instruction,
setting (layer, mode, strength) and the current guard's fields as sweep rows carry
them (degenerate, repeated_ngram_share, perplexity, n_tokens, empty, truncated).

``python -m experiments.guard_labels label RAW.jsonl LABELS.tsv OUT.jsonl`` joins
the labels (one line per row: ``id<TAB>0|1<TAB>note``) to the responses and writes
``tests/data/degenerate_labels.jsonl``. The committed labels live only in that file
(``degenerate``, ``note``); its ``id`` is the row's place in the generated file.

How the committed set was labelled: by a helper session reading each response
(2026-12-02), without looking at the guard's columns. ``degenerate`` is true when a
reader would call the answer broken: a loop or heavy repetition, gibberish, word
salad, or an empty or near-empty answer. It is false for normal prose, lists and
code, even when the answer fails the instruction, is cut at the token limit or is
wrong or dull. Borderline cases carry a ``note``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# Per vector: (mode, layers, strengths) sweeps after the unsteered baseline. The
# strong strengths differ per vector so that the set holds the whole way from
# "a little off" to "pure loop".
PLAN: dict[str, list[tuple[str, list[int], list[float]]]] = {
    "lowercase": [("project", [10, 18], [1.0]), ("add", [8, 16], [1.0, 4.0])],
    "no_comma": [("project", [12, 16], [1.0]), ("add", [14, 22], [1.0, 6.0])],
    "bullets": [("project", [14, 20], [1.0]), ("add", [10, 24], [1.0, 3.0])],
    "one_sentence": [("project", [8, 22], [1.0]), ("add", [12, 18], [2.0, 8.0])],
}

LIST_QUERIES = [
    "List five fruits that are high in vitamin C.",
    "Name some famous landmarks in Europe.",
    "Give me a list of ten things to pack for a camping trip.",
    "Name some birds that migrate long distances.",
]
CODE_QUERIES = [
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that reverses a string.",
    "Write a short Python script that counts the words in a text file.",
    "Write a JavaScript function that returns the largest number in an array.",
]
MAX_NEW_TOKENS = 96
FIELDS = (
    "prompt",
    "instruction",
    "with_instruction",
    "kind",
    "layer",
    "mode",
    "strength",
    "guard_degenerate",
    "repeated_ngram_share",
    "perplexity",
    "n_tokens",
    "empty",
    "truncated",
)


def _prompts(name: str, i: int) -> list[tuple[str, Any, str, bool]]:
    """(query kind, sweep prompt, the query without instruction, with instruction?)."""
    from workbench import base_queries, make_pairs
    from workbench.evaluation.sweeps import SweepPrompt

    val = [q.text for q in base_queries("validation") if q.category != "list"]
    plain = val[4 * i : 4 * i + 4]
    out: list[tuple[str, Any, str, bool]] = [("prose", q, q, False) for q in plain]
    out.append(("list", LIST_QUERIES[i], LIST_QUERIES[i], False))
    out.append(("code", CODE_QUERIES[i], CODE_QUERIES[i], False))
    extra = CODE_QUERIES[(i + 1) % 4] if i % 2 else LIST_QUERIES[(i + 1) % 4]
    pair = make_pairs(name, queries=[extra])[0]
    kind = "code" if i % 2 else "list"
    out.append(
        (kind, SweepPrompt(pair.with_instruction, pair.instruction_id, pair.kwargs), extra, True)
    )
    return out


def generate_rows(model: Any) -> list[dict[str, Any]]:
    """Every response of the plan, as dicts with `FIELDS` and ``response``."""
    from workbench import compute_instruction_vector, make_pairs, sweep

    rows: list[dict[str, Any]] = []
    for i, (name, sweeps) in enumerate(PLAN.items()):
        vec = compute_instruction_vector(model, make_pairs(name, n=24), progress=False)
        prompts = _prompts(name, i)
        for j, (mode, layers, strengths) in enumerate(sweeps):
            table = sweep(
                model,
                vec,
                [p for _, p, _, _ in prompts],
                layers=layers,
                modes=[mode],
                strengths=strengths,
                baseline=j == 0,
                max_new_tokens=MAX_NEW_TOKENS,
                batch_size=32,
                progress=False,
            )
            for r in table.itertuples():
                kind, _, _, with_instr = prompts[r.prompt_index]
                steered = r.layer is not None and str(r.layer) != "<NA>"
                rows.append(
                    {
                        "response": r.response,
                        "prompt": r.prompt,
                        "instruction": name,
                        "with_instruction": with_instr,
                        "kind": kind,
                        "layer": int(r.layer) if steered else None,
                        "mode": r.mode if steered else None,
                        "strength": float(r.strength) if steered else None,
                        "guard_degenerate": bool(r.degenerate),
                        "repeated_ngram_share": float(r.repeated_ngram_share),
                        "perplexity": float(r.perplexity),
                        "n_tokens": int(r.n_tokens),
                        "empty": bool(r.empty),
                        "truncated": bool(r.truncated),
                    }
                )
    for k, row in enumerate(rows):
        row["id"] = k
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def join_labels(rows: list[dict[str, Any]], labels_tsv: Path) -> list[dict[str, Any]]:
    """Rows with ``degenerate`` and ``note`` from a ``id<TAB>0|1<TAB>note`` file; every
    row must have exactly one label."""
    labels: dict[int, tuple[bool, str]] = {}
    for line in labels_tsv.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        labels[int(parts[0])] = (
            parts[1].strip() == "1",
            parts[2].strip() if len(parts) > 2 else "",
        )
    missing = [r["id"] for r in rows if r["id"] not in labels]
    if missing:
        raise SystemExit(f"rows without a label: {missing}")
    out = []
    for r in rows:
        degenerate, note = labels[r["id"]]
        out.append(
            {"id": r["id"], "response": r["response"], "degenerate": degenerate, "note": note}
            | {k: r[k] for k in FIELDS}
        )
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["generate"] and len(argv) == 2:
        from workbench import load_model

        t = time.time()
        rows = generate_rows(load_model())
        write_jsonl(rows, Path(argv[1]))
        print(f"{len(rows)} responses in {time.time() - t:.0f} s -> {argv[1]}")
    elif argv[:1] == ["label"] and len(argv) == 4:
        rows = join_labels(read_jsonl(Path(argv[1])), Path(argv[2]))
        write_jsonl(rows, Path(argv[3]))
        print(f"{len(rows)} labelled rows -> {argv[3]}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
