"""Rank selection from singular values alone (theory docs), shared by decompose and search.

All arrays here are small numpy float64 tables; the tensor itself is never touched.

Nested error tables
-------------------
A nested SVD tree computed at caps ``M = (M_1..M_{S-1})`` gives, for level k and branch
``b = (r_1..r_{k-1})``, the kept squared singular values ``sig2[k][b, j]`` (``j < M_k``) and the
energy ``rest2[k][b]`` beyond the cap. Branches below ``r_k`` do not depend on the truncation
of other branches, so the exact squared error of *every* rank tuple ``R <= M`` follows::

    E_k[b, R_k, ..] = rest2_k[b] + Σ_{R_k <= j < M_k} sig2_k[b, j] + Σ_{j < R_k} E_{k+1}[b, j, ..]

with ``E_S = 0``. The table has ``prod(M)`` entries; above :data:`MAX_TABLE` entries a greedy
search on the same exact error replaces the enumeration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

import numpy as np

MAX_TABLE = 1 << 23


def suffix_sums(x: np.ndarray) -> np.ndarray:
    """``out[..., j] = Σ_{i >= j} x[..., i]`` (the reverse cumulative sum over the last axis)."""
    return np.cumsum(x[..., ::-1], axis=-1)[..., ::-1]


def tail(sig2: np.ndarray, rest2: np.ndarray) -> np.ndarray:
    """``tail[..., R-1] = rest2 + Σ_{j >= R} sig2[..., j]`` for R = 1..M: the squared error of
    keeping R of the values (every reverse-cumsum tail in sekron is this one)."""
    rc = suffix_sums(sig2)
    out = np.concatenate([rc[..., 1:], np.zeros_like(rc[..., :1])], axis=-1)
    return out + rest2[..., None]


def nested_error_table(sig2: Sequence[np.ndarray], rest2: Sequence[np.ndarray]) -> np.ndarray:
    """Squared absolute error of every rank tuple: ``E[R_1 - 1, .., R_{S-1} - 1]``."""
    levels = len(sig2)
    E = tail(sig2[-1], rest2[-1])  # shape (M_1..M_{S-2}, M_{S-1})
    for k in range(levels - 2, -1, -1):
        depth = sig2[k].ndim - 1  # number of branch axes at level k
        later = E.ndim - depth - 1  # axes for R_{k+1}..R_{S-1}
        kept = np.cumsum(E, axis=depth)  # Σ_{j < R_k} E_{k+1}[b, j, ..]
        E = tail(sig2[k], rest2[k]).reshape(sig2[k].shape + (1,) * later) + kept
    return E


def nested_error2(
    sig2: Sequence[np.ndarray], rest2: Sequence[np.ndarray], ranks: Sequence[int]
) -> float:
    """Squared absolute error of one rank tuple (same formula, only the kept branches)."""
    levels = len(sig2)
    idx = tuple(slice(0, r) for r in ranks[:-1])
    E = tail(sig2[-1][idx], rest2[-1][idx])[..., ranks[-1] - 1]
    for k in range(levels - 2, -1, -1):
        b = tuple(slice(0, r) for r in ranks[:k])
        s = sig2[k][b]
        R = ranks[k]
        E = rest2[k][b] + s[..., R:].sum(axis=-1) + E.sum(axis=-1)
    return float(E)


def grids(M: Sequence[int]) -> list[np.ndarray]:
    """Broadcastable rank grids R_k = 1..M_k, one axis per level."""
    out = []
    for k, m in enumerate(M):
        shape = [1] * len(M)
        shape[k] = m
        out.append(np.arange(1, m + 1, dtype=np.int64).reshape(shape))
    return out


def params_table(d: Sequence[int], M: Sequence[int], form: str) -> np.ndarray:
    """n_params of every rank tuple ``R <= M`` (same indexing as the error tables)."""
    R = grids(M)
    if form == "nested":
        total = np.zeros([1] * len(M), dtype=np.int64)
        P = np.ones([1] * len(M), dtype=np.int64)
        for k, r in enumerate(R):
            P = P * r
            total = total + P * d[k]
        return total + P * d[-1]
    bounds = [np.ones([1] * len(M), dtype=np.int64), *R, np.ones([1] * len(M), dtype=np.int64)]
    total = np.zeros([1] * len(M), dtype=np.int64)
    for k in range(len(d)):
        total = total + bounds[k] * bounds[k + 1] * d[k]
    return np.broadcast_to(total, tuple(M))


def select_from_tables(
    E: np.ndarray, params: np.ndarray, *, tol2: float | None, budget: int | None
) -> tuple[int, ...] | None:
    """Cheapest ranks with ``E <= tol2``, or lowest E with ``params <= budget``.

    Ties are broken towards the other criterion. Returns None when nothing qualifies.
    """
    E = np.broadcast_to(E, np.broadcast_shapes(E.shape, params.shape))
    params = np.broadcast_to(params, E.shape)
    if tol2 is not None:
        ok = E <= tol2
        if budget is not None:
            ok &= params <= budget
        if not ok.any():
            return None
        key_primary, key_secondary = params, E
    else:
        assert budget is not None
        ok = params <= budget
        if not ok.any():
            return None
        key_primary, key_secondary = E, params
    primary = np.where(ok, key_primary, np.inf)
    best = primary.min()
    cand = ok & (primary == best)
    secondary = np.where(cand, key_secondary, np.inf)
    flat = int(np.argmin(secondary))
    return tuple(int(i) + 1 for i in np.unravel_index(flat, E.shape))


def greedy_select(
    err2: Callable[[tuple[int, ...]], float],
    n_params: Callable[[tuple[int, ...]], int],
    M: Sequence[int],
    *,
    tol2: float | None,
    budget: int | None,
) -> tuple[int, ...] | None:
    """Grow ranks from 1, each step taking the increment with the best error drop per parameter.

    Used when the exact table would exceed :data:`MAX_TABLE` entries. The error of the result is
    still exact; only its optimality among all rank tuples is not guaranteed.
    """
    R = tuple(1 for _ in M)
    if budget is not None and n_params(R) > budget:
        return None
    e = err2(R)
    while tol2 is None or e > tol2:
        best = None
        for k in range(len(M)):
            if R[k] >= M[k]:
                continue
            step = max(1, R[k] // 8)
            cand = R[:k] + (min(M[k], R[k] + step),) + R[k + 1 :]
            p = n_params(cand)
            if budget is not None and p > budget:
                continue
            gain = (e - err2(cand)) / max(p - n_params(R), 1)
            if best is None or gain > best[0]:
                best = (gain, cand)
        if best is None:
            break
        R = best[1]
        e = err2(R)
    if tol2 is not None and e > tol2:
        return None
    return R


def table_fits(M: Sequence[int]) -> bool:
    return prod(M) <= MAX_TABLE


# ----------------------------------------------------------------------------------------------
# Tucker ranks from mode tails
# ----------------------------------------------------------------------------------------------
#: A parameter count of rank grids (broadcastable integer arrays, one per mode).
RankCount = Callable[[Sequence[np.ndarray]], np.ndarray]


def mode_tails(X: np.ndarray, modes: Sequence[int]) -> list[np.ndarray]:
    """``tails[k][t-1]``: energy outside the leading t left singular vectors of unfolding k."""
    tails = []
    for m in modes:
        M = np.moveaxis(X, m, 0).reshape(X.shape[m], -1)
        w = np.clip(np.linalg.eigvalsh(M @ M.T)[::-1], 0.0, None)
        tails.append(tail(w, np.asarray(0.0)))
    return tails


def _usable(t: Sequence[np.ndarray], kept: int) -> np.ndarray:
    """``t_k <= kept * prod_{l != k} t_l`` for every k: a larger Tucker rank cannot be used."""
    ok = np.asarray(True)
    for k in range(len(t)):
        ok = ok & (t[k] <= kept * prod(t[:k]) * prod(t[k + 1 :]))
    return ok


def choose_hosvd(
    tails: Sequence[np.ndarray], count: RankCount, budget: int, kept: int = 1
) -> tuple[int, ...] | None:
    """Usable ranks minimising ``Σ_k tail_k(t_k)`` (the HOSVD error bound), ``count(t) <= budget``.

    Usable: ``t_k <= kept * prod_{l != k} t_l``. None when no usable tuple fits the budget.
    """
    M = [t.shape[0] for t in tails]
    if table_fits(M):
        axes = grids(M)
        E = sum(t.reshape(g.shape) for t, g in zip(tails, axes, strict=True))
        E = np.where(_usable(axes, kept), E, np.inf)
        P = np.broadcast_to(count(axes), tuple(M))
        return select_from_tables(E, P, tol2=None, budget=budget)

    def err2(R: tuple[int, ...]) -> float:
        if not _usable([np.asarray(r) for r in R], kept):
            return float(np.inf)
        return float(sum(t[r - 1] for t, r in zip(tails, R, strict=True)))

    return greedy_select(
        err2, lambda R: int(count([np.asarray(r) for r in R])), M, tol2=None, budget=budget
    )


def budget_ranks(
    X: np.ndarray, modes: Sequence[int], count: RankCount, budget: int, kept: int = 1
) -> tuple[int, ...]:
    """Tucker-style ranks of ``modes`` of ``X`` for a budget that the all-ones ranks fit."""
    chosen = choose_hosvd(mode_tails(X, modes), count, budget, kept)
    assert chosen is not None  # all-ones ranks fit and are always usable
    return chosen
