"""The fit template every structure shares, its result type and the argument checks.

:meth:`Structure.fit_result` checks the arguments once, normalizes the tensor by an exact power
of two (so that no square overflows or underflows, whatever the tensor's scale), runs the
structure's own algorithm (:meth:`Structure._fit`, the only part a subclass writes), measures
the relative error on the normalized tensor and puts the scale back into the first factor of
the SeKron embedding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._backend import (
    backend_name_of,
    get_backend,
    like,
    pow2_scale,
    scale_by,
    sq_norm,
    to_numpy,
    unscaled,
)
from .._embeddings import _one_mode_shapes
from .._typing import Form, Ranks, Shapes
from .._validation import (
    _type_name,
    check_number,
    check_positive_int,
    check_tensor,
    is_int,
)
from ..random import check_random_state
from ..tensor import SeKronTensor


class BudgetTooSmall(ValueError):
    """``max_params`` is below the structure's smallest parameter count (all ranks 1).

    Attributes
    ----------
    structure : str
        The structure's class name.
    budget, smallest : int
        The budget given and the structure's own count at its smallest ranks.
    """

    def __init__(self, structure: str, budget: int, smallest: int) -> None:
        super().__init__(
            f"max_params={budget} is too small for {structure}: its smallest ranks already need "
            f"{smallest} parameters."
        )
        self.structure, self.budget, self.smallest = structure, budget, smallest


@dataclass(frozen=True)
class FitResult:
    """A structure fitted by its own algorithm, in its own terms, and its exact SeKron embedding.

    Attributes
    ----------
    structure : Structure
        The structure that was fitted.
    ranks : tuple of int
        The structure's own ranks in its own notation: CP ``(R,)``; Tucker one rank per mode;
        TT ``(r_1..r_{N-1})``; TR ``(q_0..q_{N-1})``; Tucker-2 ``(R_F, R_C)``; GKPD ``(R,)``;
        General the SeKron ranks.
    n_params : int
        The structure's own parameter count at those ranks (for example Tucker's core plus
        factors), which is what comparisons use.
    embedding : SeKronTensor
        The exact SeKron embedding of the fit; its ``rel_error`` is measured.
    cut_short : bool
        True when ``max_seconds`` stopped the structure's iterations before they converged.
    seconds : float
        Wall time of the fit.
    """

    structure: Structure
    ranks: Ranks
    n_params: int
    embedding: SeKronTensor
    cut_short: bool = False
    seconds: float = 0.0

    @property
    def rel_error(self) -> float:
        """Measured ``||W - Ŵ|| / ||W||`` of the fit (0 for a zero tensor)."""
        return float(self.embedding.rel_error or 0.0)

    def describe_ranks(self) -> str:
        """The ranks as the structure writes them, such as ``rank 186`` for CP."""
        return self.structure.describe_ranks(self.ranks)


class _Fit(NamedTuple):
    """What a structure's own algorithm returns (arrays of the input's kind, normalized)."""

    ranks: Ranks
    n_params: int
    factors: list[Any]
    form: Form = "nested"
    cut_short: bool = False


class _Context(NamedTuple):
    """Checked options of one fit."""

    random_state: Any  # as the caller gave it (validated)
    tensorly_rs: np.random.RandomState  # for TensorLy, which takes no Generator
    deadline: float | None  # time.perf_counter() value after which iterations stop

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def _tensorly_random_state(random_state: Any) -> np.random.RandomState:
    """A RandomState for TensorLy (which does not take Generators); never the global one."""
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if is_int(random_state) and int(random_state) < 0:
        raise ValueError(f"random_state must be a non-negative int seed; got {random_state!r}.")
    rng = check_random_state(random_state)
    return np.random.RandomState(int(rng.integers(0, 2**31 - 1)))


def _float64(t: Any) -> np.ndarray:
    """A float64 numpy copy (or view) of a checked array, for TensorLy's numpy algorithms."""
    return np.asarray(to_numpy(t), dtype=np.float64)


def _backend_of(t: Any) -> Any:
    """The TensorLy backend object of a checked array."""
    name = backend_name_of(t)
    assert name is not None
    return get_backend(name)


def _native(arrays: Sequence[Any], ref: Any) -> list[Any]:
    """numpy results as arrays of ``ref``'s kind, dtype and device."""
    return [like(np.asarray(a), ref) for a in arrays]


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def _check_tensor_shape(tensor_shape: object, min_modes: int, structure: str) -> tuple[int, ...]:
    if isinstance(tensor_shape, str | bytes) or not isinstance(tensor_shape, Sequence):
        raise TypeError(f"tensor_shape must be a tuple of ints; got {_type_name(tensor_shape)}.")
    out = tuple(check_positive_int(v, f"tensor_shape[{i}]") for i, v in enumerate(tensor_shape))
    return _check_n_modes(out, min_modes, structure)


def _check_n_modes(shape: tuple[int, ...], min_modes: int, structure: str) -> tuple[int, ...]:
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


def _check_rank_or_budget(rank: object, max_params: object) -> int | None:
    """``max_params`` as an int, or None; at most one of rank and max_params."""
    if rank is not None and max_params is not None:
        raise ValueError(
            f"give at most one of rank and max_params; got both (rank={rank!r}, "
            f"max_params={max_params!r})."
        )
    return None if max_params is None else check_positive_int(max_params, "max_params")


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
# the template
# ----------------------------------------------------------------------------------------------
class Structure:
    """Base class: a named factorization structure with an exact SeKron embedding.

    A subclass implements its own algorithm in ``_fit`` and its own count in :meth:`n_params`;
    :meth:`fit_result` (and :meth:`fit`) do everything else once.
    """

    name: ClassVar[str] = ""
    min_modes: ClassVar[int] = 2

    def shapes_for(self, tensor_shape: Sequence[int]) -> Shapes:
        """The SeKron factor shapes of the embedding for a tensor of ``tensor_shape``."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, type(self).__name__)
        return _one_mode_shapes(shape)

    def n_params(self, tensor_shape: Sequence[int], rank: Any = None) -> int:
        """The structure's own parameter count at the ranks :meth:`fit` would use."""
        raise NotImplementedError

    def min_params(self, tensor_shape: Sequence[int]) -> int:
        """The structure's own parameter count at its smallest ranks (every rank 1)."""
        shape = _check_tensor_shape(tensor_shape, self.min_modes, type(self).__name__)
        return self._smallest(shape)

    def _smallest(self, shape: tuple[int, ...]) -> int:
        return sum(shape)

    def describe_ranks(self, ranks: Sequence[int]) -> str:
        """Ranks in the structure's own notation, e.g. ``ranks (4, 3, 2)``."""
        return f"ranks ({', '.join(map(str, ranks))})"

    def fit(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
    ) -> SeKronTensor:
        """Fit the structure and return its exact SeKron embedding (``.rel_error`` measured).

        See :meth:`fit_result`, which also gives the structure's own ranks and count.
        """
        return self.fit_result(
            tensor, rank=rank, max_params=max_params, random_state=random_state
        ).embedding

    def fit_result(
        self,
        tensor: Any,
        *,
        rank: Any = None,
        max_params: int | None = None,
        random_state: Any = None,
        max_seconds: float | None = None,
    ) -> FitResult:
        """Fit the structure by its own algorithm: its own ranks and count, and the embedding.

        Parameters
        ----------
        tensor : array
            numpy, torch or jax array of float32 or float64 (integers are cast).
        rank : int or sequence of int, optional
            The structure's own ranks (see the class). Give at most one of rank and max_params.
        max_params : int, optional
            Budget in the structure's own parameter count.
        random_state : None, int, Generator or RandomState
            Seed of the iterative algorithms.
        max_seconds : float > 0, optional
            Stop iterating after this much time (the result says ``cut_short``).

        Returns
        -------
        FitResult
            Own ranks, own count, the embedding (arrays of the input's kind, dtype and device)
            and its measured relative error.

        Raises
        ------
        TypeError, ValueError
            Bad arguments (each message names the argument); :class:`BudgetTooSmall` (a
            ValueError) when ``max_params`` is below the smallest ranks' count.
        """
        budget = _check_rank_or_budget(rank, max_params)
        if max_seconds is not None:
            max_seconds = check_number(max_seconds, "max_seconds", above=0.0)
        t, _ = check_tensor(tensor)
        _check_n_modes(tuple(int(v) for v in t.shape), self.min_modes, type(self).__name__)
        return self._fit_checked(
            t, rank=rank, budget=budget, random_state=random_state, max_seconds=max_seconds
        )

    def _fit_checked(
        self,
        t: Any,
        *,
        rank: Any = None,
        budget: int | None = None,
        random_state: Any = None,
        max_seconds: float | None = None,
    ) -> FitResult:
        """:meth:`fit_result` of a checked tensor with enough modes and checked options."""
        start = time.perf_counter()
        ctx = _Context(
            random_state,
            _tensorly_random_state(random_state),
            None if max_seconds is None else start + max_seconds,
        )
        shape = tuple(int(v) for v in t.shape)
        if budget is not None and budget < self._smallest(shape):
            raise BudgetTooSmall(type(self).__name__, budget, self._smallest(shape))
        # squares of entries near 1e±160 (float64) or 1e±19 (float32) overflow or underflow:
        # fit s·t with s an exact power of two, and divide s out of the first factor at the end
        # (of all of them where one cannot hold it: sekron._backend.unscaled)
        scale = pow2_scale(t)
        ts = scale_by(t, scale)
        fit = self._fit(ts, shape, rank, budget, ctx)
        scaled = SeKronTensor(fit.factors, fit.form)
        den = float(sq_norm(ts))
        rel = 0.0 if den == 0.0 else float(np.sqrt(float(sq_norm(scaled.to_tensor() - ts)) / den))
        factors = unscaled(list(fit.factors), scale, 0)
        return FitResult(
            self,
            tuple(fit.ranks),
            int(fit.n_params),
            SeKronTensor(factors, fit.form, rel_error=rel),
            fit.cut_short,
            time.perf_counter() - start,
        )

    def _fit(
        self, t: Any, shape: tuple[int, ...], rank: Any, budget: int | None, ctx: _Context
    ) -> _Fit:
        """The structure's own algorithm on a checked, normalized tensor ``t``."""
        raise NotImplementedError


class _TensorLyStructure(Structure):
    """A structure fitted by an algorithm on a float64 numpy copy (TensorLy's, or CP's ALS)."""

    @staticmethod
    def _numpy(t: Any) -> np.ndarray:
        return _float64(t)

    @staticmethod
    def _native(arrays: Sequence[Any], ref: Any) -> tuple[Any, list[Any]]:
        """The TensorLy backend of ``ref`` and the numpy ``arrays`` as arrays of its kind."""
        return _backend_of(ref), _native(arrays, ref)
