"""Tucker and Tucker-2, fitted by HOOI as TensorLy's ``tucker`` and ``partial_tucker`` run it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np

from .. import _ranks
from .._embeddings import _tucker_factors
from .._typing import Shapes
from .._validation import check_number, check_positive_int
from ._base import (
    _check_rank_seq,
    _check_tensor_shape,
    _Context,
    _Fit,
    _minimal_tucker,
    _TensorLyStructure,
)


def _project(
    X: np.ndarray, factors: Sequence[np.ndarray], modes: Sequence[int], skip: int = -1
) -> np.ndarray:
    """``X ×_m U_mᵀ`` over ``modes`` (all but the ``skip``-th): the core, or HOOI's target."""
    for i, (m, U) in enumerate(zip(modes, factors, strict=True)):
        if i != skip:
            X = np.moveaxis(np.tensordot(X, U, axes=([m], [0])), -1, m)
    return X


def _leading(Y: np.ndarray, mode: int, rank: int) -> np.ndarray:
    """The leading ``rank`` left singular vectors of the mode-``mode`` unfolding of Y."""
    M = np.moveaxis(Y, mode, 0).reshape(Y.shape[mode], -1)
    return np.linalg.svd(M, full_matrices=False)[0][:, :rank]


def _hooi(
    X: np.ndarray,
    ranks: Sequence[int],
    modes: Sequence[int],
    *,
    n_iter_max: int,
    tol: float,
    ctx: _Context,
) -> tuple[np.ndarray, list[np.ndarray], bool]:
    """Tucker of ``modes`` by HOOI from the HOSVD, as TensorLy's ``tucker`` and
    ``partial_tucker`` run it (same start, sweep and stopping rule): the core, the factors and
    whether ``ctx`` expired before convergence (cut short)."""
    factors = [_leading(X, m, r) for m, r in zip(modes, ranks, strict=True)]
    norm2 = float(np.vdot(X, X))
    core = _project(X, factors, modes)
    if norm2 == 0.0:  # the zero core is exact
        return core, factors, False
    errors: list[float] = []
    for it in range(n_iter_max):
        for i, m in enumerate(modes):
            factors[i] = _leading(_project(X, factors, modes, skip=i), m, ranks[i])
        core = _project(X, factors, modes)
        errors.append(float(np.sqrt(abs(norm2 - float(np.vdot(core, core))) / norm2)))
        if tol and it > 1 and abs(errors[-2] - errors[-1]) < tol:
            break
        if ctx.expired():
            return core, factors, it < n_iter_max - 1
    return core, factors, False


@dataclass(frozen=True)
class _HOOI(_TensorLyStructure):
    """Shared options of the two Tucker structures (HOOI sweeps from the HOSVD)."""

    n_iter_max: int = 100
    tol: float = 1e-8

    def __post_init__(self) -> None:
        check_positive_int(self.n_iter_max, "n_iter_max")
        check_number(self.tol, "tol", at_least=0.0)


@dataclass(frozen=True)
class Tucker(_HOOI):
    """Tucker, fitted by HOOI from the HOSVD (as TensorLy's ``tucker``), embedded in nested form.

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

    def _smallest(self, shape: tuple[int, ...]) -> int:
        return int(self._count(shape, (1,) * len(shape)))

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"ranks ({', '.join(map(str, ranks))})"

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        ranks = self._ranks(shape, rank)
        X = self._numpy(t)
        if budget is not None:
            ranks = _ranks.budget_ranks(
                X, range(len(shape)), lambda g: self._count(shape, g), budget
            )
        modes = range(len(shape))
        core, factors, cut = _hooi(
            X, ranks, modes, n_iter_max=self.n_iter_max, tol=self.tol, ctx=ctx
        )
        B, (core, *factors) = self._native([core, *factors], t)
        embedded = _tucker_factors(B, core, factors)
        return _Fit(ranks, int(self._count(shape, ranks)), embedded, "nested", cut)


@dataclass(frozen=True)
class Tucker2(_HOOI):
    """Tucker-2 of a conv weight (F, C, H, W): modes F and C compressed, the others kept.

    Fitted by HOOI on modes (0, 1) (as TensorLy's ``partial_tucker``), embedded as a nested
    SeKron of S = 3 factors, shapes ``(F,1,1,1), (1,C,1,1), (1,1,H,W)`` and ranks ``(R_F, R_C)``:
    ``A1 = U_F``, ``A2[r1, r2] = U_C[:, r2]``, ``A3[r1, r2] = G[r1, r2]``. Any tensor
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

    def _smallest(self, shape: tuple[int, ...]) -> int:
        return int(self._count(shape, (1, 1)))

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"ranks (R_F, R_C) = ({ranks[0]}, {ranks[1]})"

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        ranks: tuple[int, ...] = self._ranks(shape, rank)
        X = self._numpy(t)
        kept = prod(shape[2:])
        if budget is not None:
            ranks = _ranks.budget_ranks(X, (0, 1), lambda g: self._count(shape, g), budget, kept)
        core, (UF, UC), cut = _hooi(
            X, ranks, (0, 1), n_iter_max=self.n_iter_max, tol=self.tol, ctx=ctx
        )
        B, (core, UF, UC, eye) = self._native([core, UF, UC, np.eye(kept)], t)
        # the 3-factor embedding is the 3-mode Tucker embedding of (F, C, H*W), reshaped
        A1, A2, A3 = _tucker_factors(B, B.reshape(core, (*ranks, kept)), [UF, UC, eye])
        shapes = self.shapes_for(shape)
        factors = [
            B.reshape(A1, (ranks[0], *shapes[0])),
            B.reshape(A2, (*ranks, *shapes[1])),
            B.reshape(A3, (*ranks, *shapes[2])),
        ]
        return _Fit(ranks, int(self._count(shape, ranks)), factors, "nested", cut)
