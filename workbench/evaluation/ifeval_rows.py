"""Test prompts of one's own: IFEval-format JSONL rows, grouped by bundled instruction.

Each line is one JSON object in the format of IFEval's ``input_data.jsonl``:

- ``prompt``: the prompt with its instruction(s), as the "with instruction" settings
  see it;
- ``instruction_id_list`` and ``kwargs``: the IFEval ids the response is checked by,
  and one kwargs object per id (keys set to null are dropped, as in the Hugging Face
  copy of IFEval, which lists every key for every id);
- ``prompt_without_instruction`` (optional): the same request with no instruction,
  for the "no instruction" settings;
- ``key`` (optional): the row's own id.

A row is read once per id it lists, each time scored by that id's checker with its own
kwargs. Each id is mapped to the bundled instruction (`workbench.instruction_names`)
whose vector steers it: the one with that IFEval id, or, where several share it
(``language:response_language``, ``length_constraints:number_sentences``), the one
whose fixed kwargs agree with the row's (``language: fr`` is ``french``; a fixed
``num_sentences: 2`` beats a templated one). An id no bundled instruction agrees with
is unsupported: refused by name, or, with ``skip_unsupported=True``, left out and
listed in `IFEvalRows.skipped`. A malformed line is refused in one line that names the
file and the line number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.errors import InvalidArgumentError, WorkbenchError
from workbench.files import user_path
from workbench.options import check_bool
from workbench.vectors.ifeval import check_instruction
from workbench.vectors.pairs import Instruction, bundled_instruction, instruction_names

_TEMPLATED = re.compile(r"\{\w+\}")


@dataclass(frozen=True)
class IFEvalItem:
    """One (row, instruction id) of a test file: the prompts and how to check the answer."""

    prompt: str
    prompt_without_instruction: str | None
    instruction_id: str
    kwargs: Mapping[str, Any]
    line: int
    key: Any = None


@dataclass(frozen=True)
class IFEvalRows:
    """A test file read: items per bundled instruction name, in the file's order, and the
    unsupported ids left out (with how many rows listed each)."""

    path: str
    groups: Mapping[str, tuple[IFEvalItem, ...]]
    skipped: Mapping[str, int]


def _fixes(instr: Instruction) -> dict[str, Any]:
    """The kwargs a bundled instruction fixes (not filled from a placeholder)."""
    return {
        k: v
        for k, v in instr.kwargs.items()
        if not (isinstance(v, str) and _TEMPLATED.search(v))
        and not (
            isinstance(v, list) and any(isinstance(x, str) and _TEMPLATED.search(x) for x in v)
        )
    }


def bundled_for(instruction_id: str, kwargs: Mapping[str, Any]) -> str | None:
    """The bundled instruction that steers `instruction_id` with `kwargs`, or None.

    Example:
        >>> bundled_for("language:response_language", {"language": "fr"})
        'french'
        >>> bundled_for("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2})
        'one_sentence'
        >>> bundled_for("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 5})
        'max_sentences'
        >>> bundled_for("detectable_content:postscript", {"postscript_marker": "P.S."}) is None
        True
    """
    agree = []
    for name in instruction_names():
        instr = bundled_instruction(name)
        if instr.instruction_id != instruction_id:
            continue
        fixed = _fixes(instr)
        if all(kwargs.get(k) == v for k, v in fixed.items()):
            agree.append((len(fixed), name))
    if not agree:
        return None
    # The one that fixes the most of the row's kwargs is the most specific match.
    agree.sort(key=lambda t: -t[0])
    if len(agree) > 1 and agree[0][0] == agree[1][0]:
        tied = [n for k, n in agree if k == agree[0][0]]
        raise InvalidArgumentError(
            f"instruction id {instruction_id!r} with kwargs {dict(kwargs)} matches several "
            f"bundled instructions equally: {tied}"
        )
    return agree[0][1]


def _field(row: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in row:
        raise InvalidArgumentError(f"{where}: missing {name!r}")
    value = row[name]
    if not isinstance(value, kind):
        raise InvalidArgumentError(
            f"{where}: {name!r} must be a {kind.__name__}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def _items(row: Any, where: str, line: int) -> list[IFEvalItem]:
    """The items of one parsed line (one per instruction id)."""
    if not isinstance(row, dict):
        raise InvalidArgumentError(f"{where}: a row must be a JSON object, got {row!r:.60}")
    prompt = _field(row, "prompt", str, where)
    ids = _field(row, "instruction_id_list", list, where)
    kwargs_list = _field(row, "kwargs", list, where)
    without = row.get("prompt_without_instruction")
    if without is not None and not isinstance(without, str):
        raise InvalidArgumentError(
            f"{where}: 'prompt_without_instruction' must be a str, got {without!r:.60}"
        )
    if not ids:
        raise InvalidArgumentError(f"{where}: 'instruction_id_list' is empty")
    if len(kwargs_list) != len(ids):
        raise InvalidArgumentError(
            f"{where}: {len(ids)} instruction ids but {len(kwargs_list)} kwargs objects; "
            "give one kwargs object per id"
        )
    items = []
    for i, (iid, kw) in enumerate(zip(ids, kwargs_list, strict=True)):
        if not isinstance(iid, str) or not isinstance(kw, dict):
            raise InvalidArgumentError(
                f"{where}: instruction {i} must be an id string with a kwargs object, "
                f"got {iid!r:.40} and {kw!r:.40}"
            )
        kw = {k: v for k, v in kw.items() if v is not None}
        try:
            check_instruction(iid, kw, prompt=prompt)
        except WorkbenchError as e:
            raise InvalidArgumentError(f"{where}: {e}") from e
        items.append(IFEvalItem(prompt, without, iid, kw, line, row.get("key")))
    return items


def read_ifeval_rows(path: Any, *, skip_unsupported: bool = False) -> IFEvalRows:
    """Read an IFEval-format JSONL file into items grouped by bundled instruction.

    Example:
        >>> import json, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "mine.jsonl"
        >>> rows = [{"prompt": "Describe rain. Answer in lowercase.", "prompt_without_instruction":
        ...     "Describe rain.", "instruction_id_list": ["change_case:english_lowercase"],
        ...     "kwargs": [{}]}]
        >>> _ = f.write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> {name: len(items) for name, items in read_ifeval_rows(f).groups.items()}
        {'lowercase': 1}
    """
    file = user_path(path, "test file")
    skip_unsupported = check_bool("skip_unsupported", skip_unsupported)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"cannot read test file {str(file)!r}: {e}") from e
    groups: dict[str, list[IFEvalItem]] = {}
    unsupported: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{file} line {number}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"{where}: not valid JSON ({e.msg})") from e
        for item in _items(row, where, number):
            name = bundled_for(item.instruction_id, item.kwargs)
            if name is None:
                unsupported[item.instruction_id] = unsupported.get(item.instruction_id, 0) + 1
            else:
                groups.setdefault(name, []).append(item)
    if unsupported and not skip_unsupported:
        raise InvalidArgumentError(
            f"test file {str(file)!r}: no bundled instruction steers {sorted(unsupported)}; "
            "pass skip_unsupported=True (--skip-unsupported) to leave them out"
        )
    if not groups:
        raise InvalidArgumentError(f"test file {str(file)!r} holds no row a bundled vector steers")
    frozen = {name: tuple(items) for name, items in groups.items()}
    return IFEvalRows(str(file), frozen, dict(sorted(unsupported.items())))
