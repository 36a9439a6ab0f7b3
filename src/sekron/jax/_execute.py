"""Executing a plan of :mod:`sekron._conv_plan` with ``jax.lax`` (internal: inputs checked).

Under ``jax.jit`` shapes are static, so the plan's plain int sizes hold for the traced call.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import jax.numpy as jnp
from jax import lax

from .._conv_plan import ConvPlan, Stage

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


# A stage whose groups read at most this many channels each runs as a sum of shifted,
# broadcast products (one fused XLA loop) instead of lax.conv_general_dilated, which runs
# such grouped convolutions on the CPU up to ~100x slower (a 3x3 depthwise conv over 56
# channels, 28x28, batch 32: 27 ms against 0.2 ms).
SHIFTED_MAX_IN = 4
# ... and whose window times those channels is at most this many terms (the benchmark's 3x3
# windows over 4 channels): with wide windows the sum lost to lax.conv (a (16, 4, 7, 7)
# ungrouped stage: 7.9 ms against 2.5 ms, and a 5x longer compile)
SHIFTED_MAX_TERMS = 36


def _shifted(z: Any, w: Any, stage: Stage, layout: str) -> Any:
    """``lax.conv_general_dilated`` of one stage (groups, stride, dilation, zero padding) as
    ``Σ_{i, j, k}`` of a strided slice of the padded input times one weight column."""
    g = stage.groups
    o, kk, hk, wk = stage.w_shape[0] // g, stage.w_shape[1], stage.w_shape[2], stage.w_shape[3]
    top, bottom, left, right = stage.pad
    (sh, sw), (dh, dw) = stage.stride, stage.dilation
    if layout == "nchw":
        z = jnp.moveaxis(z, 1, 3)
    z = jnp.pad(z, ((0, 0), (top, bottom), (left, right), (0, 0)))
    b, hp, wp, _ = z.shape
    ho = (hp - dh * (hk - 1) - 1) // sh + 1
    wo = (wp - dw * (wk - 1) - 1) // sw + 1
    z = z.reshape(b, hp, wp, g, kk)
    wr = w.reshape(g, o, kk, hk, wk)
    out_dtype = z.dtype
    if jnp.dtype(out_dtype).itemsize < 4:  # accumulate 16-bit floats in float32, as lax.conv does
        z, wr = z.astype(jnp.float32), wr.astype(jnp.float32)
    out = None
    for i in range(hk):
        for j in range(wk):
            start = (0, i * dh, j * dw, 0, 0)
            stop = (b, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, g, kk)
            window = lax.slice(z, start, stop, (1, sh, sw, 1, 1))
            for k in range(kk):
                term = window[..., k, None] * wr[:, :, k, i, j]
                out = term if out is None else out + term
    assert out is not None
    out = out.reshape(b, ho, wo, g * o).astype(out_dtype)
    return jnp.moveaxis(out, 3, 1) if layout == "nchw" else out


# A pointwise stage (1x1 window, stride 1) runs as one (batched) matrix product: XLA's CPU
# 1x1 convolution was 2-2.8x slower than the same product on the benchmark layers' shapes
# (e.g. 256 -> 57 channels at 14x14, batch 32, channels-last: 1.88 ms against 0.80 ms).


def _pointwise(z: Any, w: Any, stage: Stage, layout: str) -> Any:
    """A 1x1, stride-1 stage as ``einsum`` over its groups (no padding: a pointwise stage
    never pads, the plan pads before the first stage wider than 1)."""
    g = stage.groups
    o, kk = stage.w_shape[0] // g, stage.w_shape[1]
    wr = w.reshape(g, o, kk)
    if layout == "nhwc":
        b, h, wd, _ = z.shape
        out = jnp.einsum("bhwgk,gok->bhwgo", z.reshape(b, h, wd, g, kk), wr)
        return out.reshape(b, h, wd, g * o)
    b, _, h, wd = z.shape
    out = jnp.einsum("bgkhw,gok->bgohw", z.reshape(b, g, kk, h, wd), wr)
    return out.reshape(b, g * o, h, wd)


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
        if stage.w_shape[1] <= SHIFTED_MAX_IN and prod(stage.w_shape[1:]) <= SHIFTED_MAX_TERMS:
            z = _shifted(z, w, stage, layout)
        elif stage.kind == "mm":
            z = _pointwise(z, w, stage, layout)
        else:
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
