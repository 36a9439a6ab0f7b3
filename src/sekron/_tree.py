"""The SVD trees of theory docs, shared by :func:`sekron.decompose` and :func:`sekron.search`.

All work happens on the rearranged tensor T = R(W), an S-way tensor of shape
``d = (|a^(1)|, .., |a^(S)|)`` in which every Kronecker product is an outer product.

- **Nested**: the recursive nearest-Kronecker SVD, batched level by level (:func:`nested_tree`);
  ranks are chosen from its exact error table (:func:`choose_nested`).
- **Chain**: TT-SVD on T (:func:`tt_svd`); within a budget, ranks minimise the certified bound
  ``Σ_k ε_k²`` of the unfoldings' Eckart-Young tails (:func:`unfolding_tails`,
  :func:`choose_chain_budget`).
- **Rank caps**: the largest rank of each level that any structure within a parameter budget
  can use (:func:`nested_caps`, :func:`chain_caps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any, NamedTuple

import numpy as np

from . import _ranks
from ._backend import sq_norm, to_numpy
from ._plan import chain_params, full_ranks, nested_params
from ._svd import truncated_svd
from ._typing import Ranks, Shapes, SVDMethod

__all__ = [
    "Fits",
    "NestedTree",
    "chain_caps",
    "choose_chain_budget",
    "choose_nested",
    "nested_caps",
    "nested_tree",
    "slice_nested",
    "tt_svd",
    "unfolding_tails",
]


# ----------------------------------------------------------------------------------------------
# rank caps within a budget
# ----------------------------------------------------------------------------------------------
def nested_caps(d: Sequence[int], shapes: Shapes, budget: int) -> Ranks:
    """Largest R_k of a nested structure within ``budget`` (every other rank 1), at most full."""
    full = full_ranks(shapes, "nested")
    return tuple(
        max(1, min(full[k], (budget - sum(d[:k])) // sum(d[k:]))) for k in range(len(d) - 1)
    )


def chain_caps(d: Sequence[int], shapes: Shapes, budget: int) -> Ranks:
    """Largest R_k of a chain within ``budget`` (every other rank 1), at most full."""
    full = full_ranks(shapes, "chain")
    return tuple(
        max(1, min(full[k], (budget - sum(d) + d[k] + d[k + 1]) // (d[k] + d[k + 1])))
        for k in range(len(d) - 1)
    )


# ----------------------------------------------------------------------------------------------
# nested: the SVD tree
# ----------------------------------------------------------------------------------------------
class NestedTree(NamedTuple):
    """A nested SVD tree computed at caps ``M``.

    ``U[k]`` has shape (M_1..M_k, d_k) after reshaping (orthonormal over d_k per branch);
    ``last`` has shape (M_1..M_{S-1}, d_S) and carries the scale. ``sig2``/``rest2`` are the
    numpy tables of :mod:`sekron._ranks`. ``norm2`` is ``||T||²``.
    """

    U: list[Any]
    last: Any
    sig2: list[np.ndarray]
    rest2: list[np.ndarray]
    caps: Ranks
    norm2: float


def nested_tree(
    B: Any,
    T: Any,
    d: Sequence[int],
    caps: Sequence[int],
    method: SVDMethod,
    rng: np.random.Generator,
) -> NestedTree:
    """Recursive nearest-Kronecker SVD of T, batched level by level (one stacked SVD each)."""
    n_levels = len(d) - 1
    X = B.reshape(T, (1, d[0], prod(d[1:])))
    norm2 = float(sq_norm(T))
    Us, sig2s, rest2s, Ms = [], [], [], []
    for k in range(n_levels):
        level = truncated_svd(B, X, caps[k], method, rng)
        M = level.sig2.shape[1]
        Ms.append(M)
        branch = tuple(Ms[:-1])
        # U (P, d_k, M) -> (M_1..M_{k-1}, M, d_k)
        Us.append(B.reshape(B.transpose(level.U, (0, 2, 1)), (*branch, M, d[k])))
        sig2s.append(level.sig2.reshape(*branch, M))
        rest2s.append(level.rest2.reshape(branch))
        rest = prod(d[k + 2 :])
        X = B.reshape(level.Y, (level.Y.shape[0] * M, d[k + 1], rest))
    last = B.reshape(X, (*Ms, d[-1]))
    return NestedTree(Us, last, sig2s, rest2s, tuple(Ms), norm2)


def slice_nested(tree: NestedTree, ranks: Ranks, shapes: Shapes, B: Any) -> list[Any]:
    """The nested factors at ``ranks`` (each at most the tree's caps), in ``shapes``."""
    factors = []
    for k, U in enumerate(tree.U):
        idx = tuple(slice(0, r) for r in ranks[: k + 1])
        factors.append(B.reshape(U[idx], (*ranks[: k + 1], *shapes[k])))
    idx = tuple(slice(0, r) for r in ranks)
    factors.append(B.reshape(tree.last[idx], (*ranks, *shapes[-1])))
    return factors


def choose_nested(
    tree: NestedTree,
    d: Sequence[int],
    tol2: float | None,
    budget: int | None,
    fits: Fits | None = None,
) -> Ranks | None:
    """Cheapest ranks within ``tol2`` or lowest error within ``budget``, from exact errors;
    with ``fits`` (ranks or rank grids -> bool), only the ranks it accepts (``budget`` given)."""
    M = tree.caps
    if _ranks.table_fits(M):
        E = _ranks.nested_error_table(tree.sig2, tree.rest2)
        P = _exclude(_ranks.params_table(d, M, "nested"), M, fits, budget)
        return _ranks.select_from_tables(E, P, tol2=tol2, budget=budget)
    return _ranks.greedy_select(
        lambda R: _ranks.nested_error2(tree.sig2, tree.rest2, R),
        _count_within(lambda R: nested_params(d, R), fits, budget),
        M,
        tol2=tol2,
        budget=budget,
    )


#: Which ranks (a tuple of ints, or broadcastable rank grids) a second budget accepts.
Fits = Callable[[Sequence[Any]], Any]


def _exclude(P: np.ndarray, M: Sequence[int], fits: Fits | None, budget: int | None) -> np.ndarray:
    """The parameter table with the ranks ``fits`` refuses priced above ``budget``."""
    if fits is None:
        return P
    assert budget is not None
    return np.where(fits(_ranks.grids(M)), P, budget + 1)


def _count_within(
    count: Callable[[tuple[int, ...]], int], fits: Fits | None, budget: int | None
) -> Callable[[tuple[int, ...]], int]:
    """``count`` with the ranks ``fits`` refuses priced above ``budget``."""
    if fits is None:
        return count
    assert budget is not None
    return lambda R: count(R) if bool(fits(R)) else budget + 1


# ----------------------------------------------------------------------------------------------
# chain: TT-SVD on R(W)
# ----------------------------------------------------------------------------------------------
def tt_svd(
    B: Any,
    T: Any,
    d: Sequence[int],
    caps: Sequence[int],
    method: SVDMethod,
    rng: np.random.Generator,
    tol2: float | None,
) -> tuple[list[Any], float]:
    """TT-SVD of T. With ``tol2`` the unused error budget is passed on to the later steps.

    Returns the flattened cores ``(R_{k-1}, R_k, d_k)`` (the last carries the scale) and the
    exact squared error ``Σ_k (discarded energy at step k)``.
    """
    n_levels = len(d) - 1
    r_prev = 1
    X = B.reshape(T, (1, d[0], prod(d[1:])))
    cores, err2 = [], 0.0
    for k in range(n_levels):
        cap = caps[k] if tol2 is None else min(caps[k], X.shape[1], X.shape[2])
        level = truncated_svd(B, X, cap, method if tol2 is None else "exact", rng)
        U, Y, sig2, rest2 = level
        if tol2 is not None:
            allowance = max(tol2 - err2, 0.0) / (n_levels - k)
            tail = _ranks.tail(sig2[0], np.asarray(rest2[0]))
            fits = np.nonzero(tail <= allowance)[0]
            r = int(fits[0]) + 1 if fits.size else sig2.shape[1]
            rest2 = rest2 + sig2[:, r:].sum(axis=1)
            U, Y = U[:, :, :r], Y[:, :r, :]
        err2 += float(rest2.sum())
        r = U.shape[2]
        cores.append(B.transpose(B.reshape(U, (r_prev, d[k], r)), (0, 2, 1)))
        r_prev = r
        X = B.reshape(Y, (1, r * d[k + 1], prod(d[k + 2 :])))
    cores.append(B.reshape(X, (r_prev, 1, d[-1])))
    return cores, err2


def unfolding_tails(B: Any, T: Any, d: Sequence[int], caps: Sequence[int]) -> list[np.ndarray]:
    """``tail_k[R-1]``: best squared error of the k-th unfolding of T at rank R (Eckart-Young)."""
    tails = []
    for k in range(len(d) - 1):
        m, n = prod(d[: k + 1]), prod(d[k + 1 :])
        X = B.reshape(T, (m, n))
        G = B.matmul(X, B.transpose(X, (1, 0))) if m <= n else B.matmul(B.transpose(X, (1, 0)), X)
        w = np.clip(np.sort(np.asarray(to_numpy(B.eigh(G)[0]), dtype=np.float64))[::-1], 0, None)
        sig2 = w[: caps[k]]
        tails.append(_ranks.tail(sig2, np.asarray(w[caps[k] :].sum())))
    return tails


def choose_chain_budget(
    tails: list[np.ndarray], d: Sequence[int], budget: int, fits: Fits | None = None
) -> Ranks | None:
    """Ranks minimising the certified bound Σ_k ε_k(R_k)² within the budget (and accepted by
    ``fits``, when given)."""
    M = [t.shape[0] for t in tails]

    def valid(R: Sequence[Any]) -> Any:
        # a TT-SVD step k can use at most R_{k-1} d_k (left) and d_{k+1} R_{k+1} (right)
        b = [1, *R, 1]
        ok = True
        for k in range(len(R)):
            ok = ok & (b[k + 1] <= b[k] * d[k]) & (b[k + 1] <= d[k + 1] * b[k + 2])
        return ok

    if _ranks.table_fits(M):
        grids = _ranks.grids(M)
        E = sum(t.reshape(g.shape) for t, g in zip(tails, grids, strict=True))
        E = np.where(valid(grids), E, np.inf)
        P = _exclude(np.asarray(_ranks.params_table(d, M, "chain")), M, fits, budget)
        return _ranks.select_from_tables(E, P, tol2=None, budget=budget)
    return _ranks.greedy_select(
        lambda R: (
            sum(float(t[r - 1]) for t, r in zip(tails, R, strict=True)) if valid(R) else np.inf
        ),
        _count_within(lambda R: chain_params(d, R), fits, budget),
        M,
        tol2=None,
        budget=budget,
    )
