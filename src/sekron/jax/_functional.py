"""``sekron.jax.conv2d`` and ``conv1d``: :func:`sekron.torch.conv2d`'s semantics on JAX.

The options are checked by the same backend-neutral validators as the torch path
(:mod:`sekron._conv_args`), so both raise the same messages. The plans are the torch path's
(:mod:`sekron._conv_plan`, :mod:`sekron._conv_merge`); ``method="auto"`` measures them once
per shape (:mod:`sekron.jax._auto`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._conv_args import ConvArgs, check_conv_args, check_input_shape, check_kernel
from .._conv_choice import DENSE, Choice
from .._conv_merge import merge_factors, merged_signature
from .._conv_plan import ConvKey
from .._typing import ConvMethod
from .._validation import _type_name, check_bool
from ..tensor import SeKronTensor
from . import _auto
from ._execute import dense_conv, run_plan

__all__ = ["conv1d", "conv2d"]


def _checked(
    x: object,
    st: object,
    bias: object,
    options: tuple[object, object, object, object, object, object],
    n_spatial: int,
    fn: str,
) -> tuple[Any, SeKronTensor, Any, ConvArgs]:
    """The checks of :func:`sekron.torch.conv2d` (same messages), once, at the boundary;
    ``options`` is (stride, padding, dilation, groups, method, measure)."""
    kern = check_kernel(st, n_spatial, fn, "jax")
    if not jnp.issubdtype(kern.factors[0].dtype, jnp.floating):
        raise TypeError(f"st has dtype {kern.dtype}; a convolution kernel must be floating point.")
    stride, padding, dilation, groups, method, measure = options
    if measure is not None:
        check_bool(measure, "measure")
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


def _run_choice(st: SeKronTensor, args: ConvArgs, key: ConvKey, choice: Choice) -> Any:
    """A function of (x, factors) running one candidate: the dense conv on the rebuilt
    kernel, or the (merged) factorized plan."""

    def run(x: Any, factors: list[Any]) -> Any:
        if choice.method == "reconstructed":
            kernel = SeKronTensor._trusted(factors, st.form, st.shapes, st.ranks, backend="jax")
            w = kernel.to_tensor()
            return dense_conv(x, w, args.stride, args.pad4, args.dilation, args.groups)
        g = choice.grouping
        shapes, ranks = merged_signature(st.shapes, st.ranks, st.form, g)
        merged = merge_factors(factors, st.shapes, st.ranks, st.form, g, jnp.einsum)
        plan = key._replace(shapes=shapes, ranks=ranks).plan(choice.layout)
        return run_plan(x, merged, plan, choice.layout)

    return run


def _run(x: Any, st: SeKronTensor, bias: Any, args: ConvArgs, measure: bool | None) -> Any:
    """The convolution of a batched NCHW input on checked arguments."""
    n, c, h, w = x.shape
    key = ConvKey(st.shapes, st.ranks, st.form, (n, c, h, w), args.stride, args.pad4, args.dilation)
    if args.method == "reconstructed" or args.groups != 1:
        choice = DENSE
    elif args.method == "factorized":
        choice = Choice("factorized", "nhwc", (1,) * len(st.shapes))
    else:
        shapes = tuple(tuple(f.shape) for f in st.factors)
        choice = _auto.choose(
            key, x.dtype, shapes, lambda ch, x_, fs: _run_choice(st, args, key, ch)(x_, fs), measure
        )
    out = _run_choice(st, args, key, choice)(x, list(st.factors))
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
    measure: bool | None = None,
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
        ``"reconstructed"`` one dense conv on the rebuilt kernel, ``"auto"`` the fastest of
        those and the plans with adjacent factors merged, measured once per shape (Notes).
    measure : bool, optional
        For ``method="auto"`` only: whether a new shape may be timed (as for
        :func:`sekron.torch.conv2d`; ``None`` means yes unless ``SEKRON_AUTO_MEASURE=0``).
        ``False`` uses the cost model (factorized when the MAC ratio is at least 4).

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
    :mod:`sekron._conv_plan`, shared with the torch backend. ``method="auto"`` times the
    compiled candidates on zero arrays of the call's shapes (their speed does not depend on
    the values), so it measures in eager calls and while ``jax.jit`` traces alike; the
    choice is cached per (signature, input shape, stride, padding, dilation, dtype) and
    :func:`sekron.jax.clear_cache` forgets it. It measures the forward (inference).

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
    >>> x = jax.random.normal(jax.random.key(0), (2, 16, 10, 10), dtype=jnp.float32)
    >>> y = conv2d(x, st, padding=1, method="factorized")
    >>> y.shape
    (2, 16, 10, 10)
    >>> ref = jax.lax.conv(x, st.to_tensor(), (1, 1), [(1, 1), (1, 1)])
    >>> bool(jnp.allclose(y, ref, atol=1e-4))
    True
    """
    options = (stride, padding, dilation, groups, method, measure)
    x, st, bias, args = _checked(x, st, bias, options, 2, "conv2d")
    if x.ndim == 3:
        return _run(x[None], st, bias, args, measure)[0]
    return _run(x, st, bias, args, measure)


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
    measure: bool | None = None,
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
    >>> x = jax.random.normal(jax.random.key(0), (3, 8, 20), dtype=jnp.float32)
    >>> y = conv1d(x, st, stride=2, method="factorized")
    >>> ref = jax.lax.conv(x[:, :, None], st.to_tensor()[:, :, None], (1, 2), "VALID")[:, :, 0]
    >>> bool(jnp.allclose(y, ref, atol=1e-4))
    True
    """
    options = (stride, padding, dilation, groups, method, measure)
    x, st, bias, args = _checked(x, st, bias, options, 1, "conv1d")
    factors = [f[..., None, :] for f in st.factors]
    shapes = tuple((f, c, 1, k) for f, c, k in st.shapes)
    st2 = SeKronTensor._trusted(factors, st.form, shapes, st.ranks, st.rel_error, backend="jax")
    x2 = x[..., None, :]
    batched = x2[None] if x.ndim == 2 else x2
    out = _run(batched, st2, bias, args, measure)
    out = out[0] if x.ndim == 2 else out
    return out[..., 0, :]
