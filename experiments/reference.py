"""The reference experiments on the embedded model (``make results``).

Select on the validation split, report on the test split. Every sweep writes its raw
rows to ``results/raw/*.jsonl`` as it goes, so an interrupted run resumes where it
stopped; the tables go to ``results/README.md`` and ``results/summary.json``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench import (
    base_queries,
    compute_instruction_vector,
    instruction,
    instruction_names,
    load_model,
    make_pairs,
    sweep,
)
from workbench.evaluation.protocol import ProtocolConfig, evaluate_instruction
from workbench.evaluation.sweeps import SweepPrompt
from workbench.vectors.ifeval import count_sentences, count_words


@dataclass(frozen=True)
class Config:
    """What `run` does; the defaults are what the README's table was made with."""

    instructions: tuple[str, ...] = tuple(instruction_names())
    n_train: int = 48
    n_val: int = 8
    n_test: int = 12
    max_new_tokens: int = 32
    layers: tuple[int, ...] = (8, 14, 20)
    modes: tuple[str, ...] = ("add", "project")
    strengths: tuple[float, ...] = (0.5, 1.0)
    length_strengths: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0)
    length_layer: int = 14
    length_tokens: int = 64
    keywords: tuple[str, ...] = ("ocean", "music", "garden")
    keyword_layer: int = 14
    batch_size: int = 48
    seed: int = 0  # greedy decoding: nothing is sampled, recorded for completeness
    extra: dict[str, Any] = field(default_factory=dict)


def _queries(split: str, n: int) -> list[str]:
    return [q.text for q in base_queries(split)[:n]]


def protocol_config(cfg: Config) -> ProtocolConfig:
    """The protocol's configuration for `cfg`."""
    return ProtocolConfig(
        layers=cfg.layers,
        modes=cfg.modes,
        strengths=cfg.strengths,
        train_pairs=cfg.n_train,
        val_queries=cfg.n_val,
        test_queries=cfg.n_test,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )


def run_instruction(model: Any, name: str, cfg: Config, raw: Path) -> dict[str, Any]:
    """Vector from train pairs, a selection per condition on validation, four settings
    on test."""
    result = evaluate_instruction(model, name, protocol_config(cfg), raw_dir=raw)
    return {
        "instruction": name,
        "instruction_id": result.vector.instruction_id,
        "selected": {
            c: {
                "layer": sel.setting.layer,
                "mode": sel.setting.mode,
                "strength": sel.setting.strength,
            }
            for c, sel in result.selections.items()
        },
        "validation": {c: sel.record() for c, sel in result.selections.items()},
        "test": {
            label: {"accuracy": t.strict, "loose": t.loose, "degenerate": t.degenerate}
            for label, t in result.test.items()
        },
    }


def run_length(model: Any, cfg: Config, raw: Path) -> list[dict[str, Any]]:
    """Mean words and sentences against add strength, for the length vectors."""
    out = []
    for name in ("concise", "verbose", "one_sentence"):
        vec = compute_instruction_vector(model, make_pairs(name, split="train", n=cfg.n_train))
        table = sweep(
            model,
            vec,
            _queries("test", cfg.n_test),
            layers=[cfg.length_layer],
            modes=["add"],
            strengths=list(cfg.length_strengths),
            baseline=False,
            max_new_tokens=cfg.length_tokens,
            batch_size=cfg.batch_size,
            progress=False,
            out=raw / f"length.{name}.jsonl",
        )
        for strength, group in table.groupby("strength"):
            out.append(
                {
                    "vector": name,
                    "strength": float(strength),
                    "words": float(group.response.map(count_words).mean()),
                    "sentences": float(group.response.map(count_sentences).mean()),
                    "follows": float(group.follows_strict.mean()),
                    "degenerate": float(group.degenerate.mean()),
                }
            )
    return out


def run_keywords(model: Any, cfg: Config, raw: Path) -> list[dict[str, Any]]:
    """Rate of the word with include / exclude steering (positive and negative add)."""
    out = []
    for word in cfg.keywords:
        vec = compute_instruction_vector(
            model,
            make_pairs(instruction("include_keyword", keyword=word), split="train", n=cfg.n_train),
        )
        prompts = [
            SweepPrompt(q, "keywords:existence", {"keywords": [word]})
            for q in _queries("test", cfg.n_test)
        ]
        table = sweep(
            model,
            vec,
            prompts,
            layers=[cfg.keyword_layer],
            modes=["add"],
            strengths=[-1.0, 1.0, 2.0],
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            progress=False,
            out=raw / f"keyword.{word}.jsonl",
        )
        for strength, group in table.groupby(table.strength.fillna(0.0)):
            out.append(
                {
                    "word": word,
                    "strength": float(strength),
                    "rate": float(group.follows_strict.mean()),
                    "degenerate": float(group.degenerate.mean()),
                }
            )
    return out


def run(cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Everything, resumable: a rerun reads back what `out_dir/raw` already holds."""
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model()
    summary: dict[str, Any] = {"config": asdict(cfg), "instructions": []}
    summary["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()

    def done(part: str) -> None:
        # The report is rewritten after every part, so a run cut short still shows
        # what it measured (and a rerun resumes from the raw files).
        summary["wall_s"] = time.perf_counter() - t0
        summary["completed"] = part
        write(summary, out_dir)
        print(f"{part}: {summary['wall_s'] / 60:.1f} min", flush=True)

    for name in cfg.instructions:
        summary["instructions"].append(run_instruction(model, name, cfg, raw))
        done(name)
    summary["length"] = run_length(model, cfg, raw)
    done("length")
    summary["keywords"] = run_keywords(model, cfg, raw)
    done("keywords")
    summary["composition"] = run_composition(model, cfg, summary)
    done("all")
    return summary


def run_composition(model: Any, cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A format vector with a length vector: each checker alone and together."""
    from workbench import PerRow, generate, score
    from workbench.steering.settings import Setting

    # Composition steers without the instruction in the prompt: that condition's choice.
    chosen = {r["instruction"]: r["selected"]["without"] for r in summary["instructions"]}
    pairs = [("lowercase", "one_sentence"), ("no_comma", "one_sentence")]
    queries = _queries("test", cfg.n_test)
    out = []
    for fmt, length in pairs:
        terms = {}
        for name in (fmt, length):
            vec = compute_instruction_vector(model, make_pairs(name, split="train", n=cfg.n_train))
            s = chosen.get(name) or {}
            # The selected setting at its selected strength; a vector with no selection
            # (the length vector, or "none") steers with add x1 at the length layer.
            if s.get("layer") is None:
                setting = Setting(cfg.length_layer, "add", 1.0)
            else:
                setting = Setting(s["layer"], s["mode"], s.get("strength"))
            terms[name] = setting.term(vec)
        ids = {n: (instruction(n).instruction_id, dict(instruction(n).kwargs)) for n in terms}
        conditions = {
            "none": [],
            fmt: [terms[fmt]],
            length: [terms[length]],
            "both": list(terms.values()),
        }
        for label, ts in conditions.items():
            texts = generate(
                model,
                queries,
                steering=PerRow([ts] * len(queries)),
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
            )
            follows = {n: [score(t, *ids[n]) for t in texts] for n in terms}
            joint = [a and b for a, b in zip(*follows.values(), strict=True)]
            out.append(
                {
                    "format": fmt,
                    "length": length,
                    "steering": label,
                    **{n: sum(v) / len(v) for n, v in follows.items()},
                    "joint": sum(joint) / len(joint),
                }
            )
    return out


def write(summary: dict[str, Any], out_dir: Path) -> None:
    """``summary.json`` and the markdown report, atomically."""
    from workbench.files import write_atomic

    from .report import render

    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    write_atomic(out_dir / "README.md", render(summary).encode())
