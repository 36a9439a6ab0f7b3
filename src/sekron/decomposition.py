"""decompose(): recursive nearest-Kronecker SVD (nested), TT-SVD (chain), rank selection, ALS.

The maths is theory docs All work happens on the rearranged tensor T = R(W), an S-way tensor of
shape ``d = (|a^(1)|, .., |a^(S)|)`` in which every Kronecker product is an outer product.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, cast

import numpy as np

from . import _ranks
from ._backend import (
    eps,
    get_backend,
    like,
    pow2_scale,
    scale_by,
    sq_norm,
    to_numpy,
    unscaled,
)
from ._plan import als_equations, contraction, factor_sizes, full_ranks
from ._rearrange import rearrange_unchecked
from ._svd import METHODS
from ._svd import truncated_svd as truncated_svd  # tests/test_validation.py patches it here
from ._tree import (
    choose_chain_budget,
    choose_nested,
    nested_tree,
    slice_nested,
    tt_svd,
    unfolding_tails,
)
from ._typing import Form, Ranks, Shapes, SVDMethod
from ._validation import (
    _type_name,
    check_choice,
    check_form,
    check_max_params,
    check_rank,
    check_shapes,
    check_tensor,
    check_tol,
    is_int,
)
from .random import check_random_state
from .tensor import SeKronTensor

__all__ = ["decompose"]


# ----------------------------------------------------------------------------------------------
# refinement: alternating least squares over the factors
# ----------------------------------------------------------------------------------------------
def _als(
    B: Any, T: Any, flat: list[Any], form: Form, sweeps: int, tol: float = 0.0
) -> tuple[list[Any], float]:
    """ALS sweeps on flattened factors; keeps the best iterate so the error never increases.

    Stops early once a sweep lowers the squared error by at most ``tol`` times its value (and
    always once it gains nothing beyond rounding).
    """
    S = len(flat)
    rec_eq = als_equations(S, form, 0)[0]

    def residual2(fs: list[Any]) -> float:
        That = contraction(rec_eq, *(tuple(f.shape) for f in fs))(*fs)
        return float(sq_norm(T - That))

    best, best_err2 = list(flat), residual2(flat)
    current = list(flat)
    for _ in range(sweeps):
        for k in range(S):
            current[k] = _als_update(B, T, current, form, k)
        e2 = residual2(current)
        if e2 > best_err2:
            break
        stalled = e2 > best_err2 * (1 - max(eps(T), tol))  # converged
        best, best_err2 = list(current), e2
        if stalled:
            break
    return best, best_err2


def _als_update(B: Any, T: Any, current: list[Any], form: Form, k: int) -> Any:
    """Factor k's least-squares solution given the others (pseudo-inverse of their Gram)."""
    _, rhs_eq, gram_eq = als_equations(len(current), form, k)
    others = [current[i] for i in range(len(current)) if i != k]
    rhs = contraction(rhs_eq, tuple(T.shape), *(tuple(o.shape) for o in others))(T, *others)
    ops = [x for o in others for x in (o, o)]
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
    return B.reshape(sol, (*own, d_k))


# ----------------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------------
def decompose(
    tensor: Any,
    shapes: Sequence[Sequence[int]],
    rank: int | Sequence[int] | None = None,
    *,
    form: Form = "nested",
    tol: float | None = None,
    max_params: int | None = None,
    svd: SVDMethod = "auto",
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
        Most alternating-least-squares sweeps started from the SVD result (they stop early
        once a sweep no longer lowers the error beyond rounding). The error never increases;
        ``.rel_error`` is then the measured error.

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

    The work runs on ``s·W`` with ``s`` an exact power of two that brings max|W| into
    [0.5, 1), and ``s`` is divided out of the last factor: squares of entries near the ends of
    the float range (1e±160 in float64, 1e±19 in float32) would otherwise overflow or
    underflow, and the error, the ``tol`` guarantee and the ranks do not depend on scale.
    Where the last factor cannot hold ``1/s`` in its dtype (entries near float32's 3.4e38),
    it is spread over all the factors by powers of two (then the earlier factors are
    orthonormal up to those powers).

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
    form_c = cast(Form, check_form(form))
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
    svd = cast(SVDMethod, check_choice(svd, "svd", METHODS))
    if svd == "randomized" and caps_user is None:
        raise ValueError(
            "svd='randomized' needs rank (the sketch size, also a cap with tol/max_params); "
            "got rank=None."
        )
    if not is_int(refine):
        raise TypeError(
            f"refine must be a non-negative int (ALS sweeps); got {refine!r} of type "
            f"{_type_name(refine)}."
        )
    if int(refine) < 0:
        raise ValueError(f"refine must be a non-negative int (ALS sweeps); got {refine!r}.")
    rng = check_random_state(random_state)
    if svd == "auto" and tol_v is not None and tol_v < 1e-3:
        svd = "exact"  # the rank tables must resolve tiny singular values
    B = get_backend(backend)
    # squares of entries near 1e±160 (float64) or 1e±19 (float32) overflow or underflow: work
    # on T = s·R(W) with s an exact power of two, and divide s out of the last factor (of all of
    # them where one cannot hold it: sekron._backend.unscaled)
    scale = pow2_scale(t)
    T = rearrange_unchecked(B, t, checked)
    T = scale_by(T, scale)  # (x itself at scale 1)
    factors, err2, norm2 = _factorize(
        B, T, checked, form_c, caps_user, tol_v, budget, svd, rng, int(refine)
    )
    factors = unscaled(factors, scale, -1)
    rel = 0.0 if norm2 == 0.0 else float(np.sqrt(max(err2, 0.0) / norm2))
    return SeKronTensor(factors, form_c, rel_error=rel)


def _factorize(
    B: Any,
    T: Any,
    shapes: Shapes,
    form: Form,
    caps_user: Ranks | None,
    tol: float | None,
    budget: int | None,
    svd: SVDMethod,
    rng: np.random.Generator,
    refine: int,
) -> tuple[list[Any], float, float]:
    """The factors of T = R(W) (checked values), their squared error and ``||T||²``."""
    d = factor_sizes(shapes)
    full = full_ranks(shapes, form)
    caps = full if caps_user is None else tuple(map(min, caps_user, full))
    norm2 = float(sq_norm(T))
    tol2 = None if tol is None else tol**2 * norm2
    if form == "nested":
        tree = nested_tree(B, T, d, caps, svd, rng)
        if tol2 is None and budget is None:
            ranks: Ranks | None = tree.caps
        else:
            ranks = choose_nested(tree, d, tol2, budget)
        if ranks is None:
            raise _unreachable(tol, budget, caps_user)
        factors = slice_nested(tree, ranks, shapes, B)
        err2 = _ranks.nested_error2(tree.sig2, tree.rest2, ranks)
    else:
        if budget is not None:
            chosen = choose_chain_budget(unfolding_tails(B, T, d, caps), d, budget)
            if chosen is None:
                raise _unreachable(tol, budget, caps_user)
            caps = chosen
        cores, err2 = tt_svd(B, T, d, caps, svd, rng, tol2)
        if tol2 is not None and err2 > tol2 * (1 + 1e-12):
            raise _unreachable(tol, budget, caps_user, achieved=(err2 / norm2) ** 0.5)
        factors = [B.reshape(c, (*c.shape[:2], *s)) for c, s in zip(cores, shapes, strict=True)]
    if refine:
        n_modes = len(shapes[0])
        flat = [
            B.reshape(f, (*f.shape[: f.ndim - n_modes], dk))
            for f, dk in zip(factors, d, strict=True)
        ]
        flat, err2 = _als(B, T, flat, form, refine)
        factors = [B.reshape(f, (*f.shape[:-1], *s)) for f, s in zip(flat, shapes, strict=True)]
    return factors, err2, norm2


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
