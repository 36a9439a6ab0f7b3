"""Stage plans for convolution with a SeKron kernel (conv docs), and their MAC counts.

Everything here is a pure function of tuples of ints, cached with ``functools.lru_cache``,
shared by both backends: arrays are only touched when :mod:`sekron.torch` or :mod:`sekron.jax`
executes a plan. This module imports neither torch nor jax.

Notation. The kernel W has shape (F, C, Kh, Kw); factor k (1-based in the maths, 0-based here)
has shape ``(f_k, c_k, h_k, w_k)``, with ``f_1`` the most significant digit of F, and so on.
The input, once padded, is viewed with named axes ``n, c1..cS, H, W``. Stage k (run from S down
to 1) contracts ``(r_k, c_k)`` and the spatial window ``(h_k, w_k)`` (dilated by
``dilation * prod_{l>k} h_l``) and emits ``f_k``:

- nested form: the earlier ranks ``r_1..r_{k-1}`` are carried as conv *groups*; stage S emits
  all ranks ``r_1..r_{S-1}`` together with ``f_S``;
- chain form: no groups; stage k contracts ``(r_k, c_k)`` and emits ``(r_{k-1}, f_k)``.

Axes not taken by a stage (``n``, the remaining ``c_<k`` and the finished ``f_>k``) are folded
into the batch. A stage whose window is 1x1 is a plain (batched) matrix product.

Stride (conv docs): in each spatial dim the stride is applied by the stage with the smallest k
whose extent in that dim is > 1 (it runs last among those that move data spatially); if there is
none (a 1x1 kernel) the input is subsampled first.

Padding: zero padding commutes with every stage that is 1-wide in that dim (it maps zeros to
zeros position by position), so each dim is padded just before the first stage (in execution
order) whose extent in that dim is > 1; the stages before it, typically pointwise channel
reductions, run on the unpadded map. With no such stage (a 1x1 kernel), or when it is the first
stage, the input is padded first.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations
from math import prod
from typing import NamedTuple

from ._typing import Pad4, Pair, Ranks, Shapes

__all__ = [
    "BATCH",
    "ConvKey",
    "ConvPlan",
    "ELEMENT_COST",
    "HEIGHT",
    "Stage",
    "WIDTH",
    "best_order",
    "conv_output_size",
    "conv_plan",
    "normalize_padding",
    "plan_cost",
    "spec_order",
]

LAYOUTS = ("nchw", "nhwc")


# Shape templates: the sizes of a plan's reshapes with the batch-dependent size as BATCH and the
# spatial sizes as HEIGHT/WIDTH, filled in from the live tensors when the plan runs under
# torch.jit.trace (so that a trace is valid for other batch and spatial sizes).
BATCH, HEIGHT, WIDTH = -1, -2, -3


class ConvKey(NamedTuple):
    """Everything a factorized plan depends on except the layout: the one key of
    :func:`conv_plan` and of the ``method="auto"`` choice."""

    shapes: Shapes
    ranks: Ranks
    form: str
    in_shape: tuple[int, int, int, int]
    stride: Pair
    padding: Pad4
    dilation: Pair

    def plan(self, layout: str) -> ConvPlan:
        return conv_plan(*self, layout)


class Stage(NamedTuple):
    """One stage: permute/reshape the state, apply factor ``factor`` as a conv or a matmul.

    ``perm`` takes the current named axes to the layout this stage reads, ``in_shape`` is the
    shape the permuted state is reshaped to (before the stage's own zero padding ``pad``),
    ``w_perm``/``w_shape`` give the weight, and ``out_axes``/``out_sizes`` name the axes of the
    result.
    """

    factor: int
    kind: str  # "conv" (F.conv2d) or "mm" (1x1 window: matrix product)
    perm: tuple[int, ...]
    pad: Pad4  # zero padding this stage applies to its input, (top, bottom, left, right)
    in_shape: tuple[int, ...]
    w_perm: tuple[int, ...]
    w_shape: tuple[int, ...]
    groups: int
    stride: Pair
    dilation: Pair
    out_axes: tuple[str, ...]
    out_sizes: tuple[int, ...]
    macs: int
    in_template: tuple[int, ...]  # in_shape with BATCH, HEIGHT, WIDTH (input spatial sizes)
    out_template: tuple[int, ...]  # out_sizes with BATCH, HEIGHT, WIDTH (output sizes)


class ConvPlan(NamedTuple):
    """A whole factorized convolution: pad, subsample, split channels, stages, final view."""

    pad: Pad4  # zero padding of the input, before the first stage
    subsample: Pair
    split_shape: tuple[int, ...]  # input (N, c1..cS, H, W) after padding and subsampling
    split_shape_unpadded: tuple[int, ...]  # input (N, c1..cS, H, W) as given
    stages: tuple[Stage, ...]
    final_perm: tuple[int, ...]
    out_shape: tuple[int, int, int, int]
    macs: int
    split_template: tuple[int, ...]  # (BATCH, c1..cS, HEIGHT, WIDTH)


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """``floor((size + pad - dilation (kernel - 1) - 1) / stride) + 1`` with ``pad`` the total."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


@lru_cache(maxsize=1024)
def normalize_padding(padding: int | Pair | str, kernel: Pair, dilation: Pair) -> Pad4:
    """(top, bottom, left, right) zero padding equal to ``F.conv2d``'s ``padding`` argument.

    ``"same"`` pads ``dilation * (k - 1)`` in total, the smaller half first, like PyTorch.
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return (out[0], out[1], out[2], out[3])
    assert not isinstance(padding, str)
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    return (padding[0], padding[0], padding[1], padding[1])


def _suffix_products(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """``prod_{l>k} sizes[l]`` for every k."""
    return tuple(prod(sizes[k + 1 :]) for k in range(len(sizes)))


def _factor_axes(k: int, n_factors: int, form: str) -> tuple[str, ...]:
    """Named axes of factor k's array (0-based k; rank ``r{j}`` joins factors j-1 and j)."""
    if form == "nested":
        n_r = min(k + 1, n_factors - 1)
        return (*(f"r{j}" for j in range(1, n_r + 1)), f"f{k}", f"c{k}", "h", "w")
    return (f"r{k}", f"r{k + 1}", f"f{k}", f"c{k}", "h", "w")


def spec_order(n_factors: int) -> tuple[int, ...]:
    """The stage algorithm's order (conv docs): the last factor first (indices S-1, .., 0)."""
    return tuple(reversed(range(n_factors)))


@lru_cache(maxsize=1024)
def conv_plan(
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    in_shape: tuple[int, int, int, int],
    stride: Pair = (1, 1),
    padding: Pad4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    layout: str = "nhwc",
    order: tuple[int, ...] | None = None,
) -> ConvPlan:
    """The factorized convolution plan for one SeKron signature and one input shape.

    Parameters
    ----------
    shapes, ranks, form
        The SeKron signature: S factor shapes ``(f_k, c_k, h_k, w_k)``, S - 1 ranks, the form.
    in_shape
        ``(N, C, H, W)`` of the (batched, unpadded) input.
    stride, padding, dilation
        As for ``F.conv2d``; ``padding`` already as (top, bottom, left, right).
    layout : {"nchw", "nhwc"}
        Where the spatial axes sit in the state: before the channel axes (``"nhwc"``, matrix
        products over contiguous channels, channels-last convs) or after them (``"nchw"``).
    order : tuple of ints, optional
        The order in which the factors (0-based) are applied. Any order is exact: the spatial
        offsets of the factors add up, and a rank index is carried (as groups) from the first
        stage that touches it to the last, which contracts it. ``None`` picks the order of
        lowest :func:`plan_cost` among all orders (S <= 5) or the order of the stage algorithm.

    Notes
    -----
    Stage for factor k, with the current state's axes: ``c_k`` and every rank axis of factor k
    that no later stage needs are contracted (K); rank axes still needed later and already in
    the state are groups (G); ``f_k`` and rank axes first met here are emitted (Out); the
    rest is batch. In the stage algorithm's order (S first) this is exactly the docs' plan.
    """
    if order is None:
        order = best_order(shapes, ranks, form, in_shape, stride, padding, dilation, layout)
    n_factors = len(shapes)
    h = tuple(s[2] for s in shapes)
    w = tuple(s[3] for s in shapes)
    place = _placement(h, w, order, padding, stride)
    height = (in_shape[2] + place.in_pad[0] + place.in_pad[1] - 1) // place.sub[0] + 1
    width = (in_shape[3] + place.in_pad[2] + place.in_pad[3] - 1) // place.sub[1] + 1
    size = _axis_sizes(shapes, ranks, in_shape[0], height, width)
    ctx = _Context(
        shapes,
        form,
        layout,
        order,
        padding,
        stride,
        place,
        tuple(dilation[0] * p for p in _suffix_products(h)),
        tuple(dilation[1] * p for p in _suffix_products(w)),
        _rank_users(n_factors, form),
    )
    axes = ("n", *(f"c{k}" for k in range(n_factors)), "H", "W")
    split_shape = tuple(size[a] for a in axes)
    stages = []
    for pos, k in enumerate(order):
        stage = _stage(ctx, pos, k, axes, size)
        stages.append(stage)
        axes = stage.out_axes
    final = ("n", *(f"f{k}" for k in range(n_factors)), "H", "W")
    return ConvPlan(
        place.in_pad,
        place.sub,
        split_shape,
        (*split_shape[:-2], in_shape[2], in_shape[3]),
        tuple(stages),
        tuple(axes.index(a) for a in final),
        (in_shape[0], prod(s[0] for s in shapes), size["H"], size["W"]),
        sum(s.macs for s in stages),
        (BATCH, *split_shape[1:-2], HEIGHT, WIDTH),
    )


class _Placement(NamedTuple):
    """Where padding and stride go: per spatial dim, the factor whose stage pads (None: the
    input is padded) and the one whose stage strides (None: the input is subsampled)."""

    pad_at: tuple[int | None, int | None]
    stride_at: tuple[int | None, int | None]
    in_pad: Pad4  # zero padding of the input itself
    sub: Pair  # subsampling of the input itself


def _placement(
    h: tuple[int, ...], w: tuple[int, ...], order: tuple[int, ...], padding: Pad4, stride: Pair
) -> _Placement:
    # padding: just before the first stage wider than 1 in that dim (see the module notes);
    # the input itself is padded where that is the first stage or there is none.
    # stride (conv docs, for any order): the last-run stage whose extent in that dim is > 1;
    # the stages after it are 1x1 there and commute with subsampling. None: subsample first.
    wide = [[k for k in order if ext[k] > 1] for ext in (h, w)]
    pad_at = tuple(ks[0] if ks and ks[0] != order[0] else None for ks in wide)
    stride_at = tuple(ks[-1] if ks else None for ks in wide)
    in_pad = (
        *(padding[0:2] if pad_at[0] is None else (0, 0)),
        *(padding[2:4] if pad_at[1] is None else (0, 0)),
    )
    sub = (
        stride[0] if stride_at[0] is None else 1,
        stride[1] if stride_at[1] is None else 1,
    )
    return _Placement(
        (pad_at[0], pad_at[1]),
        (stride_at[0], stride_at[1]),
        in_pad,
        sub,
    )


def _axis_sizes(
    shapes: Shapes, ranks: Ranks, n_batch: int, height: int, width: int
) -> dict[str, int]:
    """Sizes of the named axes: n, H, W, c_k, f_k and the ranks r_0..r_S."""
    n_factors = len(shapes)
    size: dict[str, int] = {"n": n_batch, "H": height, "W": width}
    for k, s in enumerate(shapes):
        size[f"c{k}"] = s[1]
        size[f"f{k}"] = s[0]
    size["r0"] = size[f"r{n_factors}"] = 1
    for k in range(1, n_factors):
        size[f"r{k}"] = ranks[k - 1]
    return size


def _rank_users(n_factors: int, form: str) -> dict[str, frozenset[int]]:
    """For every rank axis, the factors that carry it."""
    users: dict[str, set[int]] = {}
    for k in range(n_factors):
        for a in _factor_axes(k, n_factors, form):
            if a.startswith("r"):
                users.setdefault(a, set()).add(k)
    return {a: frozenset(ks) for a, ks in users.items()}


class _Context(NamedTuple):
    """What every stage of one plan needs to know."""

    shapes: Shapes
    form: str
    layout: str
    order: tuple[int, ...]
    padding: Pad4
    stride: Pair
    place: _Placement
    dil_h: tuple[int, ...]
    dil_w: tuple[int, ...]
    rank_users: dict[str, frozenset[int]]


def _stage(ctx: _Context, pos: int, k: int, axes: tuple[str, ...], size: dict[str, int]) -> Stage:
    """The stage of factor k at position ``pos`` of the order, on a state with ``axes``;
    updates ``size["H"]``/``size["W"]`` to the stage's output."""
    _, _, hk, wk = ctx.shapes[k]
    later = set(ctx.order[pos + 1 :])
    w_axes = _factor_axes(k, len(ctx.shapes), ctx.form)
    ranks_k = [a for a in w_axes if a.startswith("r") and size[a] > 1]
    G = tuple(a for a in ranks_k if a in axes and ctx.rank_users[a] & later)
    K = (*(a for a in ranks_k if a in axes and not ctx.rank_users[a] & later), f"c{k}")
    Out = (*(a for a in ranks_k if a not in axes), f"f{k}")
    unit = tuple(a for a in w_axes if a.startswith("r") and size[a] == 1)
    w_perm = tuple(w_axes.index(a) for a in (*G, *Out, *K, *unit, "h", "w"))
    g, o, kk = (prod(size[a] for a in grp) for grp in (G, Out, K))
    bt = tuple(a for a in axes if a not in (*G, *K, "H", "W"))
    place, padding = ctx.place, ctx.padding
    stride = (
        ctx.stride[0] if place.stride_at[0] == k else 1,
        ctx.stride[1] if place.stride_at[1] == k else 1,
    )
    pad_k = (
        *(padding[0:2] if place.pad_at[0] == k else (0, 0)),
        *(padding[2:4] if place.pad_at[1] == k else (0, 0)),
    )
    in_h, in_w = size["H"], size["W"]
    size["H"] = conv_output_size(in_h, hk, stride[0], pad_k[0] + pad_k[1], ctx.dil_h[k])
    size["W"] = conv_output_size(in_w, wk, stride[1], pad_k[2] + pad_k[3], ctx.dil_w[k])
    kind = "mm" if hk == wk == 1 and stride == (1, 1) else "conv"
    last = pos == len(ctx.order) - 1
    order_in, in_template, out_axes = _stage_axes(ctx.layout, kind, last, bt, G, K, Out, g * kk)
    b = prod(size[a] for a in bt)
    return Stage(
        factor=k,
        kind=kind,
        perm=tuple(axes.index(a) for a in order_in),
        pad=pad_k,
        in_shape=_fill(in_template, b, in_h, in_w),
        w_perm=w_perm,
        w_shape=(g * o, kk, hk, wk),
        groups=g,
        stride=stride,
        dilation=(ctx.dil_h[k], ctx.dil_w[k]),
        out_axes=out_axes,
        out_sizes=tuple(size[a] for a in out_axes),
        macs=b * g * o * size["H"] * size["W"] * kk * hk * wk,
        in_template=in_template,
        out_template=tuple(_TEMPLATE.get(a, size[a]) for a in out_axes),
    )


def _stage_axes(
    layout: str,
    kind: str,
    last: bool,
    bt: tuple[str, ...],
    G: tuple[str, ...],
    K: tuple[str, ...],
    Out: tuple[str, ...],
    channels: int,
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """(axes the stage reads, its input shape template, axes it writes) for the layout."""
    if layout == "nhwc" and kind == "mm" and last:
        # a matrix product does not care about row order: rows (n, H, W, f..) make the
        # result channels-last with the f digits adjacent, so no final copy is needed
        rest = tuple(a for a in bt if a != "n")
        in_axes = ("n", "H", "W", *rest, *G, *K)
        return in_axes, (BATCH, HEIGHT, WIDTH, channels), ("n", "H", "W", *rest, *G, *Out)
    if layout == "nhwc":
        in_axes = (*bt, "H", "W", *G, *K)
        return in_axes, (BATCH, HEIGHT, WIDTH, channels), (*bt, "H", "W", *G, *Out)
    return (*bt, *G, *K, "H", "W"), (BATCH, channels, HEIGHT, WIDTH), (*bt, *G, *Out, "H", "W")


_TEMPLATE = {"n": BATCH, "H": HEIGHT, "W": WIDTH}


def _fill(template: tuple[int, ...], batch: int, height: int, width: int) -> tuple[int, ...]:
    """A shape template with its BATCH, HEIGHT and WIDTH entries replaced."""
    subs = {BATCH: batch, HEIGHT: height, WIDTH: width}
    return tuple(subs.get(v, v) for v in template)


# memory traffic weight: one element read or written costs about this many multiply-adds
# (CPU, float32, small inner dimensions; calibrated on the benchmark layers)
ELEMENT_COST = 24


def plan_cost(plan: ConvPlan) -> float:
    """A cost model for a plan: MACs plus ``ELEMENT_COST`` per element each stage moves.

    Each stage reads its input (after a possible permuting copy: counted twice) and writes
    its output; small channel counts make the stages memory bound, which MACs alone miss.
    """
    cost = float(plan.macs)
    for s in plan.stages:
        n_in = prod(s.in_shape)
        n_out = prod(s.out_sizes)
        moved = 2 * n_in if s.perm != tuple(range(len(s.perm))) else n_in
        cost += ELEMENT_COST * (moved + n_out)
    return cost


@lru_cache(maxsize=1024)
def best_order(
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    in_shape: tuple[int, int, int, int],
    stride: Pair = (1, 1),
    padding: Pad4 = (0, 0, 0, 0),
    dilation: Pair = (1, 1),
    layout: str = "nhwc",
) -> tuple[int, ...]:
    """The execution order of lowest :func:`plan_cost` (all S! orders for S <= 5)."""
    n_factors = len(shapes)
    if n_factors > 5:
        return spec_order(n_factors)
    best, best_cost = spec_order(n_factors), float("inf")
    for order in [spec_order(n_factors), *permutations(range(n_factors))]:
        plan = conv_plan(shapes, ranks, form, in_shape, stride, padding, dilation, layout, order)
        cost = plan_cost(plan)
        if cost < best_cost:
            best, best_cost = order, cost
    return best
