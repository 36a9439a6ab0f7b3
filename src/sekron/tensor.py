"""SeKronTensor: the immutable result container, in nested or chain form (theory docs)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from math import prod
from typing import Any

from ._backend import get_backend
from ._plan import (
    Ranks,
    Shapes,
    factor_sizes,
    n_params,
    tensor_shape,
)
from ._rearrange import unrearrange_unchecked
from ._typing import Form
from ._validation import _type_name, check_array_group, check_form

__all__ = ["SeKronTensor"]


def _infer(factors: Sequence[Any], form: str) -> tuple[Shapes, Ranks]:
    """Factor shapes and ranks from the factors' array shapes; precise errors on mismatch."""
    n_factors = len(factors)
    if form == "nested":
        n_modes = factors[0].ndim - 1
        if n_modes < 1:
            raise ValueError(
                f"factors[0] of a nested SeKronTensor has shape (R_1, *shapes[0]); got "
                f"{tuple(factors[0].shape)}, which has no mode."
            )
        ranks = tuple(int(r) for r in factors[-2].shape[: n_factors - 1])
        shapes = []
        for k, f in enumerate(factors):
            n_rank_dims = min(k + 1, n_factors - 1)
            want_ndim = n_rank_dims + n_modes
            if f.ndim != want_ndim:
                raise ValueError(
                    f"factors[{k}] has {f.ndim} dims but a nested factor {k} of {n_factors} "
                    f"with {n_modes} modes has {want_ndim}: (R_1..R_{n_rank_dims}, *shapes[{k}])."
                )
            got = tuple(int(r) for r in f.shape[:n_rank_dims])
            if got != ranks[:n_rank_dims]:
                raise ValueError(
                    f"factors[{k}] has leading rank dims {got} but the ranks are "
                    f"{ranks[:n_rank_dims]} (from factors[{n_factors - 2}])."
                )
            shapes.append(tuple(int(v) for v in f.shape[n_rank_dims:]))
        return tuple(shapes), ranks
    n_modes = factors[0].ndim - 2
    if n_modes < 1:
        raise ValueError(
            f"factors[0] of a chain SeKronTensor has shape (1, R_1, *shapes[0]); got "
            f"{tuple(factors[0].shape)}."
        )
    shapes = []
    for k, f in enumerate(factors):
        if f.ndim != n_modes + 2:
            raise ValueError(
                f"factors[{k}] has {f.ndim} dims but a chain factor with {n_modes} modes has "
                f"{n_modes + 2}: (R_{k}, R_{k + 1}, *shapes[{k}])."
            )
        shapes.append(tuple(int(v) for v in f.shape[2:]))
    if factors[0].shape[0] != 1 or factors[-1].shape[1] != 1:
        raise ValueError(
            "a chain's boundary ranks must be 1: factors[0].shape[0] == 1 and "
            f"factors[-1].shape[1] == 1; got {factors[0].shape[0]} and {factors[-1].shape[1]}."
        )
    for k in range(n_factors - 1):
        if factors[k].shape[1] != factors[k + 1].shape[0]:
            raise ValueError(
                f"chain ranks disagree: factors[{k}].shape[1] == {factors[k].shape[1]} but "
                f"factors[{k + 1}].shape[0] == {factors[k + 1].shape[0]}."
            )
    ranks = tuple(int(f.shape[1]) for f in factors[:-1])
    return tuple(shapes), ranks


def _check_one_device(factors: Sequence[Any]) -> None:
    """Torch factors must share one device (a ``meta`` or CUDA factor among CPU ones would
    make :meth:`SeKronTensor.to_tensor` fail deep inside torch, or return a meta tensor)."""
    device = factors[0].device
    for k, f in enumerate(factors[1:], start=1):
        if f.device != device:
            raise ValueError(
                f"factors must share one device; factors[0] is on {device} but factors[{k}] "
                f"is on {f.device}. Move them with .to(device)."
            )


class SeKronTensor:
    """A tensor stored as a sequence of Kronecker products (SeKron), nested or chain form.

    Parameters
    ----------
    factors : sequence of S >= 2 arrays
        All numpy, all torch or all jax, of one dtype. Layouts (theory docs), with ``N`` modes:

        - ``form="nested"``: factor k < S has shape ``(R_1..R_k, *shapes[k])``; the last has
          ``(R_1..R_{S-1}, *shapes[S-1])``.
        - ``form="chain"``: factor k has shape ``(R_{k-1}, R_k, *shapes[k])`` with
          ``R_0 = R_S = 1``.
    form : {"nested", "chain"}
    rel_error : float, optional
        Relative Frobenius error ``||W - Ŵ|| / ||W||`` of the approximation this tensor is of.
        Set by :func:`sekron.decompose`; ``None`` for a tensor built from factors.

    Notes
    -----
    Nested form::

        Ŵ = Σ_{r1} A1[r1] ⊗ Σ_{r2} A2[r1, r2] ⊗ … ⊗ A_S[r1..r_{S-1}]

    Chain form::

        Ŵ = Σ_r A1[0, r1] ⊗ A2[r1, r2] ⊗ … ⊗ A_S[r_{S-1}, 0]

    The container is immutable: its attributes are read-only and it is validated once, here.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron import SeKronTensor
    >>> A1, A2 = np.ones((2, 4, 4, 3, 1)), np.ones((2, 16, 16, 1, 3))
    >>> st = SeKronTensor([A1, A2])
    >>> st
    nested SeKronTensor of shape (64, 64, 3, 3): 2 factors, ranks (2,), 1,632 params
    >>> st.to_tensor().shape
    (64, 64, 3, 3)
    """

    __slots__ = ("_factors", "_form", "_shapes", "_ranks", "_rel_error", "_backend", "_shape")

    def __init__(
        self,
        factors: Sequence[Any],
        form: str = "nested",
        *,
        rel_error: float | None = None,
        error: float | None = None,
    ) -> None:
        form = check_form(form)
        if isinstance(factors, str | bytes) or not isinstance(factors, Sequence):
            raise TypeError(f"factors must be a sequence of arrays; got {_type_name(factors)}.")
        if len(factors) < 2:
            raise ValueError(f"factors must hold at least 2 arrays (S >= 2); got {len(factors)}.")
        backend = check_array_group(factors, lambda k: f"factors[{k}]", "factors")
        if backend == "pytorch":
            _check_one_device(factors)
        shapes, ranks = _infer(factors, form)
        for k, s in enumerate(shapes):
            if any(v < 1 for v in s):
                raise ValueError(f"factors[{k}] has an empty mode: shapes[{k}] == {s}.")
        if any(r < 1 for r in ranks):
            raise ValueError(f"ranks must be >= 1; got {ranks}.")
        if error is not None:
            warnings.warn(
                "SeKronTensor(error=...) is deprecated; use rel_error=...",
                DeprecationWarning,
                stacklevel=2,
            )
            if rel_error is None:
                rel_error = error
        if rel_error is not None:
            rel_error = float(rel_error)
        self._set(tuple(factors), form, shapes, ranks, rel_error, backend)

    def _set(
        self,
        factors: tuple[Any, ...],
        form: str,
        shapes: Shapes,
        ranks: Ranks,
        rel_error: float | None,
        backend: str,
    ) -> None:
        self._factors = factors
        self._form = form
        self._shapes = shapes
        self._shape = tensor_shape(shapes)
        self._ranks = ranks
        self._rel_error = rel_error
        self._backend = backend

    @classmethod
    def _trusted(
        cls,
        factors: Sequence[Any],
        form: str,
        shapes: Shapes,
        ranks: Ranks,
        rel_error: float | None = None,
        backend: str = "pytorch",
    ) -> SeKronTensor:
        """Internal: a SeKronTensor of factors already known to be valid, without checks.

        For callers that hold checked factors whose layout they know (a layer's parameters):
        building one then costs a few attribute writes instead of a validation pass.
        """
        obj = cls.__new__(cls)
        obj._set(tuple(factors), form, shapes, ranks, rel_error, backend)
        return obj

    # -- read-only attributes ------------------------------------------------------------------
    @property
    def factors(self) -> tuple[Any, ...]:
        """The factor arrays, in the layout of :attr:`form` (theory docs)."""
        return self._factors

    @property
    def form(self) -> Form:
        """'nested' (the paper's form) or 'chain' (TT over Kronecker groups)."""
        return self._form  # type: ignore[return-value]

    @property
    def shapes(self) -> Shapes:
        """The S factor shapes, each with one size per tensor mode."""
        return self._shapes

    @property
    def ranks(self) -> Ranks:
        """The S - 1 ranks ``(R_1..R_{S-1})``."""
        return self._ranks

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full tensor: ``prod_k shapes[k][n]`` for every mode n."""
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shapes[0])

    @property
    def n_factors(self) -> int:
        return len(self._factors)

    @property
    def n_params(self) -> int:
        """Number of stored numbers: the total size of the factors."""
        return n_params(self._shapes, self._ranks, self._form)

    @property
    def compression(self) -> float:
        """``prod(shape) / n_params``."""
        return prod(self.shape) / self.n_params

    @property
    def rel_error(self) -> float | None:
        """Exact relative Frobenius error ``||W - Ŵ|| / ||W||`` of the approximation (None if
        built from factors)."""
        return self._rel_error

    @property
    def error(self) -> float | None:
        """Deprecated alias of :attr:`rel_error` (one name per quantity); removed in 0.3."""
        warnings.warn(
            "SeKronTensor.error is deprecated; use SeKronTensor.rel_error",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._rel_error

    @property
    def backend(self) -> str:
        """TensorLy backend name of the factors: 'numpy', 'pytorch' or 'jax'."""
        return self._backend

    @property
    def dtype(self) -> Any:
        return self._factors[0].dtype

    # -- computation ---------------------------------------------------------------------------
    def to_rearranged(self) -> Any:
        """R(Ŵ), the S-way tensor of shape ``(|a^(1)|, .., |a^(S)|)``, contiguous.

        Built from the last factor to the first by matrix products, one per rank: the same sum
        as the einsum of :func:`sekron._plan.reconstruction_equation`, in its output order.
        An einsum (opt_einsum's plan, torch's tensordot) put the long mode first in its one
        product and transposed after: 2-10x slower for every (r, |a^(1)|, |a^(2)|) timed
        (issue #16, torch CPU: 587 against 53 µs for (2, 4, 16384), the (2, 2)x(128, 128)
        1x1 kernel), and the unrearranging copy then read a transposed array.
        """
        B = get_backend(self._backend)
        d = factor_sizes(self._shapes)
        flat = []
        for f, dk in zip(self._factors, d, strict=True):
            n_rank_dims = f.ndim - self.ndim
            flat.append(B.reshape(f, tuple(f.shape[:n_rank_dims]) + (dk,)))
        if self._form == "nested":
            out = _nested_products(B, flat)
        else:
            out = _chain_products(B, flat)
        return B.reshape(out, tuple(d))

    def to_tensor(self) -> Any:
        """The full tensor Ŵ, an array of the factors' kind, dtype and device.

        Differentiable with respect to the factors on autograd backends.
        """
        B = get_backend(self._backend)
        return unrearrange_unchecked(B, self.to_rearranged(), self._shapes)

    def with_rel_error(self, rel_error: float | None) -> SeKronTensor:
        """A copy sharing the factors, with :attr:`rel_error` set."""
        value = None if rel_error is None else float(rel_error)
        return SeKronTensor._trusted(
            self._factors, self._form, self._shapes, self._ranks, value, self._backend
        )

    def __repr__(self) -> str:
        text = (
            f"{self._form} SeKronTensor of shape {self.shape}: {len(self._factors)} factors, "
            f"ranks {self._ranks}, {self.n_params:,} params"
        )
        if self._rel_error is not None:
            text += f", rel. error {self._rel_error:.3g}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._factors, self._form, self._rel_error))


def _rebuild(factors: tuple[Any, ...], form: str, rel_error: float | None) -> SeKronTensor:
    return SeKronTensor(factors, form, rel_error=rel_error)


def _nested_products(B: Any, flat: list[Any]) -> Any:
    """R(Ŵ) of the nested form as a (|a^(1)|, rest) matrix: factor k (0-based) is
    ``(r_1, .., r_{k+1}, d_k)`` (the last has the S - 1 ranks of the one before), and
    ``acc`` holds ``Σ F_{k+1} ⊗ .. ⊗ F_S`` per value of the ranks before, so each step is one
    batched product over ``r_{k+1}`` (batch: the earlier ranks)."""
    last = flat[-1]
    acc = B.reshape(last, (-1, last.shape[-1]))  # (r_1 .. r_{S-1}, d_S)
    for k in range(len(flat) - 2, -1, -1):
        f = flat[k]
        batch, r, dk = prod(f.shape[:k]), f.shape[k], f.shape[-1]
        left = B.transpose(B.reshape(f, (batch, r, dk)), (0, 2, 1))  # (batch, d_k, r)
        acc = B.matmul(left, B.reshape(acc, (batch, r, -1)))  # (batch, d_k, rest)
        acc = B.reshape(acc, (batch, -1))
    return acc


def _chain_products(B: Any, flat: list[Any]) -> Any:
    """R(Ŵ) of the chain form: factor k is ``(r_k, r_{k+1}, d_k)``; the outer ranks r_0 and
    r_S, each in one factor only, are summed (as in the einsum)."""
    acc = B.sum(flat[-1], axis=1)  # (r_{S-1}, d_S)
    for f in reversed(flat[:-1]):
        r0, r1, dk = f.shape
        left = B.reshape(B.transpose(f, (0, 2, 1)), (r0 * dk, r1))
        acc = B.reshape(B.matmul(left, acc), (r0, -1))
    return B.sum(acc, axis=0)
