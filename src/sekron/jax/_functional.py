"""``sekron.jax.conv2d`` and ``conv1d``: :func:`sekron.torch.conv2d`'s semantics on JAX.

The options are checked by the same backend-neutral validators as the torch path
(:mod:`sekron._conv_args`), so both raise the same messages. ``method="auto"`` cannot time
anything under ``jax.jit`` (the arrays are tracers), so it uses the cost model: the plan of
lowest :func:`~sekron._conv_plan.plan_cost` among the fully factorized plan and its merged
groupings (:mod:`sekron._conv_merge`) when it needs at most ``1 / MODEL_MAC_RATIO`` of the
dense multiply-adds, else the dense conv on the rebuilt kernel.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._conv_args import ConvArgs, check_conv_args, check_input_shape, check_kernel
from .._conv_macs import dense_macs
from .._conv_merge import groupings, merge_factors, merged_signature
from .._conv_plan import ConvKey, plan_cost
from .._typing import ConvMethod
from .._validation import _type_name
from ..tensor import SeKronTensor
from ._execute import dense_conv, run_plan

__all__ = ["conv1d", "conv2d"]

MODEL_MAC_RATIO = 4.0


def _checked(
    x: object,
    st: object,
    bias: object,
    options: tuple[object, object, object, object, object],
    n_spatial: int,
    fn: str,
) -> tuple[Any, SeKronTensor, Any, ConvArgs]:
    """The checks of :func:`sekron.torch.conv2d` (same messages), once, at the boundary;
    ``options`` is (stride, padding, dilation, groups, method)."""
    kern = check_kernel(st, n_spatial, fn, "jax")
    if not jnp.issubdtype(kern.factors[0].dtype, jnp.floating):
        raise TypeError(f"st has dtype {kern.dtype}; a convolution kernel must be floating point.")
    stride, padding, dilation, groups, method = options
    args = check_conv_args(stride, padding, dilation, groups, method, kern.shape[2:])
    return _check_x(x, kern, args, n_spatial, fn), kern, _check_bias(bias, kern), args


def _check_x(x: object, st: SeKronTensor, args: ConvArgs, n_spatial: int, fn: str) -> Any:
    if not isinstance(x, jax.Array):
        raise TypeError(f"x must be a jax.Array; got {_type_name(x)}.")
    check_input_shape(tuple(x.shape), st.shape, args, n_spatial, fn)
    if x.dtype != st.factors[0].dtype:
        raise TypeError(f"x has dtype {x.dtype} but st has dtype {st.dtype}; cast one of them.")
    return x


def _check_bias(bias: object, st: SeKronTensor) -> Any:
    if bias is None:
        return None
    if not isinstance(bias, jax.Array):
        raise TypeError(f"bias must be a jax.Array or None; got {_type_name(bias)}.")
    if tuple(bias.shape) != (st.shape[0],):
        raise ValueError(f"bias must have shape ({st.shape[0]},); got {tuple(bias.shape)}.")
    if bias.dtype != st.factors[0].dtype:
        raise TypeError(f"bias has dtype {bias.dtype} but st has dtype {st.dtype}; cast it.")
    return bias


def _plan_choice(key: ConvKey, method: str) -> tuple[int, ...] | None:
    """The grouping to run (``(1, .., 1)``: fully factorized), or None for the dense conv."""
    full = (1,) * len(key.shapes)
    if method == "factorized":
        return full
    if method == "reconstructed":
        return None
    dense = dense_macs(key.shapes, key.in_shape, key.stride, key.padding, key.dilation)
    best: tuple[float, tuple[int, ...]] | None = None
    for g in groupings(len(key.shapes)):
        shapes, ranks = merged_signature(key.shapes, key.ranks, key.form, g)
        plan = key._replace(shapes=shapes, ranks=ranks).plan("nhwc")
        if dense >= MODEL_MAC_RATIO * plan.macs and (best is None or plan_cost(plan) < best[0]):
            best = (plan_cost(plan), g)
    return None if best is None else best[1]


def _run(x: Any, st: SeKronTensor, bias: Any, args: ConvArgs) -> Any:
    """The convolution of a batched NCHW input on checked arguments."""
    n, c, h, w = x.shape
    key = ConvKey(st.shapes, st.ranks, st.form, (n, c, h, w), args.stride, args.pad4, args.dilation)
    grouping = None if args.groups != 1 else _plan_choice(key, args.method)
    if grouping is None:
        out = dense_conv(x, st.to_tensor(), args.stride, args.pad4, args.dilation, args.groups)
    else:
        shapes, ranks = merged_signature(st.shapes, st.ranks, st.form, grouping)
        factors = merge_factors(st.factors, st.shapes, st.ranks, st.form, grouping, jnp.einsum)
        out = run_plan(x, factors, key._replace(shapes=shapes, ranks=ranks).plan("nhwc"), "nhwc")
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def conv2d(
    x: Any,
    st: SeKronTensor,
    bias: Any = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    method: ConvMethod = "auto",
) -> Any:
    """2-D convolution with a SeKron kernel on JAX, without building it.

    Computes what ``lax.conv_general_dilated`` computes on the rebuilt kernel
    ``st.to_tensor()`` (NCHW input, OIHW kernel), with :func:`sekron.torch.conv2d`'s
    arguments and semantics.

    Parameters
    ----------
    x : jax.Array
        Input of shape (N, C * groups, H, W), or (C * groups, H, W) unbatched.
    st : SeKronTensor
        Kernel of shape (F, C, Kh, Kw) with jax factors, nested or chain form, S >= 2 factors.
    bias : jax.Array, optional
        Shape (F,).
    stride, padding, dilation, groups
        As for :func:`sekron.torch.conv2d` (``padding`` an int, a pair, ``"same"`` or
        ``"valid"``; zero padding).
    method : {"auto", "factorized", "reconstructed"}
        ``"factorized"`` runs the stage plan (one grouped, dilated conv per factor; conv docs),
        ``"reconstructed"`` one dense conv on the rebuilt kernel, ``"auto"`` the cost model's
        choice (the module notes: no timing under ``jax.jit``).

    Returns
    -------
    jax.Array
        Shape (N, F, H_out, W_out) (or (F, H_out, W_out)), the dtype of ``x``.

    Raises
    ------
    TypeError
        If ``x``, ``st`` or ``bias`` is of the wrong kind, or their dtypes differ.
    ValueError
        The messages of :func:`sekron.torch.conv2d`: shape mismatches, a bad ``method`` or
        ``padding``, ``padding="same"`` with a stride, ``method="factorized"`` with
        ``groups > 1``, an input smaller than the dilated kernel.

    Notes
    -----
    Works under ``jax.jit`` (shapes are static, so the plan is made once per trace) and
    ``jax.grad`` (every step is differentiable). The plans are those of
    :mod:`sekron._conv_plan`, shared with the torch backend.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299, 2022.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from sekron import random_sekron
    >>> from sekron.jax import conv2d
    >>> st = random_sekron(
    ...     [(4, 4, 3, 1), (4, 4, 1, 3)], 2, backend="jax", dtype="float32", random_state=0
    ... )
    >>> x = jax.random.normal(jax.random.key(0), (2, 16, 10, 10))
    >>> y = conv2d(x, st, padding=1, method="factorized")
    >>> y.shape
    (2, 16, 10, 10)
    >>> ref = jax.lax.conv(x, st.to_tensor(), (1, 1), [(1, 1), (1, 1)])
    >>> bool(jnp.allclose(y, ref, atol=1e-4))
    True
    """
    x, st, bias, args = _checked(
        x, st, bias, (stride, padding, dilation, groups, method), 2, "conv2d"
    )
    if x.ndim == 3:
        return _run(x[None], st, bias, args)[0]
    return _run(x, st, bias, args)


def conv1d(
    x: Any,
    st: SeKronTensor,
    bias: Any = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    method: ConvMethod = "auto",
) -> Any:
    """1-D convolution with a SeKron kernel on JAX: ``st`` of shape (F, C, K), ``x`` of shape
    (N, C * groups, L) or (C * groups, L); everything else as :func:`conv2d`, which runs it
    with a unit height.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from sekron import random_sekron
    >>> from sekron.jax import conv1d
    >>> st = random_sekron(
    ...     [(4, 2, 3), (2, 4, 1)], 2, backend="jax", dtype="float32", random_state=0
    ... )
    >>> x = jax.random.normal(jax.random.key(0), (3, 8, 20))
    >>> y = conv1d(x, st, stride=2, method="factorized")
    >>> ref = jax.lax.conv(x[:, :, None], st.to_tensor()[:, :, None], (1, 2), "VALID")[:, :, 0]
    >>> bool(jnp.allclose(y, ref, atol=1e-4))
    True
    """
    x, st, bias, args = _checked(
        x, st, bias, (stride, padding, dilation, groups, method), 1, "conv1d"
    )
    factors = [f[..., None, :] for f in st.factors]
    shapes = tuple((f, c, 1, k) for f, c, k in st.shapes)
    st2 = SeKronTensor._trusted(factors, st.form, shapes, st.ranks, st.rel_error, backend="jax")
    x2 = x[..., None, :]
    out = _run(x2[None], st2, bias, args)[0] if x.ndim == 2 else _run(x2, st2, bias, args)
    return out[..., 0, :]
