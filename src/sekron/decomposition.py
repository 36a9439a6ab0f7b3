"""decompose(): recursive nearest-Kronecker SVD (nested), TT-SVD (chain), rank selection, ALS.

The maths is SPEC §3. All work happens on the rearranged tensor T = R(W), an S-way tensor of
shape ``d = (|a^(1)|, .., |a^(S)|)`` in which every Kronecker product is an outer product.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, NamedTuple

import numpy as np

from . import _ranks
from ._backend import eps, get_backend, like, sq_norm, to_numpy
from ._plan import (
    Ranks,
    Shapes,
    chain_params,
    contraction,
    factor_sizes,
    full_ranks,
    nested_params,
)
from ._svd import METHODS, truncated_svd
from ._validation import (
    check_form,
    check_max_params,
    check_rank,
    check_shapes,
    check_tensor,
    check_tol,
    is_int,
)
from .kron import rearrange_unchecked
from .random import check_random_state
from .tensor import SeKronTensor

__all__ = ["decompose", "NestedTree", "nested_tree"]


# ----------------------------------------------------------------------------------------------
# nested: the SVD tree
# ----------------------------------------------------------------------------------------------
class NestedTree(NamedTuple):
    """A nested SVD tree computed at caps ``M``.

    ``U[k]`` has shape (M_1..M_k, d_k) after reshaping (orthonormal over d_k per branch);
    ``last`` has shape (M_1..M_{S-1}, d_S) and carries the scale. ``sig2``/``rest2`` are the
    numpy tables of :mod:`sekron._ranks`. ``norm2`` is ``||W||²``.
    """

    U: list[Any]
    last: Any
    sig2: list[np.ndarray]
    rest2: list[np.ndarray]
    caps: Ranks
    norm2: float


def nested_tree(
    B: Any, T: Any, d: Sequence[int], caps: Sequence[int], method: str, rng: np.random.Generator
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


def _slice_nested(tree: NestedTree, ranks: Ranks, shapes: Shapes, B: Any) -> list[Any]:
    factors = []
    for k, U in enumerate(tree.U):
        idx = tuple(slice(0, r) for r in ranks[: k + 1])
        factors.append(B.reshape(U[idx], (*ranks[: k + 1], *shapes[k])))
    idx = tuple(slice(0, r) for r in ranks)
    factors.append(B.reshape(tree.last[idx], (*ranks, *shapes[-1])))
    return factors


def _choose_nested(
    tree: NestedTree, d: Sequence[int], tol2: float | None, budget: int | None
) -> Ranks | None:
    M = tree.caps
    if _ranks.table_fits(M):
        E = _ranks.nested_error_table(tree.sig2, tree.rest2)
        return _ranks.select_from_tables(
            E, _ranks.params_table(d, M, "nested"), tol2=tol2, budget=budget
        )
    return _ranks.greedy_select(
        lambda R: _ranks.nested_error2(tree.sig2, tree.rest2, R),
        lambda R: nested_params(d, R),
        M,
        tol2=tol2,
        budget=budget,
    )


# ----------------------------------------------------------------------------------------------
# chain: TT-SVD on R(W)
# ----------------------------------------------------------------------------------------------
def _tt_svd(
    B: Any,
    T: Any,
    d: Sequence[int],
    caps: Sequence[int],
    method: str,
    rng: np.random.Generator,
    tol2: float | None,
) -> tuple[list[Any], float]:
    """TT-SVD of T. With ``tol2`` the unused error budget is passed on to the later steps.

    Returns the flattened cores ``(R_{k-1}, R_k, d_k)`` and the exact squared error
    ``Σ_k (discarded energy at step k)``.
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
            tail = np.concatenate([np.cumsum(sig2[0, ::-1])[::-1][1:], [0.0]]) + rest2[0]
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


def _unfolding_tails(B: Any, T: Any, d: Sequence[int], caps: Sequence[int]) -> list[np.ndarray]:
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


def _choose_chain_budget(tails: list[np.ndarray], d: Sequence[int], budget: int) -> Ranks | None:
    """Ranks minimising the certified bound Σ_k ε_k(R_k)² within the budget."""
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
        return _ranks.select_from_tables(
            E, _ranks.params_table(d, M, "chain"), tol2=None, budget=budget
        )
    return _ranks.greedy_select(
        lambda R: (
            sum(float(t[r - 1]) for t, r in zip(tails, R, strict=True)) if valid(R) else np.inf
        ),
        lambda R: chain_params(d, R),
        M,
        tol2=None,
        budget=budget,
    )


# ----------------------------------------------------------------------------------------------
# refinement: alternating least squares over the factors
# ----------------------------------------------------------------------------------------------
def _labels(n_factors: int, form: str) -> tuple[list[str], list[str], list[str]]:
    """Rank labels, primed rank labels and mode labels of each flattened factor."""
    from opt_einsum import get_symbol

    n_rank = n_factors - 1 if form == "nested" else n_factors + 1
    rank = [get_symbol(i) for i in range(n_rank)]
    prime = [get_symbol(n_rank + i) for i in range(n_rank)]
    mode = [get_symbol(2 * n_rank + i) for i in range(n_factors)]
    if form == "nested":
        own = [list(range(min(k + 1, n_factors - 1))) for k in range(n_factors)]
    else:
        own = [[k, k + 1] for k in range(n_factors)]
    return (
        ["".join(rank[i] for i in o) for o in own],
        ["".join(prime[i] for i in o) for o in own],
        mode,
    )


def _als(
    B: Any, T: Any, flat: list[Any], form: str, sweeps: int, norm2: float
) -> tuple[list[Any], float]:
    """ALS sweeps on flattened factors; keeps the best iterate so the error never increases."""
    S = len(flat)
    rank_l, prime_l, mode_l = _labels(S, form)
    rec_eq = ",".join(r + m for r, m in zip(rank_l, mode_l, strict=True)) + "->" + "".join(mode_l)

    def residual2(fs: list[Any]) -> float:
        That = contraction(rec_eq, *(tuple(f.shape) for f in fs))(*fs)
        return float(sq_norm(T - That))

    best, best_err2 = list(flat), residual2(flat)
    current = list(flat)
    for _ in range(sweeps):
        for k in range(S):
            others = [i for i in range(S) if i != k]
            present = set("".join(mode_l) + "".join(rank_l[i] for i in others))
            out_rank = "".join(c for c in rank_l[k] if c in present)
            out_prime = "".join(prime_l[k][rank_l[k].index(c)] for c in out_rank)
            rhs_eq = (
                "".join(mode_l)
                + ","
                + ",".join(rank_l[i] + mode_l[i] for i in others)
                + "->"
                + out_rank
                + mode_l[k]
            )
            rhs = contraction(rhs_eq, tuple(T.shape), *(tuple(current[i].shape) for i in others))(
                T, *(current[i] for i in others)
            )
            gram_eq = (
                ",".join(rank_l[i] + mode_l[i] + "," + prime_l[i] + mode_l[i] for i in others)
                + "->"
                + out_rank
                + out_prime
            )
            ops = [x for i in others for x in (current[i], current[i])]
            G = contraction(gram_eq, *(tuple(o.shape) for o in ops))(*ops)
            own = tuple(current[k].shape[:-1])
            p = prod(own)
            G = B.reshape(G, (p, p))
            rhs = B.reshape(rhs, (p, d_k := current[k].shape[-1]))
            w, V = B.eigh(G)
            w_np = np.asarray(to_numpy(w), dtype=np.float64)
            cutoff = max(w_np.max(), 0.0) * p * eps(T)  # pseudo-inverse of the Gram matrix
            inv = np.where(w_np > cutoff, 1.0 / np.where(w_np > cutoff, w_np, 1.0), 0.0)
            inv_b = B.reshape(like(inv, T), (1, p))
            Vt = B.transpose(V, (1, 0))
            sol = B.matmul(V * inv_b, B.matmul(Vt, rhs))
            current[k] = B.reshape(sol, (*own, d_k))
        e2 = residual2(current)
        if e2 <= best_err2:
            best, best_err2 = list(current), e2
        else:
            break
    return best, best_err2


# ----------------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------------
def decompose(
    tensor: Any,
    shapes: Sequence[Sequence[int]],
    rank: int | Sequence[int] | None = None,
    *,
    form: str = "nested",
    tol: float | None = None,
    max_params: int | None = None,
    svd: str = "auto",
    random_state: Any = None,
    refine: int = 0,
) -> SeKronTensor:
    """Decompose a tensor into a sequence of Kronecker products (SeKron).

    Parameters
    ----------
    tensor : array
        Any N-way numpy, torch or jax array of float32 or float64 (integers are cast to floating
        point; complex raises TypeError). The factors come back of the same kind, dtype and
        device. A torch tensor's autograd graph is not followed: the factors are new leaves.
    shapes : sequence of S >= 2 tuples of N ints
        Factor shapes with ``prod_k shapes[k][n] == tensor.shape[n]`` for every mode n.
        ``shapes[0]`` is the slowest (most significant) Kronecker digit.
    rank : int or sequence of S - 1 ints, optional
        Ranks ``(R_1..R_{S-1})``; an int applies to every level. Each is capped at the full rank
        of its level. With ``tol`` or ``max_params`` it acts as a cap on the chosen ranks.
        With none of the three, full ranks are used and the result is exact.
    form : {"nested", "chain"}
        ``"nested"`` (the paper's form, default) or ``"chain"`` (TT over Kronecker groups).
    tol : float in (0, 1), optional
        Choose ranks so that the exact relative error ``||W - Ŵ|| / ||W||`` is at most ``tol``
        (guaranteed). Cannot be combined with ``max_params``.
    max_params : int, optional
        Choose ranks with the lowest error such that ``n_params <= max_params``.
    svd : {"auto", "exact", "gram", "randomized"}
        SVD kernel. ``"exact"``: LAPACK thin SVD. ``"gram"``: eigendecomposition of the smaller
        Gram matrix (fastest and no copy; singular values below ~sqrt(eps)·σ_max lose relative
        accuracy, so a level whose discarded energy is too small to resolve that way is redone
        exactly, and ``"auto"`` never uses it with ``tol < 1e-3``).
        ``"randomized"``: a sketch with oversampling and power iterations for levels whose rank
        is below half their smaller side; needs ``rank``. ``"auto"``: ``"gram"`` for levels of
        at least 2**12 entries with aspect ratio >= 4, else ``"exact"``. Every kernel is an
        orthogonal projection, so the reported error stays exact.
    random_state : None, int or numpy Generator
        Seed for ``svd="randomized"``.
    refine : int
        Number of alternating-least-squares sweeps started from the SVD result. The error never
        increases; ``.rel_error`` is then the measured error.

    Returns
    -------
    SeKronTensor
        Its ``.rel_error`` is the exact relative Frobenius error, computed from singular values.

    Raises
    ------
    TypeError
        Unsupported array object or dtype, or arguments of the wrong kind.
    ValueError
        Shapes that do not multiply out to the tensor, S < 2, non-positive sizes or ranks, a rank
        list of the wrong length, ``tol`` outside (0, 1), a ``max_params`` below the smallest
        structure, NaN or Inf in the tensor, an empty tensor, or ``tol`` that a rank cap makes
        unreachable.

    Notes
    -----
    **Nested** (recursive nearest-Kronecker SVD): the SVD of R(W) unfolded as
    ``(|a^(1)|, rest)`` keeps R_1 terms; each remainder is decomposed the same way, level by
    level, with one batched SVD per level. Factors 1..S-1 have orthonormal columns per branch;
    the last carries the scale. The exact error is

    .. math:: \\|W - \\hat W\\|^2 = \\sum_{\\text{discarded branches}}
              \\prod_{\\text{path}} \\sigma^2 .

    For S = 2 (GKPD) this is globally optimal for the rank (Eckart-Young). For S >= 3 each level
    is optimal given the earlier ones, which is not joint optimality: ``refine`` can improve it.
    ``tol``/``max_params`` search *all* rank tuples exactly using one SVD tree (a greedy search on
    the same exact errors replaces it above 2**23 rank tuples).

    **Chain** (TT-SVD on R(W)): ``||W - Ŵ||² = Σ_k`` (discarded σ² at step k), and
    ``ε_max <= ||W - Ŵ|| <= sqrt(Σ ε_k²)``, where ε_k is the best error of the k-th unfolding at
    rank R_k. With ``tol``, each step may discard at most its share of the budget still unused,
    which guarantees the bound but is not proven cheapest. With ``max_params``, ranks minimise
    the upper bound ``Σ ε_k²`` within the budget (from one eigen-decomposition per unfolding);
    the reported error is the exact one of the resulting chain.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 2011.

    Examples
    --------
    >>> import numpy as np, sekron
    >>> W = np.random.default_rng(0).standard_normal((64, 64, 3, 3))
    >>> st = sekron.decompose(W, [(8, 8, 3, 1), (8, 8, 1, 3)], rank=16)
    >>> st.ranks, st.n_params, round(st.rel_error, 3)
    ((16,), 6144, 0.855)
    >>> bool(abs(st.rel_error - np.linalg.norm(W - st.to_tensor()) / np.linalg.norm(W)) < 1e-10)
    True
    >>> sekron.decompose(W, [(8, 8, 3, 1), (8, 8, 1, 3)], tol=0.5).rel_error <= 0.5
    True
    """
    t, backend = check_tensor(tensor)
    form = check_form(form)
    checked = check_shapes(shapes, tuple(t.shape))
    n_levels = len(checked) - 1
    caps_user = check_rank(rank, n_levels)
    if tol is not None and max_params is not None:
        raise ValueError(
            "give at most one of tol and max_params; got both "
            f"(tol={tol!r}, max_params={max_params!r}). Use rank as a cap with either."
        )
    tol_v = None if tol is None else check_tol(tol)
    budget = None if max_params is None else check_max_params(max_params, checked)
    if svd not in METHODS:
        raise ValueError(f"svd must be one of {METHODS}; got {svd!r}.")
    if svd == "randomized" and caps_user is None:
        raise ValueError(
            "svd='randomized' needs rank (the sketch size, also a cap with tol/max_params); "
            "got rank=None."
        )
    if not is_int(refine) or int(refine) < 0:
        raise ValueError(f"refine must be a non-negative int (ALS sweeps); got {refine!r}.")
    rng = check_random_state(random_state)

    B = get_backend(backend)
    d = factor_sizes(checked)
    full = full_ranks(checked, form)
    caps = full if caps_user is None else tuple(map(min, caps_user, full))
    T = rearrange_unchecked(B, t, checked)
    norm2 = float(sq_norm(T))
    tol2 = None if tol_v is None else tol_v**2 * norm2
    if svd == "auto" and tol_v is not None and tol_v < 1e-3:
        svd = "exact"  # the rank tables must resolve tiny singular values

    if form == "nested":
        tree = nested_tree(B, T, d, caps, svd, rng)
        if tol2 is None and budget is None:
            ranks: Ranks | None = tree.caps
        else:
            ranks = _choose_nested(tree, d, tol2, budget)
        if ranks is None:
            raise _unreachable(tol_v, budget, caps_user)
        factors = _slice_nested(tree, ranks, checked, B)
        err2 = _ranks.nested_error2(tree.sig2, tree.rest2, ranks)
    else:
        if budget is not None:
            chosen = _choose_chain_budget(_unfolding_tails(B, T, d, caps), d, budget)
            if chosen is None:
                raise _unreachable(tol_v, budget, caps_user)
            caps = chosen
        cores, err2 = _tt_svd(B, T, d, caps, svd, rng, tol2)
        if tol2 is not None and err2 > tol2 * (1 + 1e-12):
            raise _unreachable(tol_v, budget, caps_user, achieved=(err2 / norm2) ** 0.5)
        ranks = tuple(int(c.shape[1]) for c in cores[:-1])
        factors = [B.reshape(c, (*c.shape[:2], *s)) for c, s in zip(cores, checked, strict=True)]

    if refine:
        n_modes = len(checked[0])
        flat = [
            B.reshape(f, (*f.shape[: f.ndim - n_modes], dk))
            for f, dk in zip(factors, d, strict=True)
        ]
        flat, err2 = _als(B, T, flat, form, int(refine), norm2)
        factors = [B.reshape(f, (*f.shape[:-1], *s)) for f, s in zip(flat, checked, strict=True)]
    rel = 0.0 if norm2 == 0.0 else float(np.sqrt(max(err2, 0.0) / norm2))
    return SeKronTensor(factors, form, rel_error=rel)


def _unreachable(
    tol: float | None, budget: int | None, caps: Ranks | None, achieved: float | None = None
) -> ValueError:
    if tol is not None:
        extra = "" if achieved is None else f" (the capped ranks reach {achieved:.4g})"
        return ValueError(
            f"tol={tol!r} cannot be met with the rank cap rank={caps!r}{extra}; "
            "raise or drop the cap."
        )
    return ValueError(f"no ranks within the cap rank={caps!r} fit max_params={budget!r}.")
