"""The reference experiments on the embedded model (``make results``).

Every number comes from the one protocol (`workbench.evaluation.protocol`), run at a
named preset:

- each bundled instruction but the keyword ones: `evaluate_instruction`, a selection
  per condition on the validation split, four test columns with 95% intervals and
  the paired effects; length instructions are steered with ``add`` (as the reference
  does), the others with the preset's modes;
- keywords, as the reference method does them: inclusion steers with ``add`` of the
  inclusion vector at late layers; exclusion ("do not use the word") subtracts that
  same inclusion vector (negative ``add`` strengths), both through the protocol;
- composition: each format vector at its own selected "without" setting (skipped when
  that is "do not steer") with the length vector at its own, on the test queries
  without any instruction: each checker alone and both, with intervals.

Every sweep writes its raw rows to ``results/raw/*.jsonl`` as it goes, and each
composition its rows to ``results/raw/composition.*.json``, so an interrupted run
resumes where it stopped; ``raw/timings.json`` adds up the seconds each part took over
the runs that produced ``raw/``, so a report made by resuming still states what the
numbers cost. The tables go to ``results/README.md`` and ``results/summary.json``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench import compute_instruction_vector, instruction, instruction_names, load_model
from workbench.evaluation.protocol import ProtocolConfig, ProtocolResult, evaluate_instruction
from workbench.evaluation.statistics import proportion
from workbench.evaluation.train_vectors import train_vector
from workbench.files import write_atomic
from workbench.vectors.pairs import base_queries, make_pairs

KEYWORD_INSTRUCTIONS = ("include_keyword", "exclude_keyword")
# Instruction-id families steered with `add` (every other one with the preset's modes).
LENGTH_FAMILIES = ("length", "length_constraints")


@dataclass(frozen=True)
class Config:
    """What `run` does: the preset, the fields changed beside it, and the parts.

    ``keyword_layers`` None means the last third of the depth, every other layer.
    """

    preset: str = "quick"
    changes: dict[str, Any] = field(default_factory=dict)
    instructions: tuple[str, ...] = tuple(
        n for n in instruction_names() if n not in KEYWORD_INSTRUCTIONS
    )
    keywords: tuple[str, ...] = ("ocean",)
    keyword_layers: tuple[int, ...] | None = None
    keyword_strengths: tuple[float, ...] = (0.5, 1.0)
    length: str = "one_sentence"
    seed: int = 0  # greedy decoding: nothing is sampled, recorded for completeness

    def protocol(self, **more: Any) -> ProtocolConfig:
        """The protocol's configuration: the preset, `changes`, then `more`."""
        return ProtocolConfig.from_preset(self.preset, **{**self.changes, **more})


# A minute-long run of every part on tiny budgets: that the code runs, not a result.
SMOKE = Config(
    changes={
        "train_pairs": 8,
        "val_queries": 4,
        "test_queries": 4,
        "layers": (12,),
        "strengths": (1.0,),
        "val_tokens": 8,
        "val_tokens_long": 8,
        "test_tokens": 8,
    },
    instructions=("lowercase", "one_sentence"),
    keyword_layers=(24,),
    keyword_strengths=(1.0,),
)


def result_row(name: str, result: ProtocolResult) -> dict[str, Any]:
    """One instruction's summary: selections, the four columns and the effects."""
    return {
        "instruction": name,
        "instruction_id": result.instruction.instruction_id,
        "kwargs": dict(result.instruction.kwargs),
        "selected": {
            c: {"layer": s.setting.layer, "mode": s.setting.mode, "strength": s.setting.strength}
            for c, s in result.selections.items()
        },
        "validation": {c: s.record() for c, s in result.selections.items()},
        "test": {
            k: {f: list(v) if isinstance(v, tuple) else v for f, v in asdict(t).items()}
            for k, t in result.test.items()
        },
        "effects": {c: {**asdict(e), "ci95": list(e.ci95)} for c, e in result.effects.items()},
    }


def keyword_layers(cfg: Config, n_layers: int) -> tuple[int, ...]:
    """The late layers keywords are swept at: the last third, every other layer."""
    if cfg.keyword_layers is not None:
        return cfg.keyword_layers
    return tuple(range(2 * n_layers // 3, n_layers, 2))


def run_keywords(model: Any, cfg: Config, raw: Path) -> list[dict[str, Any]]:
    """Per word: inclusion with its vector added, exclusion with it subtracted."""
    out = []
    layers = keyword_layers(cfg, model.cfg.n_layers)
    for word in cfg.keywords:
        include = instruction("include_keyword", keyword=word)
        config = cfg.protocol(layers=layers, modes=("add",), strengths=cfg.keyword_strengths)
        folder = raw / f"keyword.{word}"
        folder.mkdir(exist_ok=True)
        vec = train_vector(model, include, config.train_pairs, layers, folder=folder)
        result = evaluate_instruction(model, include, config, raw_dir=folder, vector=vec)
        out.append({"word": word, "kind": "include", **result_row("include_keyword", result)})
        exclude = instruction("exclude_keyword", keyword=word)
        minus = tuple(-s for s in cfg.keyword_strengths)
        config = cfg.protocol(layers=layers, modes=("add",), strengths=minus)
        result = evaluate_instruction(model, exclude, config, raw_dir=folder, vector=vec)
        out.append({"word": word, "kind": "exclude", **result_row("exclude_keyword", result)})
    return out


def run_composition(
    model: Any, cfg: Config, summary: dict[str, Any], raw: Path, timings: dict[str, float]
) -> tuple[list[dict[str, Any]], str | None]:
    """Each format vector at its selected setting with the length vector at its own;
    the rows, and why there are none when there are none.

    Each format's rows are kept in `raw` with the settings they were made at, and
    reused while those settings hold; `timings` gets the seconds of those computed.
    """
    from workbench.evaluation.quality import QualityThresholds, generate_with_quality
    from workbench.evaluation.scoring import score
    from workbench.evaluation.sweeps import LOOP_STOP
    from workbench.model.prompts import format_prompt
    from workbench.steering.settings import Setting
    from workbench.steering.terms import PerRow

    chosen = {r["instruction"]: r["selected"]["without"] for r in summary["instructions"]}
    if cfg.length not in chosen:
        return [], f"the length instruction {cfg.length} was not among those run"
    if chosen[cfg.length].get("layer") is None:
        return [], (
            f"the length vector ({cfg.length}) selected no setting of its own without the "
            "instruction, so there is nothing to compose with"
        )
    config = cfg.protocol()
    formats = [
        n
        for n, s in chosen.items()
        if s.get("layer") is not None
        and instruction(n).instruction_id.split(":")[0] not in LENGTH_FAMILIES
    ]
    if not formats:
        return [], "no format vector selected a setting of its own without the instruction"
    queries = [q.text for q in base_queries("test")[: config.test_queries]]
    texts = [format_prompt(model, q) for q in queries]

    def term(name: str) -> Any:
        s = chosen[name]
        pairs = make_pairs(name, split="train", n=config.train_pairs)
        vec = compute_instruction_vector(model, pairs, layers=[s["layer"]], progress=False)
        return Setting(s["layer"], s["mode"], s["strength"]).term(vec)

    out = []
    length_term = term(cfg.length)
    for fmt in formats:
        key = {
            "format": [fmt, chosen[fmt]],
            "length": [cfg.length, chosen[cfg.length]],
            "test_queries": config.test_queries,
            "test_tokens": config.test_tokens,
            "metric": config.metric,
            "thresholds": QualityThresholds().record(),
            "loop_stop": LOOP_STOP.record(),
        }
        cache = raw / f"composition.{fmt}.{cfg.length}.json"
        saved = json.loads(cache.read_text()) if cache.exists() else None
        if saved is not None and saved["key"] == json.loads(json.dumps(key)):
            out += saved["rows"]
            continue
        started = time.perf_counter()
        rows = []
        terms = {fmt: term(fmt), cfg.length: length_term}
        ids = {n: (instruction(n).instruction_id, dict(instruction(n).kwargs)) for n in terms}
        conditions = {
            "none": [],
            fmt: [terms[fmt]],
            cfg.length: [length_term],
            "both": [*terms.values()],
        }
        for label, ts in conditions.items():
            generated, quality = generate_with_quality(
                model,
                texts,
                PerRow([ts] * len(texts)),
                max_new_tokens=config.test_tokens,
                batch_size=config.batch_size,
                refill=True,
                loop_stop=LOOP_STOP,
            )
            loose = config.metric == "follows_loose"
            follows = {n: [score(t, *ids[n], loose=loose) for t in generated.texts] for n in terms}
            joint = [a and b for a, b in zip(*follows.values(), strict=True)]
            cells = {n: proportion(v) for n, v in {**follows, "joint": joint}.items()}
            degenerate = proportion(quality["degenerate"].tolist())
            rows.append(
                {
                    "format": fmt,
                    "length": cfg.length,
                    "steering": label,
                    "n": len(texts),
                    **{n: {"value": p.value, "ci95": list(p.ci95)} for n, p in cells.items()},
                    "degenerate": {"value": degenerate.value, "ci95": list(degenerate.ci95)},
                }
            )
        spent = time.perf_counter() - started
        record = {"key": key, "rows": rows, "seconds": spent}
        write_atomic(cache, json.dumps(record, indent=1).encode())
        timings[f"composition.{fmt}"] = spent
        out += rows
    return out, None


def run(cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Everything, resumable: a rerun reads back what `out_dir/raw` already holds."""
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings_file = raw / "timings.json"
    timings: dict[str, float] = (
        json.loads(timings_file.read_text()) if timings_file.exists() else {}
    )
    model = load_model()
    protocol = cfg.protocol()
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "protocol": protocol.record(),
        "described": protocol.describe(model.cfg.n_layers),
        "keyword_layers": list(keyword_layers(cfg, model.cfg.n_layers)),
        "instructions": [],
        "parts_s": {},
    }
    summary["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    summary["threads"] = torch.get_num_threads()

    def done(part: str, started: float | None) -> None:
        # The report is rewritten after every part, so a run cut short still shows
        # what it measured (and a rerun resumes from the raw files). A resumed part
        # adds only the seconds it took to read its rows back.
        if started is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - started
        write_atomic(timings_file, json.dumps(timings, indent=1, sort_keys=True).encode())
        composed = {f"composition.{r['format']}" for r in summary.get("composition", [])}
        summary["parts_s"] = {k: v for k, v in timings.items() if k in parts | composed}
        summary["compute_s"] = sum(summary["parts_s"].values())
        summary["wall_s"] = time.perf_counter() - t0
        summary["completed"] = part
        write(summary, out_dir)
        print(f"{part}: {summary['wall_s'] / 60:.1f} min", flush=True)

    parts = {*cfg.instructions, "keywords"}
    for name in cfg.instructions:
        started = time.perf_counter()
        config = protocol
        if instruction(name).instruction_id.split(":")[0] in LENGTH_FAMILIES:
            # The reference steers length with the vector added, not projected.
            config = cfg.protocol(modes=("add",))
        result = evaluate_instruction(model, name, config, raw_dir=raw)
        summary["instructions"].append(result_row(name, result))
        done(name, started)
    started = time.perf_counter()
    summary["keywords"] = run_keywords(model, cfg, raw)
    done("keywords", started)
    summary["composition"], summary["composition_note"] = run_composition(
        model, cfg, summary, raw, timings
    )
    done("all", None)
    return summary


def write(summary: dict[str, Any], out_dir: Path) -> None:
    """``summary.json`` and the markdown report, atomically."""
    from .report import render

    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    write_atomic(out_dir / "README.md", render(summary).encode())
