"""Multiply-accumulates of a SeKron conv kernel's factorized plan, for budgets in the search.

A 4-way tensor ``(F, C, kh, kw)`` is a conv weight; :func:`sekron.torch.conv2d` runs its factors
as a plan of grouped convolutions (convolution docs). The search counts that plan's MACs **per
output position** (batch 1, every stage charged at the output resolution): no input size is
known here. It is :func:`sekron.torch.sekron_conv_macs` with ``in_hw=None``, which
``sekron.torch.count_macs`` equals, times the output positions, for a stride-1 conv with
"same" padding; the dense conv costs ``F * C * kh * kw`` (the weight's size) per position.
The functions here take plain ints or broadcastable numpy arrays of ranks (rank grids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

from .._typing import Shapes
from .._validation import check_number, check_positive_int

__all__ = ["conv_macs", "mac_budget", "mac_fits"]


def conv_macs(shapes: Shapes, ranks: Sequence[Any], form: str) -> Any:
    """MACs per output position of the factorized plan of a 4-way kernel (conv docs).

    Nested: stage S costs ``P_{S-1} f_S C h_S w_S`` and stage k < S costs
    ``P_k F_{>=k} C_{<=k} h_k w_k`` (``P_k = R_1..R_k``). Chain: stage k costs
    ``C_{<k} F_{>k} R_{k-1} f_k R_k c_k h_k w_k``. ``ranks`` may be ints (an int comes back) or
    broadcastable integer arrays (an array comes back).

    Examples
    --------
    >>> conv_macs(((8, 8, 3, 1), (16, 8, 1, 3)), (4,), "nested")
    24576
    """
    n = len(shapes)
    f = [s[0] for s in shapes]
    c = [s[1] for s in shapes]
    hw = [s[2] * s[3] for s in shapes]
    total: Any = 0
    if form == "nested":
        for k in range(n):
            p = prod(ranks[: min(k + 1, n - 1)])
            if k == n - 1:
                total = total + p * (f[k] * prod(c) * hw[k])
            else:
                total = total + p * (prod(f[k:]) * prod(c[: k + 1]) * hw[k])
        return total
    bounds = (1, *ranks, 1)
    for k in range(n):
        total = total + bounds[k] * bounds[k + 1] * (
            prod(c[:k]) * prod(f[k + 1 :]) * f[k] * c[k] * hw[k]
        )
    return total


def mac_fits(shapes: Shapes, form: str, max_macs: int) -> Callable[[Sequence[Any]], Any]:
    """A mask function: ranks (ints or rank grids) -> whether the plan costs <= ``max_macs``."""

    def fits(ranks: Sequence[Any]) -> Any:
        return conv_macs(shapes, ranks, form) <= max_macs

    return fits


def mac_budget(max_macs: object, mac_compression: object, shape: tuple[int, ...]) -> int | None:
    """The checked MAC budget per output position (None: no MAC budget).

    Raises
    ------
    TypeError, ValueError
        Both given; ``max_macs`` not an int >= 1; ``mac_compression`` not a number >= 1; a
        MAC budget for a tensor that is not a 4-way conv weight ``(F, C, kh, kw)``.
    """
    if max_macs is None and mac_compression is None:
        return None
    if max_macs is not None and mac_compression is not None:
        raise ValueError(
            "give at most one of max_macs and mac_compression; got "
            f"max_macs={max_macs!r}, mac_compression={mac_compression!r}."
        )
    if len(shape) != 4:
        raise ValueError(
            "a MAC budget (max_macs, mac_compression) applies to a conv weight of shape "
            f"(F, C, kh, kw); got a tensor of shape {shape}."
        )
    if max_macs is not None:
        return check_positive_int(max_macs, "max_macs")
    ratio = check_number(mac_compression, "mac_compression", at_least=1.0)
    return max(1, int(prod(shape) / ratio))
