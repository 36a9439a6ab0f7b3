"""Multiply-accumulate counts of the convolution plans of :mod:`sekron._conv_plan` and of
the dense convolution (conv docs); pure functions of tuples of ints, like the plans."""

from __future__ import annotations

from math import prod

from ._conv_plan import conv_output_size, conv_plan
from ._typing import Pad4, Pair, Ranks, Shapes

__all__ = ["dense_macs", "factorized_macs", "stage_macs"]


def factorized_macs(
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    in_shape: tuple[int, int, int, int],
    stride: Pair = (1, 1),
    padding: Pad4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    order: tuple[int, ...] | None = None,
) -> int:
    """Multiply-accumulates of the factorized convolution (the sum over its stages).

    ``order`` is the execution order of the factors (0-based); ``None`` means the order the
    planner picks (the one :func:`sekron.torch.conv2d` runs), ``spec_order(S)`` the docs'
    stage algorithm's.

    Stage k costs ``B_k * L_k * g_k * o_k * kk_k * h_k * w_k``: batch fold, output positions
    of that stage, groups, outputs and inputs per group, window. With stride 1 and every stage
    at the same L this is conv docs:
    ``N L (P_{S-1} f_S C h_S w_S + Σ_{k<S} P_k F_{≥k} C_{≤k} h_k w_k)`` (nested).
    Earlier stages see more positions than the final output (they run before the later
    stages' windows shrink the map), which this count includes.

    Examples
    --------
    >>> from sekron._conv_macs import dense_macs, factorized_macs
    >>> shapes = ((8, 8, 3, 3), (8, 8, 1, 1))
    >>> dense_macs(shapes, (1, 64, 8, 8), padding=(1, 1, 1, 1))
    2359296
    >>> factorized_macs(shapes, (1,), "nested", (1, 64, 8, 8), padding=(1, 1, 1, 1))
    327680
    """
    return conv_plan(shapes, ranks, form, in_shape, stride, padding, dilation, "nhwc", order).macs


def stage_macs(
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    in_shape: tuple[int, int, int, int],
    stride: Pair = (1, 1),
    padding: Pad4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    order: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    """MACs of every stage, in execution order."""
    plan = conv_plan(shapes, ranks, form, in_shape, stride, padding, dilation, "nhwc", order)
    return tuple(s.macs for s in plan.stages)


def dense_macs(
    shapes: Shapes,
    in_shape: tuple[int, int, int, int],
    stride: Pair = (1, 1),
    padding: Pad4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
) -> int:
    """MACs of one dense ``F.conv2d`` with the kernel the factors describe: ``N L F C Kh Kw``.

    With ``groups > 1`` the kernel has shape (F, C / groups, Kh, Kw) and the count is per that.
    """
    fo, ci, kh, kw = (prod(s[n] for s in shapes) for n in range(4))
    n_batch, _, height, width = in_shape
    out_h = conv_output_size(height, kh, stride[0], padding[0] + padding[1], dilation[0])
    out_w = conv_output_size(width, kw, stride[1], padding[2] + padding[3], dilation[1])
    del groups
    return n_batch * out_h * out_w * fo * ci * kh * kw
