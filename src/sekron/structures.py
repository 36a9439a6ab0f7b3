"""Named factorization structures (TT, TR, CP, Tucker, Tucker-2, GKPD) as exact SeKron embeddings.

Each structure is a small frozen dataclass with one entry point, :meth:`fit`, that fits the
structure by its own algorithm and returns the exact SeKron embedding of the fit (SPEC §4), and
:meth:`n_params`, the structure's *own* parameter count, which is what comparisons use.

The constrained structures (CP, Tucker, Tucker-2, TR) are fitted by TensorLy's ``parafac``,
``tucker``, ``partial_tucker`` and ``tensor_ring`` on a float64 numpy copy of the input; TT, GKPD
and General use :func:`sekron.decompose`. TensorLy's algorithms dispatch on TensorLy's *active*
backend, so they run under :func:`sekron.interop.thread_backend`: the numpy backend is made
active **for the calling thread only**, the thread's previous state is restored exactly
afterwards, and TensorLy's global default (what other threads see) is never written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import isqrt, prod
from typing import Any, ClassVar

import numpy as np

from . import _ranks
from ._backend import get_backend, like, sq_norm, to_numpy
from ._plan import Ranks, Shapes, chain_params, factor_sizes, full_ranks
from ._plan import n_params as _sekron_params
from ._validation import (
    _type_name,
    check_form,
    check_positive_int,
    check_rank,
    check_shapes,
    check_tensor,
    is_int,
)
from .decomposition import decompose
from .interop import (
    _cp_factors,
    _tr_factors,
    _tucker_factors,
    one_mode_shapes,
    thread_backend,
)
from .random import check_random_state
from .tensor import SeKronTensor

__all__ = [
    "CP",
    "GKPD",
    "TR",
    "TT",
    "General",
    "Structure",
    "Tucker",
    "Tucker2",
    "get_structure",
]


# ----------------------------------------------------------------------------------------------
# running TensorLy's algorithms without touching the caller's backend
# ----------------------------------------------------------------------------------------------
def _tensorly_random_state(random_state: Any) -> np.random.RandomState:
    """A RandomState for TensorLy (which does not take Generators); never the global one."""
    if isinstance(random_state, np.random.RandomState):
        return random_state
    rng = check_random_state(random_state)
    return np.random.RandomState(int(rng.integers(0, 2**31 - 1)))


def _finish(t: Any, st: SeKronTensor) -> SeKronTensor:
    """``st`` with ``.rel_error`` the measured ``||W - Ŵ|| / ||W||`` (0 for a zero tensor)."""
    den = float(sq_norm(t))
    num = float(sq_norm(st.to_tensor() - t))
    return st.with_rel_error(0.0 if den == 0.0 else float(np.sqrt(num / den)))


def _to_input(arrays: Sequence[np.ndarray], ref: Any) -> list[Any]:
    return [like(np.asarray(a), ref) for a in arrays]


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def _check_tensor_shape(tensor_shape: object, min_modes: int, structure: str) -> tuple[int, ...]:
    if isinstance(tensor_shape, str | bytes) or not isinstance(tensor_shape, Sequence):
        raise TypeError(f"tensor_shape must be a tuple of ints; got {_type_name(tensor_shape)}.")
    out = tuple(check_positive_int(v, f"tensor_shape[{i}]") for i, v in enumerate(tensor_shape))
    if len(out) < min_modes:
        raise ValueError(
            f"{structure} needs a tensor of at least {min_modes} modes; got shape {out}."
        )
    return out


def _check_modes(t: Any, min_modes: int, structure: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in t.shape)
    if len(shape) < min_modes:
        raise ValueError(
            f"{structure} needs a tensor of at least {min_modes} modes; got shape {shape}."
        )
    return shape


def _check_rank_seq(rank: object, lengths: Sequence[int], what: str) -> tuple[int, ...] | None:
    """None, an int, or a sequence whose length is one of ``lengths``."""
    if rank is None:
        return None
    if is_int(rank):
        return (check_positive_int(rank, "rank"),)
    if isinstance(rank, str | bytes) or not isinstance(rank, Sequence):
        raise TypeError(
            f"rank must be an int or a sequence of ints ({what}); got {_type_name(rank)}."
        )
    if len(rank) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise ValueError(
            f"rank has {len(rank)} entries but {what} needs {want}; got {tuple(rank)!r}."
        )
    return tuple(check_positive_int(r, f"rank[{i}]") for i, r in enumerate(rank))


def _check_budget(rank: object, max_params: object) -> int | None:
    if rank is not None and max_params is not None:
        raise ValueError(
            f"give at most one of rank and max_params; got both (rank={rank!r}, "
            f"max_params={max_params!r})."
        )
    return None if max_params is None else check_positive_int(max_params, "max_params")


def _too_small(structure: str, budget: int, smallest: int) -> ValueError:
    return ValueError(
        f"max_params={budget} is too small for {structure}: its smallest ranks already need "
        f"{smallest} parameters."
    )


def _minimal_tucker(t: Sequence[int], kept: int = 1) -> tuple[int, ...]:
    """Cap ``t_k <= kept * prod_{l != k} t_l``: a larger Tucker rank cannot be used."""
    out = list(t)
    changed = True
    while changed:
        changed = False
        for k in range(len(out)):
            cap = kept * prod(out[:k] + out[k + 1 :])
            if out[k] > cap:
                out[k], changed = cap, True
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# HOSVD rank selection (Tucker, Tucker-2)
# ----------------------------------------------------------------------------------------------
def _budget_ranks(
    name: str,
    X: np.ndarray,
    modes: Sequence[int],
    count: Callable[[Sequence[Any]], Any],
    budget: int,
    kept: int = 1,
) -> tuple[int, ...]:
    """Tucker-style ranks of ``modes`` for a budget: :func:`_choose_hosvd` on ``X``'s spectra."""
    smallest = count((1,) * len(modes))
    if budget < smallest:
        raise _too_small(name, budget, smallest)
    chosen = _choose_hosvd(_mode_tails(X, modes), count, budget, kept)
    assert chosen is not None  # all-ones ranks fit and are always usable
    return chosen


def _mode_tails(X: np.ndarray, modes: Sequence[int]) -> list[np.ndarray]:
    """``tail[k][t-1]``: energy outside the leading t left singular vectors of unfolding k."""
    tails = []
    for m in modes:
        M = np.moveaxis(X, m, 0).reshape(X.shape[m], -1)
        w = np.clip(np.linalg.eigvalsh(M @ M.T)[::-1], 0.0, None)
        tails.append(_ranks.tail(w, np.asarray(0.0)))
    return tails


def _choose_hosvd(
    tails: Sequence[np.ndarray], count: Callable[[Sequence[Any]], Any], budget: int, kept: int = 1
) -> tuple[int, ...] | None:
    """Usable ranks minimising ``Σ_k tail_k(t_k)`` (the HOSVD error bound), ``count(t) <= budget``.

    Usable: ``t_k <= kept * prod_{l != k} t_l`` (see :func:`_minimal_tucker`).
    """
    M = [t.shape[0] for t in tails]

    def usable(t: Sequence[Any]) -> Any:
        ok = True
        for k in range(len(t)):
            ok = ok & (t[k] <= kept * prod(t[:k]) * prod(t[k + 1 :]))
        return ok

    if _ranks.table_fits(M):
        grids = _ranks.grids(M)
        E = sum(t.reshape(g.shape) for t, g in zip(tails, grids, strict=True))
        E = np.where(usable(grids), E, np.inf)
        P = np.broadcast_to(count(grids), tuple(M))
        return _ranks.select_from_tables(E, P, tol2=None, budget=budget)
    return _ranks.greedy_select(
        lambda R: (
            float(sum(t[r - 1] for t, r in zip(tails, R, strict=True))) if usable(R) else np.inf
        ),
        lambda R: int(count(R)),
        M,
        tol2=None,
        budget=budget,
    )


# ----------------------------------------------------------------------------------------------
# the structures
# ----------------------------------------------------------------------------------------------
class Structure:
    """Base class: a named factorization structure with an exact SeKron embedding."""

    name: ClassVar[str] = ""
    min_modes: ClassVar[int] = 2

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        """The SeKron factor shapes of the embedding for a tensor of ``tensor_shape``."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, type(self).__name__)
        return one_mode_shapes(shape)

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """The structure's own parameter count at the ranks :meth:`fit` would use."""
        raise NotImplementedError

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        """Fit the structure and return its exact SeKron embedding (``.rel_error`` measured)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TT(Structure):
    """Tensor train: the SeKron chain with one mode per factor, fitted by TT-SVD.

    ``rank`` is an int or the ``N - 1`` inner ranks ``(r_1..r_{N-1})``; None (with no budget)
    gives the exact full-rank train. Ranks are capped as TT-SVD caps them,
    ``r_k <= min(r_{k-1} n_k, n_{k+1}⋯n_N)``.

    Parameters: ``Σ_k r_{k-1} n_k r_k`` with ``r_0 = r_N = 1``. With ``max_params`` the ranks
    minimise the certified bound ``Σ_k ε_k(r_k)²`` on the error within the budget (see
    :func:`sekron.decompose`, ``form="chain"``); the error itself is within ``sqrt(N - 1)`` of
    the best TT of those ranks.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import TT
    >>> W = np.random.default_rng(0).standard_normal((4, 5, 6))
    >>> st = TT().fit(W, rank=3)
    >>> st.form, st.ranks, st.n_params == TT().n_params(W.shape, 3)
    ('chain', (3, 3), True)
    """

    name: ClassVar[str] = "tt"

    def _ranks(self, shape: tuple[int, ...], rank: Any) -> Ranks:
        r = _check_rank_seq(rank, (len(shape) - 1,), f"TT of {len(shape)} modes (r_1..r_{{N-1}})")
        want = full_ranks(one_mode_shapes(shape), "chain") if r is None else r
        if len(want) == 1:
            want = want * (len(shape) - 1)
        out, prev = [], 1
        for k, w in enumerate(want):
            prev = min(w, prev * shape[k], prod(shape[k + 1 :]))
            out.append(prev)
        return tuple(out)

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``Σ_k r_{k-1} n_k r_k`` at the capped ranks."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "TT")
        return chain_params(shape, self._ranks(shape, rank))

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        budget = _check_budget(rank, max_params)
        t, backend = check_tensor(tensor)
        shape = _check_modes(t, self.min_modes, "TT")
        ranks = None if rank is None else self._ranks(shape, rank)
        st = decompose(
            t,
            one_mode_shapes(shape),
            ranks,
            form="chain",
            max_params=budget,
            random_state=random_state,
        )
        return _finish(t, st)


@dataclass(frozen=True)
class TR(Structure):
    """Tensor ring, fitted by TensorLy's ``tensor_ring`` (TR-SVD), embedded in nested form.

    ``rank`` is an int, the ``N`` ring ranks ``(q_0..q_{N-1})``, or TensorLy's ``N + 1`` ranks
    with ``q_N = q_0``. TR-SVD needs ``q_0 q_1 <= min(n_1, n_2⋯n_N)`` and caps the others as
    ``q_{k+1} <= min(q_k n_k, n_{k+1}⋯n_N q_0)``; :meth:`n_params` uses the same caps.

    Parameters: ``Σ_k q_{k-1} n_k q_k``. The SeKron embedding has ranks
    ``(q_0 q_1, q_2, .., q_{N-1})`` (SPEC §4) and more stored numbers.

    With ``max_params``: the largest *uniform* rank q whose count fits — a heuristic; non-uniform
    ranks can do better. ``rank`` or ``max_params`` is required. TR-SVD is deterministic;
    ``random_state`` only reaches TensorLy's SVD.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import TR
    >>> W = np.random.default_rng(0).standard_normal((4, 5, 6))
    >>> st = TR().fit(W, rank=2)
    >>> st.ranks, TR().n_params(W.shape, 2)
    ((4, 2), 60)
    """

    name: ClassVar[str] = "tr"

    def _ranks(self, shape: tuple[int, ...], rank: Any) -> list[int]:
        n_modes = len(shape)
        r = _check_rank_seq(rank, (n_modes, n_modes + 1), f"TR of {n_modes} modes (q_0..q_{{N-1}})")
        if r is None:
            raise ValueError("TR needs rank or max_params; got neither.")
        if len(r) == 1:
            q = [r[0]] * (n_modes + 1)
        elif len(r) == n_modes + 1:
            if r[0] != r[-1]:
                raise ValueError(
                    f"rank has {n_modes + 1} entries, so rank[0] and rank[-1] are both q_0 and "
                    f"must agree; got {r[0]} and {r[-1]}."
                )
            q = list(r)
        else:
            q = [*r, r[0]]
        first = min(shape[0], prod(shape[1:]))
        if q[0] * q[1] > first:
            raise ValueError(
                f"TR-SVD needs q_0 * q_1 <= min(n_1, n_2⋯n_N) = {first}; got q_0 = {q[0]}, "
                f"q_1 = {q[1]}."
            )
        for k in range(1, n_modes - 1):
            q[k + 1] = min(q[k] * shape[k], prod(shape[k + 1 :]) * q[0], q[k + 1])
        return q

    @staticmethod
    def _count(shape: tuple[int, ...], q: Sequence[int]) -> int:
        return sum(q[k] * shape[k] * q[k + 1] for k in range(len(shape)))

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``Σ_k q_{k-1} n_k q_k`` at the ranks TR-SVD would use."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "TR")
        return self._count(shape, self._ranks(shape, rank))

    def _budget_rank(self, shape: tuple[int, ...], budget: int) -> int:
        best, q = 0, 1
        first = min(shape[0], prod(shape[1:]))
        while q * q <= first and self._count(shape, self._ranks(shape, q)) <= budget:
            best, q = q, q + 1
        if best == 0:
            raise _too_small("TR", budget, self._count(shape, self._ranks(shape, 1)))
        return best

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        from tensorly.decomposition import tensor_ring

        budget = _check_budget(rank, max_params)
        t, backend = check_tensor(tensor)
        shape = _check_modes(t, self.min_modes, "TR")
        q = self._ranks(shape, self._budget_rank(shape, budget) if budget else rank)
        X = np.asarray(to_numpy(t), dtype=np.float64)
        rs = _tensorly_random_state(random_state)
        with thread_backend("numpy"), warnings.catch_warnings():
            # TensorLy warns whenever a ring is fitted to a matrix; that is allowed here
            warnings.filterwarnings(
                "ignore", message="Determining the TR-rank", category=UserWarning
            )
            tr = tensor_ring(X, rank=q, random_state=rs)
        st = SeKronTensor(_tr_factors(get_backend(backend), _to_input(tr.factors, t)), "nested")
        return _finish(t, st)


@dataclass(frozen=True)
class CP(Structure):
    """CP (CANDECOMP/PARAFAC), fitted by TensorLy's ``parafac`` (ALS), embedded in nested form.

    ``rank`` is the number of rank-one terms R; ``rank`` or ``max_params`` is required.
    Parameters: ``R Σ_k n_k`` (weights folded into the first factor), which is also the count
    of the embedding, ranks ``(R, 1, .., 1)``. R is capped at :meth:`max_rank`
    (``min_k Π_{l != k} n_l``, where every tensor is exactly CP). With ``max_params`` R is the
    largest rank that fits — optimal in the count, while ALS itself is a local method.

    Attributes
    ----------
    n_iter_max : int
        ALS sweeps (default 100). ``init`` ("svd" or "random") and ``tol`` go to ``parafac``;
        the result is deterministic given ``random_state``.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import CP
    >>> W = np.random.default_rng(0).standard_normal((4, 5, 6))
    >>> st = CP().fit(W, rank=3, random_state=0)
    >>> st.ranks, st.n_params, CP().n_params(W.shape, 3)
    ((3, 1), 45, 45)
    """

    n_iter_max: int = 100
    init: str = "svd"
    tol: float = 1e-8
    name: ClassVar[str] = "cp"

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
        return min(check_positive_int(rank, "rank"), self.max_rank(shape)) * sum(shape)

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        from tensorly.decomposition import parafac

        budget = _check_budget(rank, max_params)
        if rank is None and budget is None:
            raise ValueError("CP needs rank or max_params; got neither.")
        R = None if rank is None else check_positive_int(rank, "rank")
        t, backend = check_tensor(tensor)
        shape = _check_modes(t, self.min_modes, "CP")
        if budget is not None:
            R = budget // sum(shape)
            if R < 1:
                raise _too_small("CP", budget, sum(shape))
        assert R is not None
        R = min(R, self.max_rank(shape))
        X = np.asarray(to_numpy(t), dtype=np.float64)
        rs = _tensorly_random_state(random_state)
        with thread_backend("numpy"), warnings.catch_warnings():
            # for R > n_k the SVD initialisation pads with random columns and says so
            warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
            cp = parafac(
                X, R, n_iter_max=self.n_iter_max, init=self.init, tol=self.tol, random_state=rs
            )
        weights, *factors = _to_input([cp.weights, *cp.factors], t)
        st = SeKronTensor(_cp_factors(get_backend(backend), weights, factors), "nested")
        return _finish(t, st)


@dataclass(frozen=True)
class Tucker(Structure):
    """Tucker, fitted by TensorLy's ``tucker`` (HOOI from HOSVD), embedded in nested form.

    ``rank`` is an int or one rank per mode, capped at the mode sizes and at
    ``t_k <= Π_{l != k} t_l`` (larger ranks cannot be used); None (no budget) gives
    the exact full-rank Tucker. Parameters: ``Π_k t_k + Σ_k n_k t_k`` (core plus factors). The
    SeKron embedding has ranks ``(t_1..t_{N-1})`` with the core absorbed into the last factor.

    With ``max_params``: the ranks minimise ``Σ_k`` (energy outside the leading t_k singular
    vectors of unfolding k) over all usable rank tuples whose count fits (a greedy search
    replaces the enumeration above 2**23 tuples). That sum bounds the squared
    HOSVD error (De Lathauwer et al. 2000), so the choice is optimal for the bound, a heuristic
    for the true best Tucker; HOOI then refines at those ranks.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import Tucker
    >>> W = np.random.default_rng(0).standard_normal((4, 5, 6))
    >>> st = Tucker().fit(W, rank=(2, 3, 4))
    >>> st.ranks, Tucker().n_params(W.shape, (2, 3, 4))
    ((2, 3), 71)
    """

    n_iter_max: int = 100
    tol: float = 1e-8
    name: ClassVar[str] = "tucker"

    def _ranks(self, shape: tuple[int, ...], rank: Any) -> tuple[int, ...]:
        r = _check_rank_seq(rank, (len(shape),), f"Tucker of {len(shape)} modes")
        if r is None:
            return _minimal_tucker(shape)
        r = r * len(shape) if len(r) == 1 else r
        return _minimal_tucker([min(a, n) for a, n in zip(r, shape, strict=True)])

    @staticmethod
    def _count(shape: Sequence[int], t: Sequence[Any]) -> Any:
        return prod(t) + sum(n * r for n, r in zip(shape, t, strict=True))

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``Π_k t_k + Σ_k n_k t_k`` at the capped ranks :meth:`fit` uses."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "Tucker")
        return int(self._count(shape, self._ranks(shape, rank)))

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        from tensorly.decomposition import tucker

        budget = _check_budget(rank, max_params)
        t, backend = check_tensor(tensor)
        shape = _check_modes(t, self.min_modes, "Tucker")
        ranks = self._ranks(shape, rank)
        X = np.asarray(to_numpy(t), dtype=np.float64)
        if budget is not None:
            ranks = _budget_ranks(
                "Tucker", X, range(len(shape)), lambda g: self._count(shape, g), budget
            )
        rs = _tensorly_random_state(random_state)
        with thread_backend("numpy"):
            tk = tucker(
                X,
                rank=list(ranks),
                n_iter_max=self.n_iter_max,
                init="svd",
                tol=self.tol,
                random_state=rs,
            )
        core, *factors = _to_input([tk.core, *tk.factors], t)
        st = SeKronTensor(_tucker_factors(get_backend(backend), core, factors), "nested")
        return _finish(t, st)


@dataclass(frozen=True)
class Tucker2(Structure):
    """Tucker-2 of a conv weight (F, C, H, W): modes F and C compressed, the others kept.

    Fitted by TensorLy's ``partial_tucker`` on modes (0, 1) and embedded as a nested SeKron of
    S = 3 factors, shapes ``(F,1,1,1), (1,C,1,1), (1,1,H,W)`` and ranks ``(R_F, R_C)``:
    ``A1 = U_F``, ``A2[r1, r2] = U_C[:, r2]``, ``A3[r1, r2] = G[r1, r2]`` (SPEC §4). Any tensor
    of N >= 3 modes works: modes 2..N-1 are kept whole.

    ``rank`` is an int or ``(R_F, R_C)``, capped at (F, C) and at ``R_F <= R_C H W``,
    ``R_C <= R_F H W``; None (no budget) is exact.
    Parameters: ``R_F F + R_C C + R_F R_C H W``. With ``max_params``: the two ranks minimise the
    HOSVD bound of modes 0 and 1 within the budget (all pairs are scored), as for
    :class:`Tucker`.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import Tucker2
    >>> W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    >>> st = Tucker2().fit(W, rank=(4, 3))
    >>> st.shapes, st.ranks, Tucker2().n_params(W.shape, (4, 3))
    (((8, 1, 1, 1), (1, 6, 1, 1), (1, 1, 3, 3)), (4, 3), 158)
    """

    n_iter_max: int = 100
    tol: float = 1e-8
    name: ClassVar[str] = "tucker2"
    min_modes: ClassVar[int] = 3

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "Tucker2")
        n_modes = len(shape)
        first = tuple(shape[0] if n == 0 else 1 for n in range(n_modes))
        second = tuple(shape[1] if n == 1 else 1 for n in range(n_modes))
        return (first, second, (1, 1, *shape[2:]))

    def _ranks(self, shape: tuple[int, ...], rank: Any) -> tuple[int, int]:
        r = _check_rank_seq(rank, (2,), "Tucker2 (R_F, R_C)")
        r = (shape[0], shape[1]) if r is None else (r * 2 if len(r) == 1 else r)
        a, b = _minimal_tucker([min(r[0], shape[0]), min(r[1], shape[1])], prod(shape[2:]))
        return a, b

    @staticmethod
    def _count(shape: Sequence[int], r: Sequence[Any]) -> Any:
        return r[0] * shape[0] + r[1] * shape[1] + r[0] * r[1] * prod(shape[2:])

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``R_F F + R_C C + R_F R_C H W`` at the capped ranks :meth:`fit` uses."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "Tucker2")
        return int(self._count(shape, self._ranks(shape, rank)))

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        from tensorly.decomposition import partial_tucker

        budget = _check_budget(rank, max_params)
        t, backend = check_tensor(tensor)
        shape = _check_modes(t, self.min_modes, "Tucker2")
        ranks: tuple[int, ...] = self._ranks(shape, rank)
        X = np.asarray(to_numpy(t), dtype=np.float64)
        if budget is not None:
            ranks = _budget_ranks(
                "Tucker2", X, (0, 1), lambda g: self._count(shape, g), budget, prod(shape[2:])
            )
        rs = _tensorly_random_state(random_state)
        with thread_backend("numpy"):
            (core, (UF, UC)), _ = partial_tucker(
                X,
                rank=list(ranks),
                modes=[0, 1],
                n_iter_max=self.n_iter_max,
                init="svd",
                tol=self.tol,
                random_state=rs,
            )
        core, UF, UC = _to_input([core, UF, UC], t)
        B = get_backend(backend)
        # the 3-factor embedding is the 3-mode Tucker embedding of (F, C, H*W), reshaped
        A1, A2, A3 = _tucker_factors(
            B,
            B.reshape(core, (*ranks, prod(shape[2:]))),
            [UF, UC, B.eye(prod(shape[2:]), **_ctx_of(B, core))],
        )
        shapes = self.shapes_for(shape)
        factors = [
            B.reshape(A1, (ranks[0], *shapes[0])),
            B.reshape(A2, (*ranks, *shapes[1])),
            B.reshape(A3, (*ranks, *shapes[2])),
        ]
        return _finish(t, SeKronTensor(factors, "nested"))


def _ctx_of(B: Any, x: Any) -> dict[str, Any]:
    return {k: v for k, v in B.context(x).items() if k in ("dtype", "device")}


def balanced_split(tensor_shape: Sequence[int]) -> Shapes:
    """GKPD's default 2-factor shapes: every mode split near its square root.

    Mode n is split as ``(a, n // a)`` with a the largest divisor of n not above ``sqrt(n)``.
    Where the two parts differ, modes are visited in order and the larger part goes to the
    factor whose size ``|a^(k)|`` is smaller so far, so that R(W) comes out as square as this
    greedy rule allows (for example (64, 64, 3, 3) -> (8, 8, 3, 1) and (8, 8, 1, 3)).

    >>> balanced_split((64, 64, 3, 3))
    ((8, 8, 3, 1), (8, 8, 1, 3))
    """
    first: list[int] = []
    second: list[int] = []
    for n in tensor_shape:
        a = max(d for d in range(1, isqrt(n) + 1) if n % d == 0)
        small, large = a, n // a
        if prod(first) <= prod(second):
            first.append(large)
            second.append(small)
        else:
            first.append(small)
            second.append(large)
    return tuple(first), tuple(second)


@dataclass(frozen=True)
class GKPD(Structure):
    """Generalized Kronecker product decomposition: SeKron with S = 2 factors.

    ``shapes`` are the two factor shapes; None picks :func:`balanced_split` of the tensor's
    shape. Fitted by :func:`sekron.decompose` (one SVD of R(W)), which is globally optimal for
    the rank (Eckart-Young), and with ``max_params`` the best rank within the budget, exactly.
    Parameters: ``R (|a^(1)| + |a^(2)|)``; ``rank`` None (no budget) is the exact full rank.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import GKPD
    >>> W = np.random.default_rng(0).standard_normal((16, 16, 3, 3))
    >>> st = GKPD().fit(W, rank=4)
    >>> st.shapes, st.n_params == GKPD().n_params(W.shape, 4)
    (((4, 4, 3, 1), (4, 4, 1, 3)), True)
    """

    shapes: Any = None
    name: ClassVar[str] = "gkpd"
    min_modes: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.shapes is not None:
            checked = check_shapes(self.shapes, None)
            if len(checked) != 2:
                raise ValueError(
                    f"GKPD has S = 2 factors, so shapes holds 2 tuples; got {len(checked)}. "
                    "Use General(shapes) for more."
                )
            object.__setattr__(self, "shapes", checked)

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "GKPD")
        if self.shapes is None:
            return balanced_split(shape)
        return check_shapes(self.shapes, shape)

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """``R (|a^(1)| + |a^(2)|)`` with R capped at the full rank."""
        return _general_params(self.shapes_for(tensor_shape), "nested", rank)

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        return _general_fit(self, "nested", tensor, rank, max_params, random_state)


@dataclass(frozen=True)
class General(Structure):
    """Plain SeKron: given factor shapes and form, fitted by :func:`sekron.decompose`.

    Parameters: the SeKron count (the total size of the factors). ``rank`` is an int or one
    rank per level; None (no budget) is exact.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.structures import General
    >>> W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    >>> s = General([(2, 2, 3, 1), (2, 2, 1, 3), (2, 2, 1, 1)])
    >>> st = s.fit(W, rank=(4, 2))
    >>> st.ranks, st.n_params == s.n_params(W.shape, (4, 2))
    ((4, 2), True)
    """

    shapes: Any
    form: str = "nested"
    name: ClassVar[str] = "general"
    min_modes: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", check_shapes(self.shapes, None))
        object.__setattr__(self, "form", check_form(self.form))

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "General")
        return check_shapes(self.shapes, shape)

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """The SeKron count at ranks capped by the full ranks of ``shapes``."""
        return _general_params(self.shapes_for(tensor_shape), self.form, rank)

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        return _general_fit(self, self.form, tensor, rank, max_params, random_state)


def _general_params(shapes: Shapes, form: str, rank: Any) -> int:
    full = full_ranks(shapes, form)
    r = check_rank(rank, len(shapes) - 1)
    ranks = full if r is None else tuple(min(a, b) for a, b in zip(r, full, strict=True))
    if form == "chain":  # TT-SVD also caps r_k <= r_{k-1} d_k
        d, capped, prev = factor_sizes(shapes), [], 1
        for k, a in enumerate(ranks):
            prev = min(a, prev * d[k])
            capped.append(prev)
        ranks = tuple(capped)
    return _sekron_params(shapes, ranks, form)


def _general_fit(
    structure: Structure, form: str, tensor: Any, rank: Any, max_params: Any, random_state: Any
) -> SeKronTensor:
    budget = _check_budget(rank, max_params)
    t, backend = check_tensor(tensor)
    shapes = structure.shapes_for(tuple(int(v) for v in t.shape))
    st = decompose(t, shapes, rank, form=form, max_params=budget, random_state=random_state)
    return _finish(t, st)


# ----------------------------------------------------------------------------------------------
# lookup
# ----------------------------------------------------------------------------------------------
_BY_NAME: dict[str, Callable[[], Structure]] = {
    "tt": TT,
    "tr": TR,
    "cp": CP,
    "tucker": Tucker,
    "tucker2": Tucker2,
    "gkpd": GKPD,
}


def get_structure(name_or_obj: str | Structure) -> Structure:
    """A structure by name ("tt", "tr", "cp", "tucker", "tucker2", "gkpd") or the object itself.

    Examples
    --------
    >>> from sekron.structures import get_structure
    >>> get_structure("tucker2")
    Tucker2(n_iter_max=100, tol=1e-08)
    >>> get_structure("GKPD").name
    'gkpd'
    """
    if isinstance(name_or_obj, Structure):
        return name_or_obj
    if not isinstance(name_or_obj, str):
        raise TypeError(
            f"name_or_obj must be a structure name or a Structure; got {_type_name(name_or_obj)}."
        )
    key = name_or_obj.lower()
    if key not in _BY_NAME:
        raise ValueError(
            f"unknown structure {name_or_obj!r}; known names are {sorted(_BY_NAME)} "
            "(use General(shapes, form) for plain SeKron)."
        )
    return _BY_NAME[key]()
