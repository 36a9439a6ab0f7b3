"""``sekron compare --max-macs N`` / ``--mac-compression R``: a MAC budget on the search."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ._io import CLIError

__all__ = ["add_mac_options", "check_mac_inputs", "mac_options"]


def add_mac_options(cmp: argparse.ArgumentParser, macs_type: Any, ratio_type: Any) -> None:
    budget = cmp.add_mutually_exclusive_group()
    budget.add_argument(
        "--max-macs",
        type=macs_type,
        default=None,
        metavar="N",
        help="conv weights: the SeKron search keeps to N multiply-adds per output position of "
        "the factorized plan as well (sekron.compare's max_macs); the other families are "
        "fitted by parameters and marked '!' when their plan costs more",
    )
    budget.add_argument(
        "--mac-compression",
        type=ratio_type,
        default=None,
        metavar="R",
        help="the same budget as a ratio >= 1 of the dense conv's MACs (1: no more than dense)",
    )


def mac_options(args: argparse.Namespace) -> dict[str, Any]:
    """The MAC budget options of a compare call."""
    return {"max_macs": args.max_macs, "mac_compression": args.mac_compression}


def check_mac_inputs(args: argparse.Namespace, tensors: list[tuple[str, np.ndarray]]) -> None:
    """Before any work: a MAC budget needs every tensor compared to be a 4-D conv weight."""
    if args.max_macs is None and args.mac_compression is None:
        return
    flag = "--max-macs" if args.max_macs is not None else "--mac-compression"
    for name, W in tensors:
        if W.ndim != 4:
            raise CLIError(
                f"{flag} applies to 4-D conv weights (F, C, kh, kw); {name} has shape "
                f"{tuple(W.shape)} (pick the 4-D ones with --key)"
            )
