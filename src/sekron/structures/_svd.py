"""Structures fitted by :func:`sekron.decompose` itself: TT, GKPD and General (plain SeKron)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import isqrt, prod
from typing import Any, ClassVar

from .._embeddings import _one_mode_shapes
from .._plan import chain_params, factor_sizes, full_ranks
from .._plan import n_params as _sekron_params
from .._typing import Form, Ranks, Shapes
from .._validation import check_form, check_rank, check_shapes
from ..decomposition import decompose
from ._base import Structure, _check_rank_seq, _check_tensor_shape, _Context, _Fit


def _decompose_fit(
    t: Any, shapes: Shapes, rank: Any, form: Form, budget: int | None, ctx: _Context
) -> _Fit:
    st = decompose(t, shapes, rank, form=form, max_params=budget, random_state=ctx.random_state)
    return _Fit(st.ranks, st.n_params, list(st.factors), form)


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
        want = full_ranks(_one_mode_shapes(shape), "chain") if r is None else r
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

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"TT ranks ({', '.join(map(str, ranks))})"

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        ranks = None if rank is None else self._ranks(shape, rank)
        return _decompose_fit(t, _one_mode_shapes(shape), ranks, "chain", budget, ctx)


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


class _Shaped(Structure):
    """A structure given by SeKron factor shapes and a form, fitted by :func:`decompose`."""

    min_modes: ClassVar[int] = 1

    def _form(self) -> Form:
        return "nested"

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """The SeKron count at ranks capped by the full ranks of the shapes."""
        shapes, form = self.shapes_for(tensor_shape), self._form()
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

    def _smallest(self, shape: tuple[int, ...]) -> int:
        return sum(factor_sizes(self.shapes_for(shape)))

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        return _decompose_fit(t, self.shapes_for(shape), rank, self._form(), budget, ctx)


@dataclass(frozen=True)
class GKPD(_Shaped):
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

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        return f"rank {ranks[0]}"


@dataclass(frozen=True)
class General(_Shaped):
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
    form: Form = "nested"
    name: ClassVar[str] = "general"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", check_shapes(self.shapes, None))
        object.__setattr__(self, "form", check_form(self.form))

    def _form(self) -> Form:
        return self.form

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        shape = _check_tensor_shape(tensor_shape, self.min_modes, "General")
        return check_shapes(self.shapes, shape)
