"""The N-way Kronecker product and the rearrangement R that turns it into an outer product."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._backend import get_backend
from ._plan import factor_sizes
from ._rearrange import rearrange_unchecked, unrearrange_unchecked
from ._validation import check_array, check_shapes

__all__ = ["kron", "rearrange", "unrearrange"]


def _kron2(B: Any, a: Any, b: Any) -> Any:
    n = len(a.shape)
    a_view = B.reshape(a, tuple(v for s in a.shape for v in (s, 1)))
    b_view = B.reshape(b, tuple(v for s in b.shape for v in (1, s)))
    return B.reshape(a_view * b_view, tuple(a.shape[i] * b.shape[i] for i in range(n)))


def kron(*arrays: Any) -> Any:
    """Kronecker product of N-way arrays of equal ndim (theory docs).

    Parameters
    ----------
    *arrays : array
        One or more arrays with the same number of modes, all of one kind (numpy, torch or jax).

    Returns
    -------
    array
        ``(A ⊗ B)[i_1..i_N] = A[i_1 // b_1, ..] * B[i_1 % b_1, ..]``, of shape
        ``(a_1 b_1, .., a_N b_N)``; the first array is the slowest (most significant) digit.

    Raises
    ------
    TypeError
        If an argument is not a plain array (numpy subclasses such as masked arrays are
        refused), or the arrays are of different kinds.
    ValueError
        If no array is given or their numbers of modes differ.

    Notes
    -----
    For two arrays this equals ``np.kron`` / ``torch.kron`` / ``jnp.kron``; the product is
    associative, so more arrays are folded left to right.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron import kron
    >>> A, B = np.arange(4.0).reshape(2, 2), np.ones((3, 1))
    >>> np.array_equal(kron(A, B), np.kron(A, B))
    True
    >>> kron(np.ones((2, 1, 3)), np.ones((1, 4, 1)), np.ones((2, 2, 2))).shape
    (4, 8, 6)
    """
    if not arrays:
        raise ValueError("kron needs at least one array; got none.")
    names = [check_array(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    if len(set(names)) > 1:
        raise TypeError(f"all arrays must be of one kind; got {names}.")
    ndims = [a.ndim for a in arrays]
    if len(set(ndims)) > 1:
        raise ValueError(f"all arrays must have the same number of modes; got ndims {ndims}.")
    B = get_backend(names[0])
    out = arrays[0]
    for a in arrays[1:]:
        out = _kron2(B, out, a)
    return out


def rearrange(tensor: Any, shapes: Sequence[Sequence[int]]) -> Any:
    """The rearrangement R(W): an S-way tensor of shape ``(|a^(1)|, .., |a^(S)|)``.

    Under R a Kronecker product becomes an outer product,
    ``R(A_1 ⊗ .. ⊗ A_S) = vec A_1 ∘ .. ∘ vec A_S``, where ``vec`` flattens row-major.

    Parameters
    ----------
    tensor : array
        The N-way tensor W.
    shapes : sequence of S tuples of N ints
        Factor shapes; ``prod_k shapes[k][n] == tensor.shape[n]``.

    Returns
    -------
    array
        R(W). It is a view (no copy) when the permutation is trivial, e.g. one mode per factor.

    Raises
    ------
    TypeError
        ``tensor`` is not a plain numpy, torch or jax array, or ``shapes`` is of the wrong kind.
    ValueError
        ``shapes`` do not multiply out to the tensor's shape mode by mode.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron import kron, rearrange
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.random((2, 3)), rng.random((2, 2))
    >>> T = rearrange(kron(A, B), [(2, 3), (2, 2)])
    >>> np.allclose(T, np.outer(A.ravel(), B.ravel()))
    True
    """
    name = check_array(tensor, "tensor")
    checked = check_shapes(shapes, tuple(tensor.shape))
    return rearrange_unchecked(get_backend(name), tensor, checked)


def unrearrange(T: Any, shapes: Sequence[Sequence[int]]) -> Any:
    """The inverse of :func:`rearrange`: W from R(W).

    Parameters
    ----------
    T : array
        R(W), of shape ``(|a^(1)|, .., |a^(S)|)``.
    shapes : sequence of S tuples of N ints
        The factor shapes R was taken with.

    Returns
    -------
    array
        W, of shape ``(prod_k a^(k)_1, .., prod_k a^(k)_N)``.

    Raises
    ------
    TypeError
        ``T`` is not a plain numpy, torch or jax array, or ``shapes`` is of the wrong kind.
    ValueError
        ``T``'s shape is not the factor sizes of ``shapes``.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron import rearrange, unrearrange
    >>> W = np.random.default_rng(0).random((6, 4))
    >>> shapes = [(2, 2), (3, 2)]
    >>> np.array_equal(unrearrange(rearrange(W, shapes), shapes), W)
    True
    """
    name = check_array(T, "T")
    checked = check_shapes(shapes, None)
    expected = factor_sizes(checked)
    if tuple(T.shape) != expected:
        raise ValueError(f"T has shape {tuple(T.shape)} but shapes give R(W) shape {expected}.")
    return unrearrange_unchecked(get_backend(name), T, checked)
