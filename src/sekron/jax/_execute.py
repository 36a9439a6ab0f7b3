"""Executing a plan of :mod:`sekron._conv_plan` with ``jax.lax`` (internal: inputs checked).

Under ``jax.jit`` shapes are static, so the plan's plain int sizes hold for the traced call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

from .._conv_plan import ConvPlan

__all__ = ["dense_conv", "run_plan"]

_DIMS = {"nhwc": ("NHWC", "OIHW", "NHWC"), "nchw": ("NCHW", "OIHW", "NCHW")}


def _pairs(pad4: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    return [(pad4[0], pad4[1]), (pad4[2], pad4[3])]


def dense_conv(
    x: Any,
    w: Any,
    stride: tuple[int, int],
    pad4: tuple[int, int, int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Any:
    """One dense NCHW convolution with an OIHW kernel (the reference and "reconstructed")."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=stride,
        padding=_pairs(pad4),
        rhs_dilation=dilation,
        dimension_numbers=_DIMS["nchw"],
        feature_group_count=groups,
    )


def run_plan(x: Any, factors: Sequence[Any], plan: ConvPlan, layout: str) -> Any:
    """Run a factorized plan on a batched NCHW input: pad (and subsample) once, then one
    grouped, dilated convolution per stage, then the final view (no validation: internal)."""
    top, bottom, left, right = plan.pad
    x = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    sh, sw = plan.subsample
    if sh > 1 or sw > 1:
        x = x[:, :, ::sh, ::sw]
    z = x.reshape(plan.split_shape)
    for stage in plan.stages:
        w = jnp.transpose(factors[stage.factor], stage.w_perm).reshape(stage.w_shape)
        z = jnp.transpose(z, stage.perm).reshape(stage.in_shape)
        z = lax.conv_general_dilated(
            z,
            w,
            window_strides=stage.stride,
            padding=_pairs(stage.pad),
            rhs_dilation=stage.dilation,
            dimension_numbers=_DIMS[layout],
            feature_group_count=stage.groups,
        )
        z = z.reshape(stage.out_sizes)
    return jnp.transpose(z, plan.final_perm).reshape(plan.out_shape)
