"""Token-level view: how strongly each response token's residual points along u.

Data only; `analyses.projection_figures.plot_token_projections` draws it.

What is read, precisely. For each response (unsteered, steered, …) ONE unsteered
forward pass runs over the prompt, formatted the way the vector was built
(`workbench.format_prompt` in the vector's prompt style, tokenized by
`workbench.model.prompts.encode_prompts`), followed by the response's tokens. The residual
``blocks.{layer}.hook_resid_post`` (the vector's hook) at each response token's own
position is projected onto the unit direction u_layer. Position 0 is the first
response token; its residual is the one that predicts the second.

Why unsteered. Under ``project`` steering the projection at the steered layer *is*
the target, at every position, by construction, so reading the steered pass would
show a flat line. Reading the natural activation of the same tokens shows where the
model itself moves along the direction: a steered response that follows the
instruction should look more like the with-instruction side (``mean_proj_with``)
than the unsteered one does. Run it outside any `workbench.steer` block, which
would steer this forward pass too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from torch import Tensor

from workbench import Generation, InstructionVector
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model.hooks import refuse_under_per_row_steer
from workbench.model.prompts import check_context, encode_prompts, encode_text, format_prompt
from workbench.options import as_float
from workbench.vectors.activations import read_layers

from .style import vector_label

__all__ = ["token_projections"]


def _response_ids(model: Any, setting: str, response: Any) -> list[int]:
    if isinstance(response, Generation):
        if len(response.tokens) != 1:
            raise InvalidArgumentError(
                f"response {setting!r} is a Generation of {len(response.tokens)} completions; "
                "pass one: its text g.texts[i], or Generation([g.texts[i]], [g.tokens[i]])"
            )
        # The generated ids themselves: re-tokenizing the decoded text may split it
        # differently from how it was produced.
        ids = [int(t) for t in response.tokens[0]]
    elif isinstance(response, str):
        # As text: a response holding "<|im_end|>" is not read as a control token.
        ids = encode_text(model, response)
    else:
        raise ArgumentTypeError(
            f"response {setting!r} must be a str or a one-completion Generation, got "
            f"{type(response).__name__} {response!r}"
        )
    if not ids:
        raise InvalidArgumentError(f"response {setting!r} has no tokens; there is nothing to read")
    return ids


def token_projections(
    model: Any,
    vec: InstructionVector,
    layer: int,
    prompt: str,
    responses: Mapping[str, str | Generation],
    *,
    clamp_target: float | None = None,
) -> pd.DataFrame:
    """Projection onto u_layer of each response token's unsteered residual, per setting.

    See the module docstring for exactly what is read and why the forward pass is
    unsteered even for a steered response.

    Args:
        layer: one of ``vec.layers`` (typically the steering layer).
        prompt: the user message the responses answer (without the instruction, as
            when steering), formatted in the vector's prompt style.
        responses: ``{setting: response}``, e.g. ``{"unsteered": …, "steered": …}``;
            a response is its text (tokenized without special tokens) or a
            one-completion `Generation` from ``generate(..., return_tokens=True)``
            (its token ids are used as generated, EOS included if produced).
        clamp_target: the target of a ``clamp`` term at `layer`; adds the column
            ``clamp_acts``, True where the projection is below it. With only that one
            term, a position's residual at `layer` before the hook is the unsteered one
            read here (attention at `layer` reads the layer below), so these are
            exactly the positions the clamp raised: for a term on ``positions="all"``
            or ``"generated"`` (the rows are response tokens; a ``"prompt"`` term
            raises none of them).

    Returns:
        DataFrame, one row per (setting, response token): ``setting``, ``position``
        (0 = first response token), ``token`` (that token decoded), ``token_id``,
        ``projection`` (x·u_layer, residual units), and ``clamp_acts`` with
        `clamp_target` (its value then in ``df.attrs["clamp_target"]``). ``df.attrs`` holds ``layer``,
        ``label`` (the vector's name), ``prompt`` and the vector's ``mean_proj_with``
        and ``mean_proj_without`` at `layer` (read at the vector's read position).

    Example:
        >>> table = token_projections(model, vec, 1, "Name a colour.", {"unsteered": "blue", "steered": "red"})
        >>> table.groupby("setting", sort=False).size().to_dict()
        {'unsteered': 4, 'steered': 3}
        >>> table.columns.tolist()
        ['setting', 'position', 'token', 'token_id', 'projection']
    """
    refuse_under_per_row_steer("token_projections")
    if clamp_target is not None:
        clamp_target = as_float("clamp_target", clamp_target)
    if not isinstance(vec, InstructionVector):
        raise ArgumentTypeError(f"vec must be an InstructionVector, got {type(vec).__name__}")
    row = vec.row(layer)
    if not isinstance(prompt, str):
        raise ArgumentTypeError(f"prompt must be a str, got {type(prompt).__name__} {prompt!r}")
    if not isinstance(responses, Mapping):
        raise ArgumentTypeError(
            "responses must be a mapping {setting: response text or Generation}, got "
            f"{type(responses).__name__}; e.g. {{'unsteered': text, 'steered': text}}"
        )
    if not responses:
        raise InvalidArgumentError("responses is empty; pass at least one {setting: response}")
    bad = [s for s in responses if not isinstance(s, str) or not s]
    if bad:
        raise ArgumentTypeError(f"setting labels must be non-empty strings, got {bad!r}")
    vec.check_model(model)
    formatted = format_prompt(model, prompt, style=vec.prompt_style)
    prompt_ids = encode_prompts(model, [formatted], style=vec.prompt_style)[0]
    answers = {s: _response_ids(model, s, r) for s, r in responses.items()}
    settings = list(answers)
    check_context(
        model,
        [[*prompt_ids, *answers[s]] for s in settings],
        lambda i: f"the prompt with response {settings[i]!r}",
    )
    u = vec.directions[row].float()
    sequences = [[*prompt_ids, *answers[s]] for s in settings]
    read: dict[int, Tensor] = {}

    def keep(col: int, x: Tensor, mask: Tensor, rows: slice) -> None:
        read[rows.start] = x[0].detach().float().cpu()

    # One sequence a batch: no padding, so each response reads as it would alone.
    read_layers(model, sequences, keep, layers=[layer], hook_name=vec.hook_name, batch_size=1)
    rows = []
    for i, (setting, ids) in enumerate(answers.items()):
        proj = read[i][len(prompt_ids) :] @ u
        for pos, (tok, value) in enumerate(zip(ids, proj.tolist(), strict=True)):
            rows.append(
                {
                    "setting": setting,
                    "position": pos,
                    "token": model.tokenizer.decode([tok]),
                    "token_id": tok,
                    "projection": value,
                }
            )
    table = pd.DataFrame(rows)
    if clamp_target is not None:
        table["clamp_acts"] = table["projection"] < clamp_target
        table.attrs["clamp_target"] = clamp_target
    table.attrs.update(
        layer=layer,
        label=vector_label(vec),
        prompt=prompt,
        mean_proj_with=float(vec.mean_proj_with[row]),
        mean_proj_without=float(vec.mean_proj_without[row]),
    )
    return table
