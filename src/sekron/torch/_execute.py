"""Executing a factorized plan of :mod:`sekron._conv_plan` on a batched 4-D input.

Internal: the input and factors are checked by the caller. The plan's sizes are plain ints
computed for one input shape; under ``torch.jit.trace`` they come from the plan's shape
templates instead, filled with sizes read from the live tensors, so that a trace runs at
other batch and spatial sizes too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._conv_plan import BATCH, HEIGHT, WIDTH, ConvPlan, Stage, conv_output_size

__all__ = ["run_plan"]


def _fill(template: tuple[int, ...], hw: tuple[Any, Any]) -> tuple[Any, ...]:
    """A shape template with live sizes: BATCH stays -1 (reshape infers the batch fold),
    HEIGHT and WIDTH become ``hw``."""
    return tuple(hw[0] if v == HEIGHT else hw[1] if v == WIDTH else v for v in template)


def _stage_out_hw(stage: Stage, hw: tuple[Any, Any]) -> tuple[Any, Any]:
    top, bottom, left, right = stage.pad
    return (
        conv_output_size(hw[0], stage.w_shape[2], stage.stride[0], top + bottom, stage.dilation[0]),
        conv_output_size(hw[1], stage.w_shape[3], stage.stride[1], left + right, stage.dilation[1]),
    )


# A pointwise stage on an NCHW-ordered input (the first stage of a channels-last plan, any
# stage of a channels-first one) runs as oneDNN's 1x1 convolution rather than a batched
# matrix product when it reads and writes at least WIDE channels (narrower ones are slower
# that way) and its input holds at most CONV_MAX_BYTES (above that, about this machine's
# 32 MiB L3 cache, oneDNN's reorder of the NCHW input to its blocked layout costs more than
# it saves: 1.6x slower at 128 channels, 56x56, batch 32). Measured on the benchmark layers
# (benchmarks/conv_projection.py, CPU, 2 threads, float32): median 1.14x faster, up to 1.83x.
# Only float32 on the CPU was measured to gain (bfloat16 there was 2.6x slower as a 1x1 conv,
# float64 no faster), so other dtypes and devices keep the matrix product.
WIDE = 16
CONV_MAX_BYTES = 32 << 20


def _use_conv(z: torch.Tensor, kk: int, o: int) -> bool:
    return (
        z.dtype == torch.float32
        and z.device.type == "cpu"
        and min(kk, o) >= WIDE
        and z.numel() * z.element_size() <= CONV_MAX_BYTES
    )


def _mm(z: torch.Tensor, w: torch.Tensor, stage: Stage, in_shape: Any, layout: str) -> Any:
    """A stage with a 1x1 window and stride 1: a (grouped) matrix product, or oneDNN's 1x1
    convolution where that is faster (channels-last rows; wide float32 stages on an
    NCHW-ordered input, see ``WIDE``)."""
    g = stage.groups
    o, kk = stage.w_shape[0] // g, stage.w_shape[1]
    b, s1, s2, _ = in_shape if layout == "nhwc" else (in_shape[0], *in_shape[2:], 0)
    if layout == "nhwc":
        if g == 1:
            zb = z.reshape(b, s1 * s2, kk)
            if not zb.is_contiguous():
                # (b, positions, kk) is a transposed view of an NCHW input (the first stage,
                # unpadded): a matmul on it runs without a copy, but (see WIDE) oneDNN's 1x1
                # convolution plus one channels-last copy (of its NCHW output when that is
                # the narrower side, else of the input) is faster
                if not _use_conv(z, kk, o):
                    return torch.matmul(zb, w.reshape(o, kk).t())
                if o <= kk:
                    zn = zb.transpose(1, 2).reshape(b, kk, s1, s2)
                    return F.conv2d(zn, w).permute(0, 2, 3, 1).contiguous()
                zb = zb.contiguous()
            # channels-last rows: oneDNN's 1x1 convolution is faster than a plain GEMM
            zc = zb.reshape(in_shape).permute(0, 3, 1, 2)
            return F.conv2d(zc, w).permute(0, 2, 3, 1)
        zm = z.reshape(-1, g, kk)
        if kk == o == 1:  # one scalar per group (e.g. CP's factor of a 1x1 window)
            return zm * w.reshape(g, 1)
        return torch.einsum("pgk,gok->pgo", zm, w.reshape(g, o, kk))
    zm = z.reshape(b, g, kk, s1 * s2)
    if g == 1 and _use_conv(z, kk, o):  # oneDNN's 1x1 convolution (see WIDE)
        return F.conv2d(zm.reshape(b, kk, s1, s2), w)
    if kk == o == 1:
        return zm * w.reshape(g, 1, 1)
    return torch.matmul(w.reshape(g, o, kk), zm)


# A channels-first conv stage reading and writing at most TINY channels (one group: the 3x3
# factor (2, 2, 3, 3) of a split at rank 1, or a 1-channel stage) runs with PACK of its
# batch entries side by side as one image of PACK times the channels, under a block-diagonal
# weight: a free reshape of the NCHW state, PACK times the multiply-adds of that stage, but
# oneDNN runs 2-channel convolutions far below its speed on 8 (in isolation on the AMD EPYC
# CPU of results/conv_projection_amd_epyc_avx2, 2 threads: 38 -> 10 ms for a 2-channel 3x3
# stage over 2048 images of 28x28). The whole plan on the (2, 2)x(C/2, C/2) rank-1 splits of
# that benchmark, paired medians against the unpacked channels-first plan: 64@56 0.66 ->
# 0.98x dense, 128@28 2.64 -> 2.97x, 256@14 4.23 -> 4.89x, 512@7 6.79 -> 9.48x; stride-2
# 128@56 1.19 -> 1.15x (noise). method="factorized" still measures channels-first (packed)
# against channels-last (never packed) and runs the faster.
TINY, PACK = 2, 4


def _packed(stage: Stage, in_shape: Any, layout: str) -> int:
    """How many batch entries a conv stage packs into its channels (1: none)."""
    kk, o = stage.w_shape[1], stage.w_shape[0]
    b = in_shape[0]  # -1 (the BATCH template) under torch.jit.trace: not packed
    if layout != "nchw" or stage.groups != 1 or max(kk, o) > TINY or b <= 0:
        return 1
    return PACK if b % PACK == 0 else 1


def _conv(z: torch.Tensor, w: torch.Tensor, stage: Stage, in_shape: Any, layout: str) -> Any:
    zc = z.reshape(in_shape)
    if layout == "nhwc":
        zc = zc.permute(0, 3, 1, 2)
    p = _packed(stage, in_shape, layout)
    if p > 1:  # see TINY: p images side by side, a block-diagonal weight
        o, kk, kh, kw = w.shape
        eye = torch.eye(p, dtype=w.dtype, device=w.device)
        w = torch.einsum("ij,okhw->iojkhw", eye, w).reshape(p * o, p * kk, kh, kw)
        zc = zc.reshape(in_shape[0] // p, p * kk, *zc.shape[2:])
    top, bottom, left, right = stage.pad
    if top == bottom and left == right:
        out = F.conv2d(zc, w, None, stage.stride, (top, left), stage.dilation, stage.groups)
    else:
        zc = F.pad(zc, (left, right, top, bottom))
        out = F.conv2d(zc, w, None, stage.stride, 0, stage.dilation, stage.groups)
    if p > 1:
        out = out.reshape(in_shape[0], -1, *out.shape[2:])
    return out.permute(0, 2, 3, 1) if layout == "nhwc" else out


def _pad_permuted(x: torch.Tensor, plan: ConvPlan, split: Any) -> torch.Tensor:
    """Split, permute for the first stage and zero-pad, with one copy of x (no F.pad copy)."""
    top, bottom, left, right = plan.pad
    perm = plan.stages[0].perm
    z0 = x.reshape(split).permute(perm)
    if not (top or bottom or left or right):
        return z0  # the first stage's reshape copies only if its layout needs it
    h_pos, w_pos = perm.index(len(perm) - 2), perm.index(len(perm) - 1)
    shape = list(z0.shape)
    shape[h_pos] += top + bottom
    shape[w_pos] += left + right
    buf = z0.new_empty(shape)
    for pos, lo, hi in ((h_pos, top, bottom), (w_pos, left, right)):
        if lo:
            buf.narrow(pos, 0, lo).zero_()
        if hi:
            buf.narrow(pos, shape[pos] - hi, hi).zero_()
    buf.narrow(h_pos, top, z0.shape[h_pos]).narrow(w_pos, left, z0.shape[w_pos]).copy_(z0)
    return buf


def run_plan(
    x: torch.Tensor, factors: tuple[Any, ...], plan: ConvPlan, layout: str
) -> torch.Tensor:
    """Execute a factorized plan on a batched 4-D input (no validation: internal)."""
    live = torch.jit.is_tracing()
    sh, sw = plan.subsample
    if sh > 1 or sw > 1:
        top, bottom, left, right = plan.pad
        x = F.pad(x, (left, right, top, bottom))[:, :, ::sh, ::sw]
    hw = (x.shape[2], x.shape[3])
    split = _fill(plan.split_template, hw) if live else None
    if sh > 1 or sw > 1:
        z = x.reshape(split or plan.split_shape).permute(plan.stages[0].perm)
    else:
        z = _pad_permuted(x, plan, split or plan.split_shape_unpadded)
        if live:
            top, bottom, left, right = plan.pad
            hw = (hw[0] + top + bottom, hw[1] + left + right)
    for i, stage in enumerate(plan.stages):
        w = factors[stage.factor].permute(stage.w_perm).reshape(stage.w_shape)
        in_shape: Any = stage.in_shape
        out_sizes: Any = stage.out_sizes
        if live:
            in_shape = _fill(stage.in_template, hw)
            hw = _stage_out_hw(stage, hw)
            out_sizes = _fill(stage.out_template, hw)
        run = _mm if stage.kind == "mm" else _conv
        z = run(z if i == 0 else z.permute(stage.perm), w, stage, in_shape, layout)
        z = z.reshape(out_sizes)
    out_shape = _fill((BATCH, plan.out_shape[1], HEIGHT, WIDTH), hw) if live else None
    return z.permute(plan.final_perm).reshape(out_shape or plan.out_shape)
