"""``--ray [ADDRESS]`` and ``--ray-workers N``: `sweep` and `evaluate` on a Ray cluster."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from workbench.errors import InvalidArgumentError

from .arguments import positive_int

# What a bare --ray stands for: start a local cluster (or use the one ray.init made).
LOCAL = "local"


def add_ray_options(p: argparse.ArgumentParser) -> None:
    """Add ``--ray [ADDRESS]`` and ``--ray-workers N`` to a subcommand's parser."""
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="generate on Ray workers that keep the model: a cluster's HOST:PORT (as "
        "`ray start --head` prints it) or auto; --ray local (or a bare --ray after the "
        "positional arguments) starts a local cluster",
    )
    p.add_argument(
        "--ray-workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="Ray workers (default: one per GPU, else one per CPU core)",
    )


def check_ray_options(args: argparse.Namespace) -> None:
    """Refuse ``--ray-workers`` without ``--ray``, and an address nothing answers at,
    before the model loads."""
    if args.ray is None and args.ray_workers is not None:
        raise InvalidArgumentError(
            f"--ray-workers {args.ray_workers} sets the Ray workers; give --ray too"
        )
    if args.ray not in (None, LOCAL):
        from workbench.evaluation.ray_address import check_address

        check_address(args.ray)


@contextlib.contextmanager
def executor_from(args: argparse.Namespace) -> Iterator[Any]:
    """The `RayExecutor` the arguments ask for (None without ``--ray``), closed after."""
    if args.ray is None:
        yield None
        return
    from workbench.evaluation.ray_executor import RayExecutor

    address = None if args.ray == LOCAL else args.ray
    with RayExecutor(address, workers=args.ray_workers) as executor:
        yield executor
