"""Convolution with a SeKron kernel, without building it (SPEC §5): ``conv2d`` and ``conv1d``.

Three methods compute the same thing, ``F.conv2d(x, st.to_tensor(), ...)``:

- ``"factorized"`` runs the stage plan of :mod:`sekron.torch._conv_plan` (one pad, then one
  grouped, dilated conv or one matrix product per factor);
- ``"reconstructed"`` builds the kernel (a few µs) and runs one dense conv;
- ``"auto"`` picks one of them per (signature, input shape, dtype, device): see
  :mod:`sekron.torch._auto`.
"""

from __future__ import annotations

import numbers
import weakref
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F

from .._typing import Pair
from .._validation import _type_name
from ..tensor import SeKronTensor
from ._auto import choose
from ._conv_plan import ConvPlan, conv_plan, normalize_padding

__all__ = ["conv1d", "conv2d"]

METHODS = ("auto", "factorized", "reconstructed")


# ----------------------------------------------------------------------------------------------
# validation (once, at the public boundary)
# ----------------------------------------------------------------------------------------------
def _pair(value: Any, name: str, n_spatial: int, *, minimum: int) -> Pair:
    # fast path for the common cases (this runs on every call; see the overhead benchmark)
    if type(value) is int and value >= minimum:
        return (value, value) if n_spatial == 2 else (1, value)
    if (
        type(value) is tuple
        and len(value) == n_spatial == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and value[0] >= minimum
        and value[1] >= minimum
    ):
        return value
    items = value if isinstance(value, tuple | list) else (value,) * n_spatial
    if len(items) != n_spatial or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
    ):
        raise TypeError(f"{name} must be an int or a tuple of {n_spatial} ints; got {value!r}.")
    if any(int(v) < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every dim; got {value!r}.")
    out = tuple(int(v) for v in items)
    return (1, out[0]) if n_spatial == 1 else (out[0], out[1])


def _check_method_groups(method: object, groups: object) -> int:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive int; got {groups!r}.")
    return int(groups)


def _check_st(st: object, n_spatial: int, fn: str) -> SeKronTensor:
    if not isinstance(st, SeKronTensor):
        raise TypeError(f"st must be a sekron.SeKronTensor; got {_type_name(st)}.")
    if st.backend != "pytorch":
        raise TypeError(
            f"st must have torch factors (backend 'pytorch'); got backend {st.backend!r}. "
            "Build it with backend='pytorch' or from torch tensors."
        )
    want = 2 + n_spatial
    if st.ndim != want:
        layout = "(F, C, K)" if n_spatial == 1 else "(F, C, Kh, Kw)"
        raise ValueError(f"{fn} needs st of shape {layout} ({want} modes); got shape {st.shape}.")
    return st


def _check_x(x: object, st: SeKronTensor, groups: int, n_spatial: int, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {_type_name(x)}.")
    if x.ndim not in (n_spatial + 1, n_spatial + 2):
        raise ValueError(
            f"{fn}: x must have {n_spatial + 2} dims (N, C, *spatial) or {n_spatial + 1} "
            f"(C, *spatial); got shape {tuple(x.shape)}."
        )
    channels = x.shape[-n_spatial - 1]
    want = st.shape[1] * groups
    if channels != want:
        raise ValueError(
            f"x has {channels} channels but st of shape {st.shape} with groups={groups} "
            f"needs C * groups = {want}."
        )
    if x.dtype != st.dtype:
        raise TypeError(f"x has dtype {x.dtype} but st has dtype {st.dtype}; cast one of them.")
    if x.device != st.factors[0].device:
        raise ValueError(
            f"x is on {x.device} but st's factors are on {st.factors[0].device}; move one."
        )
    return x


def _check_padding(padding: Any, n_spatial: int, stride: Pair) -> Any:
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(
                f"padding must be an int, a tuple, 'same' or 'valid'; got {padding!r}."
            )
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1 (like F.conv2d); got stride {stride}.")
        return padding
    return _pair(padding, "padding", n_spatial, minimum=0)


# ----------------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------------
def _run_stage(z: torch.Tensor, w: torch.Tensor, stage: Any, layout: str) -> torch.Tensor:
    if stage.kind == "mm":
        g = stage.groups
        o, kk = stage.w_shape[0] // g, stage.w_shape[1]
        if layout == "nhwc":
            if g == 1:
                # (b, positions, kk) is a view even of an NCHW input (the first stage, unpadded):
                # then matmul runs a batched product on the transposed operand, with no copy
                zb = z.reshape(stage.in_shape[0], -1, kk)
                if not zb.is_contiguous():
                    return torch.matmul(zb, w.reshape(o, kk).t()).reshape(stage.out_sizes)
                # channels-last rows: oneDNN's 1x1 convolution is faster than a plain GEMM
                zc = zb.reshape(stage.in_shape).permute(0, 3, 1, 2)
                out = F.conv2d(zc, w)
                return out.permute(0, 2, 3, 1).reshape(stage.out_sizes)
            zm = z.reshape(-1, g, kk)
            if kk == o == 1:  # one scalar per group (e.g. CP's factor of a 1x1 window)
                out = zm * w.reshape(g, 1)
            else:
                out = torch.einsum("pgk,gok->pgo", zm, w.reshape(g, o, kk))
        else:
            b, _, height, width = stage.in_shape
            zm = z.reshape(b, g, kk, height * width)
            if g == 1:
                out = torch.matmul(w.reshape(o, kk), zm.reshape(b, kk, height * width))
            elif kk == o == 1:
                out = zm * w.reshape(g, 1, 1)
            else:
                out = torch.matmul(w.reshape(g, o, kk), zm)
        return out.reshape(stage.out_sizes)
    zc = z.reshape(stage.in_shape)
    if layout == "nhwc":
        zc = zc.permute(0, 3, 1, 2)
    top, bottom, left, right = stage.pad
    if top == bottom and left == right:
        out = F.conv2d(zc, w, None, stage.stride, (top, left), stage.dilation, stage.groups)
    else:
        zc = F.pad(zc, (left, right, top, bottom))
        out = F.conv2d(zc, w, None, stage.stride, 0, stage.dilation, stage.groups)
    if layout == "nhwc":
        out = out.permute(0, 2, 3, 1)
    return out.reshape(stage.out_sizes)


def _ints(shape: Any) -> Any:
    """Plain ints (under ``torch.jit.trace`` sizes can be 0-d tensors; plans need ints)."""
    return tuple(int(v) for v in shape)


def _pad_permuted(x: torch.Tensor, plan: ConvPlan) -> torch.Tensor:
    """Split, permute for the first stage and zero-pad, with one copy of x (no F.pad copy)."""
    top, bottom, left, right = plan.pad
    perm = plan.stages[0].perm
    z0 = x.reshape(plan.split_shape_unpadded).permute(perm)
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
    sh, sw = plan.subsample
    if sh > 1 or sw > 1:
        top, bottom, left, right = plan.pad
        x = F.pad(x, (left, right, top, bottom))[:, :, ::sh, ::sw]
        z = x.reshape(plan.split_shape).permute(plan.stages[0].perm)
    else:
        z = _pad_permuted(x, plan)
    for i, stage in enumerate(plan.stages):
        w = factors[stage.factor].permute(stage.w_perm).reshape(stage.w_shape)
        z = _run_stage(z if i == 0 else z.permute(stage.perm), w, stage, layout)
    return z.permute(plan.final_perm).reshape(plan.out_shape)


_KERNELS: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], torch.Tensor]] = OrderedDict()
_KERNEL_CACHE_SIZE = 32


def _kernel(st: SeKronTensor) -> torch.Tensor:
    """``st.to_tensor()``, reused while the factors are the same tensors, unmodified in place.

    Building the kernel costs a reordering copy of its size (about 5-10% of a dense conv). With
    autograd recording or under tracing/compiling it is always rebuilt; otherwise it is cached,
    keyed on the factors' identities (checked through weak references, so a freed factor never
    matches), their in-place version counters (an optimizer step invalidates it) and their
    storage, dtype and device (``module.to(...)`` swaps a parameter's data without a version
    bump).
    """
    needs_graph = torch.is_grad_enabled() and any(f.requires_grad for f in st.factors)
    compiler = getattr(torch, "compiler", None)
    if (
        needs_graph
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or (compiler is not None and compiler.is_compiling())
    ):
        return st.to_tensor()
    # the storage address too: module.to(), .float() etc. swap a parameter's data in place
    # without bumping its version counter
    key = (st.form, *((id(f), f._version, f.data_ptr(), f.dtype, f.device) for f in st.factors))
    hit = _KERNELS.get(key)
    if hit is not None and all(ref() is f for ref, f in zip(hit[0], st.factors, strict=True)):
        _KERNELS.move_to_end(key)
        return hit[1]
    kernel = st.to_tensor().contiguous()  # some forms build a transposed view; F.conv2d
    _KERNELS[key] = (tuple(weakref.ref(f) for f in st.factors), kernel)
    if len(_KERNELS) > _KERNEL_CACHE_SIZE:
        _KERNELS.popitem(last=False)
    return kernel


def _conv2d_batched(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: torch.Tensor | None,
    stride: Pair,
    padding: Any,
    dilation: Pair,
    groups: int,
    method: str,
    measure: bool | None,
) -> torch.Tensor:
    kernel = (st.shape[2], st.shape[3])
    pad4 = normalize_padding(padding, kernel, dilation)
    if method == "auto":
        if groups != 1:
            method = "reconstructed"
        else:
            method, layout = choose(x, st, stride, pad4, dilation, measure, _candidates)
    else:
        layout = "nhwc"
    if method == "reconstructed":
        dense_pad = padding if isinstance(padding, str) else (pad4[0], pad4[2])
        return F.conv2d(x, _kernel(st), bias, stride, dense_pad, dilation, groups)
    plan = conv_plan(st.shapes, st.ranks, st.form, _ints(x.shape), stride, pad4, dilation, layout)
    out = run_plan(x, st.factors, plan, layout)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _candidates(
    x: torch.Tensor, st: SeKronTensor, stride: Pair, pad4: Any, dilation: Pair, layout: str
) -> Any:
    """A zero-argument callable computing one candidate (for timing in :mod:`._auto`)."""
    if layout == "dense":

        def dense() -> torch.Tensor:
            return F.conv2d(
                F.pad(x, (pad4[2], pad4[3], pad4[0], pad4[1])),
                _kernel(st),
                None,
                stride,
                0,
                dilation,
            )

        return dense
    plan = conv_plan(st.shapes, st.ranks, st.form, _ints(x.shape), stride, pad4, dilation, layout)

    def factorized() -> torch.Tensor:
        return run_plan(x, st.factors, plan, layout)

    return factorized


def conv2d(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    method: str = "auto",
    measure: bool | None = None,
) -> torch.Tensor:
    """2-D convolution with a SeKron kernel: ``F.conv2d(x, st.to_tensor(), bias, ...)``.

    Parameters
    ----------
    x : torch.Tensor
        Input of shape (N, C * groups, H, W), or (C * groups, H, W) unbatched.
    st : SeKronTensor
        Kernel of shape (F, C, Kh, Kw) with torch factors, nested or chain form, S >= 2 factors.
        Factor k has shape ``(f_k, c_k, h_k, w_k)`` (SPEC §2).
    bias : torch.Tensor, optional
        Shape (F,).
    stride, padding, dilation, groups
        As for :func:`torch.nn.functional.conv2d` (``padding`` may be an int, a pair,
        ``"same"`` or ``"valid"``; zero padding).
    method : {"auto", "factorized", "reconstructed"}
        ``"factorized"`` never builds the kernel: it pads once and runs one grouped, dilated
        conv (or, for a 1x1 window, one matrix product) per factor. ``"reconstructed"`` builds
        the kernel and runs one dense conv. ``"auto"`` picks the faster one per (signature,
        input shape, dtype, device) and caches the choice; see Notes.
    measure : bool, optional
        For ``method="auto"`` only: whether the first call with a new shape may time both
        candidates (a few runs each) to choose. ``None`` (default) means yes unless the
        environment variable ``SEKRON_AUTO_MEASURE=0`` is set. ``False`` uses the cost model.

    Returns
    -------
    torch.Tensor
        Shape (N, F, H_out, W_out) (or (F, H_out, W_out)), the dtype and device of ``x``.

    Raises
    ------
    TypeError
        If ``x`` or ``st`` is of the wrong kind, or their dtypes differ.
    ValueError
        On shape mismatches, a bad ``method``, ``padding="same"`` with a stride, or
        ``method="factorized"`` with ``groups > 1``.

    Notes
    -----
    With ``F = Π f_k``, ``C = Π c_k``, ``Kh = Π h_k`` (factor 1 the most significant digit),
    stage k (from S down to 1) contracts ``(r_k, c_k, h_k, w_k)`` with dilation
    ``dilation * Π_{l>k} (h_l, w_l)``, carrying the earlier ranks as conv groups (nested form).
    The stride is applied by the stage with the smallest k whose window is wider than 1 in that
    dim; a 1x1 kernel subsamples the input first. Its cost is
    ``N L (P_{S-1} f_S C h_S w_S + Σ_{k<S} P_k F_{≥k} C_{≤k} h_k w_k)`` multiply-adds against
    ``N L F C Kh Kw`` for the dense conv (SPEC §5).

    ``method="auto"`` (the default) and its measuring:

    - With ``groups > 1`` it always runs ``"reconstructed"``.
    - If the factorized path needs at least half the dense multiply-adds it runs
      ``"reconstructed"`` without measuring.
    - Otherwise, the first call for a new (signature, input shape, stride, padding, dilation,
      dtype, device) times the dense conv and the factorized plan with channels-last and with
      channels-first stages, 7 times each, interleaved, and caches the factorized layout
      with the lower median of per-repetition time ratios (factorized / dense) only if that
      median and the ratio of the best times are both below 0.8, and again so after a second
      round of that layout against the dense conv. It
      only measures when that is meaningful and safe: autograd off (``torch.no_grad()`` or
      inference mode, because a forward-only timing says nothing about training), not while
      tracing, scripting or compiling, and ``measure`` not False. Otherwise it uses the cost
      model (factorized when the multiply-add ratio is large) without caching that guess.
    - The cache is a dict in :mod:`sekron.torch._auto`; ``sekron.torch._auto.clear_cache()``
      empties it.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299, 2022.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from sekron import random_sekron
    >>> from sekron.torch import conv2d
    >>> st = random_sekron([(4, 4, 3, 1), (4, 4, 1, 3)], 2, backend="pytorch", random_state=0)
    >>> x = torch.randn(2, 16, 10, 10, dtype=torch.float64)
    >>> y = conv2d(x, st, padding=1, method="factorized")
    >>> y.shape
    torch.Size([2, 16, 10, 10])
    >>> bool(torch.allclose(y, F.conv2d(x, st.to_tensor(), padding=1)))
    True
    """
    groups = _check_method_groups(method, groups)
    st = _check_st(st, 2, "conv2d")
    if groups > 1 and method == "factorized":
        raise ValueError(
            f"method='factorized' supports groups=1 only; got groups={groups}. "
            "Use method='reconstructed' or 'auto' for grouped convolutions."
        )
    x = _check_x(x, st, groups, 2, "conv2d")
    stride_p = _pair(stride, "stride", 2, minimum=1)
    dilation_p = _pair(dilation, "dilation", 2, minimum=1)
    padding_c = _check_padding(padding, 2, stride_p)
    if bias is not None:
        _check_bias(bias, st)
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    out = _conv2d_batched(x, st, bias, stride_p, padding_c, dilation_p, groups, method, measure)
    return out.squeeze(0) if unbatched else out


def _check_bias(bias: object, st: SeKronTensor) -> None:
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None; got {_type_name(bias)}.")
    if tuple(bias.shape) != (st.shape[0],):
        raise ValueError(f"bias must have shape ({st.shape[0]},); got {tuple(bias.shape)}.")


def _as_2d(st: SeKronTensor) -> SeKronTensor:
    """(F, C, K) factors as (F, C, 1, K): a view of every factor, no copy."""
    return SeKronTensor([f.unsqueeze(-2) for f in st.factors], st.form, rel_error=st.rel_error)


def conv1d(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    method: str = "auto",
    measure: bool | None = None,
) -> torch.Tensor:
    """1-D convolution with a SeKron kernel: ``F.conv1d(x, st.to_tensor(), bias, ...)``.

    ``st`` has shape (F, C, K); everything else is as :func:`conv2d`, which runs it with a unit
    height.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from sekron import random_sekron
    >>> from sekron.torch import conv1d
    >>> st = random_sekron([(4, 2, 3), (2, 4, 1)], 2, backend="pytorch", random_state=0)
    >>> x = torch.randn(3, 8, 20, dtype=torch.float64)
    >>> y = conv1d(x, st, stride=2, method="factorized")
    >>> bool(torch.allclose(y, F.conv1d(x, st.to_tensor(), stride=2)))
    True
    """
    groups = _check_method_groups(method, groups)
    st = _check_st(st, 1, "conv1d")
    x = _check_x(x, st, groups, 1, "conv1d")
    stride_p = _pair(stride, "stride", 1, minimum=1)
    dilation_p = _pair(dilation, "dilation", 1, minimum=1)
    padding_c = _check_padding(padding, 1, stride_p)
    if bias is not None:
        _check_bias(bias, st)
    if not isinstance(padding_c, str):
        padding_c = (0, padding_c[1])
    out = conv2d(
        x.unsqueeze(-2),
        _as_2d(st),
        bias,
        stride_p,
        padding_c,
        dilation_p,
        groups,
        method=method,
        measure=measure,
    )
    return out.squeeze(-2)
