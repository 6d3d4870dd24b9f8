"""The unit direction of a mean difference, computed without overflow (one owner for
the u that steering terms and gates share)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import InvalidArgumentError


def unit_direction(diff: Tensor, layer: int) -> tuple[Float[Tensor, " d_model"], float]:
    """The unit direction (float32) and norm of `diff`, without overflow.

    The vector is divided by its largest entry first: its norm taken directly would be
    inf in float16 past 65504 (and in float32 past 3.4e38), giving a zero direction.
    """
    peak = diff.detach().abs().max()
    if float(peak) == 0:
        raise InvalidArgumentError(f"the vector at layer {layer} is zero; it has no direction")
    scaled = (diff.detach() / peak).to(torch.float32)
    length = scaled.norm()
    return scaled / length, float(peak) * float(length)
