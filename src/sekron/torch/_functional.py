"""Convolution with a SeKron kernel, without building it (conv docs): ``conv2d`` and ``conv1d``.

Three methods compute the same thing, ``F.conv2d(x, st.to_tensor(), ...)``:

- ``"factorized"`` runs the stage plan of :mod:`sekron._conv_plan` (one pad, then one
  grouped, dilated conv or one matrix product per factor; :mod:`sekron.torch._execute`);
- ``"reconstructed"`` builds the kernel (one matrix product per rank) and runs one dense conv;
- ``"auto"`` picks one of them, or a plan with adjacent factors merged first
  (:mod:`sekron._conv_merge`), per (signature, input shape, regime, dtype, device): see
  :mod:`sekron.torch._auto`, which decides; this module builds and runs the candidates.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from .._conv_args import _exact
from .._conv_choice import DENSE, Choice, candidates
from .._conv_merge import merge_factors, merged_signature
from .._conv_plan import ConvKey
from .._typing import ConvMethod
from .._validation import check_bool
from ..tensor import SeKronTensor
from . import _auto
from ._checks import (
    ConvArgs,
    check_bias,
    check_conv_args,
    check_no_inference,
    check_st,
    check_x,
)
from ._execute import run_plan

__all__ = ["conv1d", "conv2d", "run_conv"]


def _dense(
    x: torch.Tensor, st: SeKronTensor, bias: Any, args: ConvArgs, kernel: Any = None
) -> torch.Tensor:
    """The reconstructed method: build the kernel (unless ``kernel`` is given), one dense conv.

    ``method="reconstructed"`` rebuilds the kernel on every call; ``auto`` passes the one
    :func:`sekron.torch._auto.kernel` gives (reused while the factors keep their values and
    autograd does not record; a version counter cannot tell, ``.data`` writes bump none).
    """
    top, bottom, left, right = args.pad4
    if top != bottom or left != right:
        x = F.pad(x, (left, right, top, bottom))
        top = left = 0
    w = st.to_tensor() if kernel is None else kernel
    return F.conv2d(x, w, bias, args.stride, (top, left), args.dilation, args.groups)


def _key(x: torch.Tensor, st: SeKronTensor, args: ConvArgs) -> ConvKey:
    """The plan key of a call: the one place its eight parts are put together (with the
    layout, which :meth:`ConvKey.plan` takes)."""
    in_shape: Any = tuple(x.shape)
    if not _exact(in_shape):  # under torch.jit.trace: 0-d tensors
        in_shape = tuple(int(v) for v in in_shape)
    return ConvKey(st._shapes, st._ranks, st._form, in_shape, args.stride, args.pad4, args.dilation)


def _run_choice(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: Any,
    args: ConvArgs,
    key: ConvKey,
    choice: Choice,
    regime: str,
) -> torch.Tensor:
    """Run one candidate of the plan space in ``regime``: the dense conv (on the kernel
    :func:`sekron.torch._auto.kernel` gives) or a (merged) factorized plan."""
    if choice.method == "reconstructed":
        return _dense(x, st, bias, args, _auto.kernel(st, regime))
    factors: Any = st.factors
    if choice.method == "merged":
        shapes, ranks = merged_signature(st.shapes, st.ranks, st.form, choice.grouping)
        factors = merge_factors(
            factors, st.shapes, st.ranks, st.form, choice.grouping, torch.einsum
        )
        key = key._replace(shapes=shapes, ranks=ranks)
    out = run_plan(x, factors, key.plan(choice.layout), choice.layout)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _timed_calls(
    x: torch.Tensor,
    st: SeKronTensor,
    args: ConvArgs,
    key: ConvKey,
    regime: str,
    choices: dict[str, Choice],
) -> dict[str, Any]:
    """Zero-argument callables running each of ``choices`` once as ``regime`` costs it, on
    detached copies of ``x`` and the factors (no ``.grad`` written, no hook of the caller's
    tensors fired)."""
    xm = x.detach().requires_grad_(x.requires_grad)
    factors = [f.detach().requires_grad_(f.requires_grad) for f in st.factors]
    stm = SeKronTensor._trusted(factors, st.form, st.shapes, st.ranks)
    leaves = [t for t in (xm, *factors) if t.requires_grad]

    def call(choice: Choice) -> Any:
        y = _run_choice(xm, stm, None, args, key, choice, regime)
        if regime == "training" and leaves:  # (only the bias may require grad)
            torch.autograd.grad(y, leaves, torch.ones_like(y))

    return {name: partial(call, choice) for name, choice in choices.items()}


def _run_batched(
    x: torch.Tensor, st: SeKronTensor, bias: Any, args: ConvArgs, measure: bool | None, train: bool
) -> torch.Tensor:
    if args.method == "reconstructed" or (args.method == "auto" and args.groups != 1):
        return _dense(x, st, bias, args)
    key = _key(x, st, args)
    leaves = (x, *st.factors) if bias is None else (x, *st.factors, bias)
    regime = _auto.regime(leaves, train)
    if args.method == "factorized":
        full = (1,) * len(st.shapes)
        layout = _auto.layout(key, x, measure, regime)
        if layout is None:
            plans = {lay: Choice("factorized", lay, full) for lay in ("nhwc", "nchw")}
            layout = _auto.record_layout(
                key, x, regime, _timed_calls(x, st, args, key, regime, plans)
            )
        return _run_choice(x, st, bias, args, key, Choice("factorized", layout, full), regime)
    hit = _auto.lookup(key, x, measure, regime)
    if hit is None:
        calls = _timed_calls(x, st, args, key, regime, {"dense": DENSE} | candidates(key))
        hit = _auto.record(key, x, regime, calls)
    return _run_choice(x, st, bias, args, key, hit, regime)


def run_conv(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: Any,
    args: ConvArgs,
    measure: bool | None,
    train: bool = True,
) -> torch.Tensor:
    """The convolution on checked arguments (internal: :func:`conv2d` and ``SeKronConv2d``).

    ``x`` is (N, C, H, W) or unbatched (C, H, W). ``train`` False says no backward follows a
    call that autograd records (a layer in eval mode): ``auto`` then times forwards only.
    """
    check_no_inference(x, st, bias)
    if x.ndim == 3:
        return _run_batched(x.unsqueeze(0), st, bias, args, measure, train).squeeze(0)
    return _run_batched(x, st, bias, args, measure, train)


def conv2d(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    method: ConvMethod = "auto",
    measure: bool | None = None,
) -> torch.Tensor:
    """2-D convolution with a SeKron kernel: ``F.conv2d(x, st.to_tensor(), bias, ...)``.

    Parameters
    ----------
    x : torch.Tensor
        Input of shape (N, C * groups, H, W), or (C * groups, H, W) unbatched.
    st : SeKronTensor
        Kernel of shape (F, C, Kh, Kw) with torch factors, nested or chain form, S >= 2 factors.
        Factor k has shape ``(f_k, c_k, h_k, w_k)`` (theory docs).
    bias : torch.Tensor, optional
        Shape (F,).
    stride, padding, dilation, groups
        As for :func:`torch.nn.functional.conv2d` (``padding`` may be an int, a pair,
        ``"same"`` or ``"valid"``; zero padding).
    method : {"auto", "factorized", "reconstructed"}
        ``"factorized"`` never builds the kernel: it pads once and runs one grouped, dilated
        conv (or, for a 1x1 window, one matrix product) per factor, with channels-last or
        channels-first stages, whichever its first call per (signature, input shape, regime,
        dtype, device) measured faster (channels-last when it may not measure; see
        ``measure``). ``"reconstructed"`` builds
        the kernel and runs one dense conv. ``"auto"`` picks the fastest of those and of the
        plans with adjacent factors merged, per (signature, input shape, regime, dtype,
        device), and caches the choice; see Notes.
    measure : bool, optional
        For ``method="auto"`` and ``"factorized"``: whether the first call with a new shape
        (and regime) may time the candidates (a few runs each) to choose. ``None`` (default)
        means yes unless the environment variable ``SEKRON_AUTO_MEASURE=0`` is set.
        ``False`` uses the cost model (``"auto"``) or channels-last stages (``"factorized"``).

    Returns
    -------
    torch.Tensor
        Shape (N, F, H_out, W_out) (or (F, H_out, W_out)), the dtype and device of ``x``.

    Raises
    ------
    TypeError
        If ``x`` or ``st`` is of the wrong kind, or their dtypes differ.
    ValueError
        On shape mismatches, a bad ``method``, ``padding="same"`` with a stride,
        ``method="factorized"`` with ``groups > 1``, ``groups`` not dividing the output
        channels, or an input smaller than the dilated kernel after padding.
    TypeError
        A factor, ``x`` or ``bias`` made under ``torch.inference_mode()`` used outside it
        where autograd records the call.

    Notes
    -----
    With ``F = Π f_k``, ``C = Π c_k``, ``Kh = Π h_k`` (factor 1 the most significant digit),
    stage k (from S down to 1) contracts ``(r_k, c_k, h_k, w_k)`` with dilation
    ``dilation * Π_{l>k} (h_l, w_l)``, carrying the earlier ranks as conv groups (nested form).
    The stride is applied by the stage with the smallest k whose window is wider than 1 in that
    dim; a 1x1 kernel subsamples the input first. Its cost is
    ``N L (P_{S-1} f_S C h_S w_S + Σ_{k<S} P_k F_{≥k} C_{≤k} h_k w_k)`` multiply-adds against
    ``N L F C Kh Kw`` for the dense conv (conv docs).

    ``method="auto"`` (the default) and its measuring:

    - With ``groups > 1`` it always runs ``"reconstructed"``.
    - The candidates are the dense conv, the fully factorized plan (channels-last and
      channels-first stages) and up to two merged plans (adjacent factors merged into their
      Kronecker product first, conv docs), each only if it needs at most two thirds of the
      dense multiply-adds; with none, it runs ``"reconstructed"`` without measuring.
    - The choice is per regime: ``"inference"`` (autograd not recording), ``"forward"``
      (recording, no backward follows: a ``SeKronConv2d`` in eval mode) and ``"training"``
      (recording: this function, or a layer in train mode), timed as that regime costs:
      the forward, the forward with autograd, or the forward plus the backward.
    - The first call for a new (signature, input shape, stride, padding, dilation, regime,
      dtype, device) times the candidates 7 times each, interleaved, on detached copies of
      the inputs (no ``.grad`` written, results unchanged), and caches the plan with the
      lowest median of per-repetition time ratios (plan / dense) only if that median and the
      ratio of the best times are both below 0.9, and again so after a second round of that
      plan against the dense conv; otherwise ``"reconstructed"``. It does not measure while
      tracing, scripting, compiling or under a functorch transform, nor with ``measure``
      False: then it uses the cost model (factorized when the multiply-add ratio is at least
      4) without caching that guess.
    - Running the dense conv on the CPU in the "inference" and "forward" regimes, it reuses
      the kernel built by an earlier call from factors equal (value for value) to the current
      ones (gradients, if a backward does follow, are those of the rebuilt kernel); in the
      "training" regime and on a GPU it builds the kernel on every call.
    - :func:`sekron.torch.clear_cache` forgets every cached choice and kernel.

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
    st = check_st(st, 2, "conv2d")
    remember = not torch.compiler.is_compiling()  # (dynamo would guard on the memos)
    args = check_conv_args(stride, padding, dilation, groups, method, st.shape[2:], remember)
    x = check_x(x, st, args, 2, "conv2d", remember)
    if measure is not None:
        check_bool(measure, "measure")
    return run_conv(x, st, check_bias(bias, st), args, measure)


def _as_2d(st: SeKronTensor) -> SeKronTensor:
    """(F, C, K) factors as (F, C, 1, K): a view of every factor, no copy."""
    factors = [f.unsqueeze(-2) for f in st.factors]
    shapes = tuple((f, c, 1, k) for f, c, k in st.shapes)
    return SeKronTensor._trusted(factors, st.form, shapes, st.ranks, st.rel_error)


def conv1d(
    x: torch.Tensor,
    st: SeKronTensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    method: ConvMethod = "auto",
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
    st = check_st(st, 1, "conv1d")
    remember = not torch.compiler.is_compiling()  # (dynamo would guard on the memos)
    args = check_conv_args(stride, padding, dilation, groups, method, st.shape[2:], remember)
    x = check_x(x, st, args, 1, "conv1d", remember)
    if measure is not None:
        check_bool(measure, "measure")
    out = run_conv(x.unsqueeze(-2), _as_2d(st), check_bias(bias, st), args, measure)
    return out.squeeze(-2)
