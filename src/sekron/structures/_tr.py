"""Tensor ring, fitted by TensorLy's ``tensor_ring`` (TR-SVD), embedded in nested form."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

from .._backend import _thread_backend
from .._embeddings import _tr_factors
from ._base import _check_rank_seq, _check_tensor_shape, _Context, _Fit, _TensorLyStructure


@dataclass(frozen=True)
class TR(_TensorLyStructure):
    """Tensor ring, fitted by TensorLy's ``tensor_ring`` (TR-SVD), embedded in nested form.

    ``rank`` is an int, the ``N`` ring ranks ``(q_0..q_{N-1})``, or TensorLy's ``N + 1`` ranks
    with ``q_N = q_0``. TR-SVD needs ``q_0 q_1 <= min(n_1, n_2⋯n_N)`` and caps the others as
    ``q_{k+1} <= min(q_k n_k, n_{k+1}⋯n_N q_0)``; :meth:`n_params` uses the same caps.

    Parameters: ``Σ_k q_{k-1} n_k q_k``. The SeKron embedding has ranks
    ``(q_0 q_1, q_2, .., q_{N-1})`` (structures docs) and more stored numbers.

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
        """The N + 1 ring ranks ``(q_0..q_N)``, ``q_N = q_0``, capped as TR-SVD caps them."""
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
                f"rank gives q_0 = {q[0]} and q_1 = {q[1]}, but TR-SVD needs "
                f"q_0 * q_1 <= min(n_1, n_2⋯n_N) = {first}."
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

    def _smallest(self, shape: tuple[int, ...]) -> int:
        return self._count(shape, self._ranks(shape, 1))

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"TR ranks ({', '.join(map(str, ranks))})"

    def _budget_rank(self, shape: tuple[int, ...], budget: int) -> int:
        """The largest uniform q whose count fits (the budget fits q = 1: checked before)."""
        best, q = 1, 2
        first = min(shape[0], prod(shape[1:]))
        while q * q <= first and self._count(shape, self._ranks(shape, q)) <= budget:
            best, q = q, q + 1
        return best

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        from tensorly.decomposition import tensor_ring

        q = self._ranks(shape, self._budget_rank(shape, budget) if budget else rank)
        with _thread_backend("numpy"), warnings.catch_warnings():
            # TensorLy warns whenever a ring is fitted to a matrix; that is allowed here
            warnings.filterwarnings(
                "ignore", message="Determining the TR-rank", category=UserWarning
            )
            tr = tensor_ring(self._numpy(t), rank=q, random_state=ctx.tensorly_rs)
        embedded = _tr_factors(*self._native(tr.factors, t))
        return _Fit(tuple(q[:-1]), self._count(shape, q), embedded)
