"""CP (CANDECOMP/PARAFAC) by alternating least squares, embedded in nested form."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar, Literal

import numpy as np

from .._backend import _thread_backend
from .._embeddings import _cp_factors
from .._validation import check_choice, check_number, check_positive_int
from ._base import _check_rank_seq, _check_tensor_shape, _Context, _Fit, _TensorLyStructure


def _mttkrp(X: np.ndarray, factors: Sequence[np.ndarray], mode: int) -> np.ndarray:
    """``X_(mode) · (⊙_{k != mode} U_k)``, the unfolding times the Khatri-Rao product, without
    forming that product: the largest other mode is contracted first by one matrix product,
    then the rest one at a time, keeping the rank index. The largest array held has
    ``X.size / n_first · R`` entries; the Khatri-Rao product of a (512, 512, 3, 3) weight's
    modes 0-2 at rank 573 held 786,432 x 573 (3.6 GB, twice over while being built)."""
    others = [k for k in range(X.ndim) if k != mode]
    first = max(others, key=lambda k: X.shape[k])
    T = np.moveaxis(X, first, -1) @ factors[first]  # the other axes in order, then r
    axes = [k for k in range(X.ndim) if k != first]
    for k in others:
        if k != first:
            pos = axes.index(k)
            T = np.einsum("...ir,ir->...r", np.moveaxis(T, pos, -2), factors[k])
            axes.pop(pos)
    return T


def _pinv_psd(V: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a symmetric positive semi-definite matrix (eigenvalues below
    ``R·eps·λ_max`` dropped, the cut ``lstsq`` makes); equals the inverse when V is regular."""
    w, Q = np.linalg.eigh(V)
    if not w[-1] > 0.0:
        return np.zeros_like(V)
    keep = w > w[-1] * V.shape[0] * np.finfo(V.dtype).eps
    return (Q[:, keep] / w[keep]) @ Q[:, keep].T


def _solve(V: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``M V⁻¹`` as ``parafac`` computes it (V is symmetric), or ``M V⁺`` where V is singular."""
    try:
        U = np.linalg.solve(V, M.T).T
        if np.isfinite(U).all():
            return U
    except np.linalg.LinAlgError:
        pass
    return M @ _pinv_psd(V)


def _svd_init(X: np.ndarray, R: int, rs: np.random.RandomState) -> list[np.ndarray]:
    """TensorLy's SVD initialization: the leading R left singular vectors of each unfolding
    (scaled by the singular values for mode 0), padded with uniform random columns when a mode
    is smaller than R."""
    factors = []
    for m in range(X.ndim):
        U, s, _ = np.linalg.svd(np.moveaxis(X, m, 0).reshape(X.shape[m], -1), full_matrices=False)
        U = U[:, :R]
        if m == 0:
            U = U * s[: U.shape[1]]
        if X.shape[m] < R:
            U = np.concatenate([U, rs.random_sample((X.shape[m], R - X.shape[m]))], axis=1)
        factors.append(U)
    return factors


def _random_init(X: np.ndarray, R: int, rs: np.random.RandomState) -> list[np.ndarray]:
    from tensorly.random import random_cp

    with _thread_backend("numpy"):
        cp = random_cp(X.shape, R, normalise_factors=False, random_state=rs)
    return [np.asarray(f, dtype=np.float64) for f in cp.factors]


def _cp_als(
    X: np.ndarray,
    R: int,
    *,
    init: str,
    n_iter_max: int,
    tol: float,
    rs: np.random.RandomState,
    ctx: _Context | None = None,
) -> tuple[list[np.ndarray], bool]:
    """CP of rank R by ALS, as TensorLy's ``parafac`` runs it, with least-squares updates.

    Each update solves its normal equations ``U_m V = X_(m) (⊙ U_k)`` as ``parafac`` does, and
    by the pseudo-inverse of V where V is singular: for a zero, constant or exactly low-rank
    tensor, or a rank above what the tensor needs, ``solve`` fails there, while the
    minimum-norm solution keeps the exact fit. Stops when the relative error changes by
    less than ``tol`` (TensorLy's ``abs_rec_error`` criterion), after ``n_iter_max`` sweeps, or
    when ``ctx`` expires (then the second value is True: cut short).
    """
    norm2 = float(np.vdot(X, X))
    if norm2 == 0.0:  # the zero CP is exact
        return [np.zeros((n, R)) for n in X.shape], False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        factors = _svd_init(X, R, rs) if init == "svd" else _random_init(X, R, rs)
    grams = [U.T @ U for U in factors]
    errors: list[float] = []
    for it in range(n_iter_max):
        for m in range(X.ndim):
            V = prod(g for k, g in enumerate(grams) if k != m)
            M = _mttkrp(X, factors, m)
            factors[m] = _solve(V, M)
            grams[m] = factors[m].T @ factors[m]
        # ||X - Xhat||² = ||X||² + ||Xhat||² - 2 <X, Xhat>, <X, Xhat> from the last MTTKRP
        fit2 = float(np.sum(prod(grams)))
        inner = float(np.sum(M * factors[-1]))
        errors.append(float(np.sqrt(abs(norm2 + fit2 - 2 * inner) / norm2)))
        if tol and it >= 1 and abs(errors[-2] - errors[-1]) < tol:
            return factors, False
        if ctx is not None and ctx.expired():
            return factors, it < n_iter_max - 1
    return factors, False


@dataclass(frozen=True)
class CP(_TensorLyStructure):
    """CP (CANDECOMP/PARAFAC), fitted by ALS as TensorLy's ``parafac``, embedded in nested form.

    ``rank`` is the number of rank-one terms R; ``rank`` or ``max_params`` is required.
    Parameters: ``R Σ_k n_k`` (weights folded into the first factor), which is also the count
    of the embedding, ranks ``(R, 1, .., 1)``. R is capped at :meth:`max_rank`
    (``min_k Π_{l != k} n_l``, where every tensor is exactly CP). With ``max_params`` R is the
    largest rank that fits — optimal in the count, while ALS itself is a local method.

    The ALS sweeps are TensorLy's ``parafac`` (same initialization, update order and stopping
    rule, so the fits agree to rounding), except that each update is solved by least squares:
    zero, constant and exactly low-rank tensors get their exact fit where ``parafac`` raises
    ``LinAlgError: Singular matrix``.

    Attributes
    ----------
    n_iter_max : int
        ALS sweeps (default 100). ``init`` ("svd" or "random") and ``tol`` are ``parafac``'s;
        the result is deterministic given ``random_state``.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import CP
    >>> W = np.random.default_rng(0).standard_normal((4, 5, 6))
    >>> st = CP().fit(W, rank=3, random_state=0)
    >>> st.ranks, st.n_params, CP().n_params(W.shape, 3)
    ((3, 1), 45, 45)
    >>> CP().fit(np.zeros((6, 4, 5)), rank=2).rel_error
    0.0
    """

    n_iter_max: int = 100
    init: Literal["svd", "random"] = "svd"
    tol: float = 1e-8
    name: ClassVar[str] = "cp"

    def __post_init__(self) -> None:
        check_positive_int(self.n_iter_max, "n_iter_max")
        check_choice(self.init, "init", ("svd", "random"))
        check_number(self.tol, "tol", at_least=0.0)

    @staticmethod
    def max_rank(tensor_shape: Sequence[int]) -> int:
        """``min_k Π_{l != k} n_l``: every tensor is exactly a CP of this rank; fits cap R here."""
        n = tuple(tensor_shape)
        return min(prod(n[:k]) * prod(n[k + 1 :]) for k in range(len(n)))

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``R Σ_k n_k``, with R capped at :meth:`max_rank`."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "CP")
        if rank is None:
            raise ValueError("CP needs rank (the number of rank-one terms); got None.")
        return min(self._rank(rank), self.max_rank(shape)) * sum(shape)

    @staticmethod
    def _rank(rank: Any) -> int:
        """R from an int or the 1-tuple ``(R,)`` (a fit's own ranks)."""
        r = _check_rank_seq(rank, (1,), "CP (the number of rank-one terms R)")
        assert r is not None
        return r[0]

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"rank {ranks[0]}"

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        if rank is None and budget is None:
            raise ValueError("CP needs rank or max_params; got neither.")
        R = budget // sum(shape) if budget is not None else self._rank(rank)
        R = min(R, self.max_rank(shape))
        factors, cut = _cp_als(
            self._numpy(t),
            R,
            init=self.init,
            n_iter_max=self.n_iter_max,
            tol=self.tol,
            rs=ctx.tensorly_rs,
            ctx=ctx,
        )
        B, (weights, *native) = self._native([np.ones(R), *factors], t)
        embedded = _cp_factors(B, weights, native)
        return _Fit((R,), R * sum(shape), embedded, "nested", cut)
