"""search(): the SeKron factor shapes, form and ranks with the lowest error within a budget.

Every configuration is scored by its *exact* error computed from singular values (SPEC §3); the
full tensor is never rebuilt. The expensive parts are shared:

- **Level 1.** The singular values of R(W) for ``(a1 | rest)`` do not depend on how ``rest``
  splits into later factors (that is a column permutation), so each first-factor shape ``a1`` is
  decomposed once, at the largest rank any configuration starting with it can afford. These are
  also the spectra of every 2-factor configuration and of every unfolding
  ``(a1 ∘ .. ∘ ak | rest)`` that the chain form needs.
- **Lower bounds.** A nested structure of ranks (R_1..R_{S-1}) has rank at most R_1 in the
  unfolding ``(a1 | rest)`` and at most R_1⋯R_{S-1} in ``(a1 ∘ .. ∘ a_{S-1} | a_S)``; a chain has
  rank R_k in ``(a1 ∘ .. ∘ ak | rest)``. Eckart-Young on those (already computed) spectra gives a
  certified lower bound on each configuration's error within the budget. Configurations with
  S >= 3 are evaluated in increasing order of that bound, and those whose bound cannot beat the
  best error found so far are skipped (``exhaustive=True`` evaluates all of them).
- **Trees given up part-way.** A nested 3-factor tree computes its level-2 branches in growing
  chunks, largest level-1 singular value first. After each chunk, the exact errors of the ranks
  whose branches are all in, and for larger R_1 the level-1 tail plus the branches so far,
  bound every rank choice within the budget; once that bound cannot beat the best error, the
  rest of the tree is skipped (counted as pruned).
- **Deeper levels** are one batched SVD per level, capped at the ranks that fit the budget.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from math import log, prod
from typing import Any, overload

import numpy as np

from . import _ranks
from ._backend import eps, get_backend, like, numpy_dtype, sq_norm, to_numpy
from ._plan import (
    Ranks,
    Shapes,
    chain_params,
    factor_sizes,
    full_ranks,
    nested_params,
    rearrange_plan,
)
from ._svd import GRAM_RELIABLE, METHODS, truncated_svd
from ._validation import _type_name, check_form, check_positive_int, check_tensor, is_int
from .decomposition import NestedTree, _choose_chain_budget, _choose_nested, decompose
from .kron import rearrange_unchecked
from .random import check_random_state
from .tensor import SeKronTensor

__all__ = ["Candidate", "SearchResult", "search", "enumerate_configs"]

#: Bytes of level-1 singular vectors kept from the spectra until their configurations are
#: evaluated; beyond this they are recomputed.
_VEC_CACHE_BYTES = 512 << 20
#: Memory for level-1 spectra computed at once on worker threads (each holds a rearranged
#: copy of the tensor and a Gram matrix).
_SPECTRA_BYTES = 1 << 30
#: Work (multiply-adds of a Gram stack, cubed sizes of an eigenvalue stack) below which a stack
#: is not split across worker threads: dispatching costs more than it saves.
_PARALLEL_MIN_SIZE = 1 << 20


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One evaluated SeKron structure: factor shapes, form and the best ranks within the budget.

    Attributes
    ----------
    shapes : tuple of S tuples of N ints
    form : {"nested", "chain"}
        For S = 2 the two forms coincide; such candidates are reported as ``"nested"``.
    ranks : tuple of S - 1 ints
    n_params : int
        Parameters of the structure at these ranks.
    rel_error : float
        Exact relative Frobenius error ``||W - Ŵ|| / ||W||`` of :meth:`to_sekron`'s result.
    """

    shapes: Shapes
    form: str
    ranks: Ranks
    n_params: int
    rel_error: float
    _tensor: Any = field(default=None, repr=False, compare=False)

    @property
    def n_factors(self) -> int:
        return len(self.shapes)

    def to_sekron(self, tensor: Any = None) -> SeKronTensor:
        """The SeKronTensor this candidate describes: ``decompose(tensor, shapes, rank=ranks)``.

        Parameters
        ----------
        tensor : array, optional
            Defaults to the tensor that was searched.
        """
        t = self._tensor if tensor is None else tensor
        if t is None:
            raise ValueError("this Candidate holds no tensor; pass the tensor to to_sekron().")
        return decompose(t, self.shapes, rank=self.ranks, form=self.form)

    def describe(self) -> str:
        """A short text such as ``(16,8,3,1)⊗(8,8,1,3) nested r=(12,)``."""
        shapes = "⊗".join("(" + ",".join(map(str, s)) + ")" for s in self.shapes)
        ranks = ",".join(map(str, self.ranks))
        return f"{shapes} {self.form} r=({ranks})"


class SearchResult(Sequence[Candidate]):
    """The Pareto front (parameters vs error) of the evaluated candidates, best first.

    ``result[0]`` (also ``result.best``) has the lowest error within the budget; going down the
    list, the error rises and the parameter count falls. Every candidate evaluated (one per
    configuration and form) is in ``result.all``.

    Attributes
    ----------
    best : Candidate
    all : tuple of Candidate
        All evaluated candidates, in evaluation order.
    budget : int
        The parameter budget ``max_params`` (numel / compression when given a compression).
    tensor_shape : tuple of int
    n_configs : int
        Configurations (shapes x form) considered after the budget and ``max_configs`` filters.
    n_pruned : int
        Configurations skipped because their certified lower bound could not beat the best error
        (before their evaluation, or part-way through a nested 3-factor tree).
    interrupted : bool
        True when the search was stopped by KeyboardInterrupt; the result holds what was found.
    timed_out : bool
        True when ``max_seconds`` ran out before every configuration was evaluated or pruned.
    bound : float
        Certified lower bound on the relative error of every configuration that was *not*
        evaluated (pruned, or left when stopped early); ``inf`` when every one was evaluated.
        No structure of a skipped configuration, at any ranks within the budget, can have a
        lower error than this (Eckart-Young on unfoldings, see :mod:`sekron.search`).
    certified : bool
        ``best.rel_error <= bound``: the best candidate is the best over *all* configurations,
        not only the evaluated ones. Always true after a complete search.
    n_open : int
        Configurations left unevaluated by a stopped search (``max_seconds``, or Ctrl-C) whose
        certified lower bound is below the best error found: only these could still beat it.
        0 after a complete search, and whenever the best is certified.
    seconds : float
        Wall time of the search.
    """

    def __init__(
        self,
        front: Sequence[Candidate],
        all_: Sequence[Candidate],
        *,
        budget: int,
        tensor_shape: tuple[int, ...],
        n_configs: int,
        n_pruned: int,
        interrupted: bool,
        seconds: float,
        timed_out: bool = False,
        bound: float = float("inf"),
        n_open: int = 0,
    ) -> None:
        self._front = tuple(front)
        self.all = tuple(all_)
        self.budget = budget
        self.tensor_shape = tensor_shape
        self.n_configs = n_configs
        self.n_pruned = n_pruned
        self.interrupted = interrupted
        self.timed_out = timed_out
        self.bound = bound
        self.n_open = n_open
        self.seconds = seconds

    @overload
    def __getitem__(self, i: int) -> Candidate: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Candidate, ...]: ...
    def __getitem__(self, i: int | slice) -> Candidate | tuple[Candidate, ...]:
        return self._front[i]

    def __len__(self) -> int:
        return len(self._front)

    @property
    def best(self) -> Candidate:
        return self._front[0]

    @property
    def certified(self) -> bool:
        return self.best.rel_error <= self.bound * (1 + 1e-12)

    def __repr__(self) -> str:
        head = (
            f"SearchResult for shape {self.tensor_shape}, budget {self.budget:,} params: "
            f"{len(self)} on the front of {len(self.all)} evaluated"
            + (f" ({self.n_pruned} pruned)" if self.n_pruned else "")
            + (", INTERRUPTED" if self.interrupted else "")
            + (", TIME LIMIT" if self.timed_out else "")
        )
        if not self.certified:
            head += (
                f"\n  not certified: {self.n_open:,} configurations left unevaluated may reach "
                f"rel. error {self.bound:.4f}"
            )
        lines = [head]
        for c in self._front[:10]:
            lines.append(f"  {c.rel_error:.4f}  {c.n_params:>10,}  {c.describe()}")
        if len(self) > 10:
            lines.append(f"  ... {len(self) - 10} more")
        return "\n".join(lines)


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates not dominated in (n_params, rel_error), lowest error first."""
    order = sorted(cands, key=lambda c: (c.rel_error, c.n_params))
    front: list[Candidate] = []
    best_params = None
    for c in order:
        if best_params is None or c.n_params < best_params:
            front.append(c)
            best_params = c.n_params
    return front


# ----------------------------------------------------------------------------------------------
# enumeration (pure functions of tuples of ints)
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def ordered_factorizations(n: int, parts: int) -> tuple[tuple[int, ...], ...]:
    """All ordered tuples of ``parts`` positive ints whose product is ``n`` (ones allowed)."""
    if parts == 1:
        return ((n,),)
    out: list[tuple[int, ...]] = []
    for d in range(1, n + 1):
        if n % d == 0:
            out.extend((d, *rest) for rest in ordered_factorizations(n // d, parts - 1))
    return tuple(out)


def enumerate_configs(tensor_shape: Sequence[int], n_factors: int) -> Iterator[Shapes]:
    """Every factor-shape configuration with ``n_factors`` factors, none of them all ones.

    Mode n of size w_n is split into an ordered factorization ``w_n = a^(1)_n ⋯ a^(S)_n``;
    modes are combined independently. A configuration is dropped when some factor is all ones
    (it would be a configuration with fewer factors).

    Examples
    --------
    >>> from sekron.search import enumerate_configs
    >>> list(enumerate_configs((4, 3), 2))
    [((1, 3), (4, 1)), ((2, 1), (2, 3)), ((2, 3), (2, 1)), ((4, 1), (1, 3))]
    """
    per_mode = [ordered_factorizations(int(w), n_factors) for w in tensor_shape]
    for combo in product(*per_mode):
        shapes = tuple(tuple(f[k] for f in combo) for k in range(n_factors))
        if any(all(v == 1 for v in s) for s in shapes):
            continue
        yield shapes


def balance_score(shapes: Shapes) -> float:
    """Variance of ``log |a^(k)|`` over the factors: 0 for perfectly balanced factor sizes."""
    logs = [log(d) for d in factor_sizes(shapes)]
    mean = sum(logs) / len(logs)
    return sum((v - mean) ** 2 for v in logs) / len(logs)


def _min_params(shapes: Shapes) -> int:
    return sum(factor_sizes(shapes))


def _prefix(shapes: Shapes, k: int) -> tuple[int, ...]:
    """Elementwise product of the first k factor shapes: the first factor of an unfolding."""
    return tuple(prod(s[n] for s in shapes[:k]) for n in range(len(shapes[0])))


def _nested_caps(d: Sequence[int], shapes: Shapes, budget: int) -> Ranks:
    full = full_ranks(shapes, "nested")
    return tuple(
        max(1, min(full[k], (budget - sum(d[:k])) // sum(d[k:]))) for k in range(len(d) - 1)
    )


def _chain_caps(d: Sequence[int], shapes: Shapes, budget: int) -> Ranks:
    full = full_ranks(shapes, "chain")
    return tuple(
        max(1, min(full[k], (budget - sum(d) + d[k] + d[k + 1]) // (d[k] + d[k + 1])))
        for k in range(len(d) - 1)
    )


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _check_budget(max_params: Any, compression: Any, numel: int) -> int:
    if (max_params is None) == (compression is None):
        raise ValueError(
            "give exactly one of max_params and compression; got "
            f"max_params={max_params!r}, compression={compression!r}."
        )
    if max_params is not None:
        return check_positive_int(max_params, "max_params")
    if isinstance(compression, bool) or not isinstance(compression, int | float | np.number):
        raise TypeError(
            f"compression must be a number > 1; got {compression!r} of type "
            f"{_type_name(compression)}."
        )
    c = float(compression)
    if not c > 1.0 or not np.isfinite(c):
        raise ValueError(
            f"compression must be a finite number > 1 (numel / n_params); got {compression!r}."
        )
    return max(1, int(numel / c))


def check_max_seconds(max_seconds: Any) -> float | None:
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float | np.number):
        raise TypeError(
            f"max_seconds must be a number > 0 or None; got {max_seconds!r} of type "
            f"{_type_name(max_seconds)}."
        )
    if not (float(max_seconds) > 0 and np.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be a finite number > 0; got {max_seconds!r}.")
    return float(max_seconds)


def _check_forms(forms: Any) -> tuple[str, ...]:
    if isinstance(forms, str):
        forms = (forms,)
    if not isinstance(forms, Sequence) or not forms:
        raise ValueError(f"forms must be a non-empty sequence of 'nested'/'chain'; got {forms!r}.")
    return tuple(dict.fromkeys(check_form(f) for f in forms))


# ----------------------------------------------------------------------------------------------
# the engine
# ----------------------------------------------------------------------------------------------
@dataclass
class _Job:
    shapes: Shapes
    form: str
    d: tuple[int, ...]
    caps: tuple[Ranks, ...]  # per budget
    prefix_last: tuple[int, ...] = ()  # first factor of the unfolding (a1..a_{S-1} | a_S)
    lower2: list[float] = field(default_factory=list)  # per budget: lower bound on err²


def _gram(B: Any, X: Any, rows: bool) -> np.ndarray:
    """Grams of a stack X (P, m, n) as float64 numpy: ``X Xᵀ`` if ``rows``, else ``Xᵀ X``."""
    Xt = B.transpose(X, (0, 2, 1))
    return np.asarray(to_numpy(B.matmul(X, Xt) if rows else B.matmul(Xt, X)), dtype=np.float64)


def _svd_values2(B: Any, X: Any) -> np.ndarray:
    """Squared singular values of a stack X (P, m, n) from a thin SVD, descending."""
    return np.asarray(to_numpy(B.svd(X, full_matrices=False)[1]), dtype=np.float64) ** 2


def _eigvals_desc(G: np.ndarray) -> np.ndarray:
    """Eigenvalues of a stack of symmetric PSD Grams (P, m, m), descending, clipped at 0."""
    return np.clip(np.linalg.eigvalsh(G)[:, ::-1], 0.0, None)


def _deep_order(deep: list[_Job]) -> list[_Job]:
    """Jobs with S >= 3, grouped so that shared work is done once and most promising first.

    Jobs are grouped by first factor (its level-1 remainders ``Uᵀ X`` are computed once per
    group) and then by configuration (nested before chain: for S = 3 the chain reuses the
    nested level's Grams); groups and configurations with the lowest lower bound come first,
    so that pruning against the best error found so far bites early.
    """
    cfg: dict[Shapes, float] = {}
    for j in deep:
        cfg[j.shapes] = min(cfg.get(j.shapes, np.inf), min(j.lower2))
    first: dict[tuple[int, ...], float] = {}
    for c, v in cfg.items():
        first[c[0]] = min(first.get(c[0], np.inf), v)

    def key(j: _Job) -> tuple[Any, ...]:
        return (first[j.shapes[0]], j.shapes[0], cfg[j.shapes], j.shapes, j.form != "nested")

    return sorted(deep, key=key)


class _Spectrum:
    """Squared singular values of R(W) for ``(a | w / a)``: kept σ² and the energy beyond."""

    __slots__ = ("sig2", "rest2", "cap", "_tail")

    def __init__(self, sig2: np.ndarray, rest2: float) -> None:
        self.sig2, self.rest2, self.cap = sig2, rest2, int(sig2.shape[0])
        # _tail[R-1] = best squared error at rank R (R = 1..cap), then 0 past the cap
        self._tail = np.concatenate([_ranks.tail(sig2, np.asarray(rest2)), [0.0]])

    def tail(self, length: int) -> np.ndarray:
        """``tail[R-1]``: squared error of the best rank-R approximation, R = 1..length."""
        return self._tail[: min(length, self.cap)]

    def tails_at(self, r: np.ndarray) -> np.ndarray:
        """Best squared errors at ranks r (a lower bound, 0, past the computed cap)."""
        return self._tail[np.minimum(r, self.cap + 1) - 1]

    def tail_at(self, r: int) -> float:
        """Best squared error at rank r (a lower bound, 0, past the computed cap)."""
        return float(self._tail[min(r, self.cap + 1) - 1])


class _Engine:
    def __init__(
        self,
        t: Any,
        backend: str,
        budgets: Sequence[int],
        svd: str,
        rng: np.random.Generator,
        pool: ThreadPoolExecutor | None = None,
        workers: int = 1,
    ) -> None:
        self.t = t
        # numpy only: worker threads for batches of small factorizations (BLAS single-threaded)
        self.pool = pool
        self.workers = workers if pool is not None else 1
        self.B = get_backend(backend)
        self.shape = tuple(int(s) for s in t.shape)
        self.numel = prod(self.shape)
        self.budgets = tuple(budgets)
        self.svd = svd
        self.rng = rng
        self.spectra: dict[tuple[int, ...], _Spectrum] = {}
        self.need: dict[tuple[int, ...], int] = {}
        self.heads: set[tuple[int, ...]] = set()  # first factors of configurations with S >= 3
        self.vecs: dict[tuple[int, ...], tuple[bool, Any, np.ndarray]] = {}
        self.vec_bytes = 0
        self.y_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.col_grams: tuple[Shapes, Any] | None = None
        self.norm2 = float(sq_norm(t))

    # -- level 1 ---------------------------------------------------------------------------
    def _matrix(self, a: tuple[int, ...]) -> Any:
        b = tuple(w // x for w, x in zip(self.shape, a, strict=True))
        X = rearrange_unchecked(self.B, self.t, (a, b))
        return self.B.reshape(X, (1, prod(a), prod(b)))

    def spectrum_work(self, a: tuple[int, ...], cap: int) -> tuple[Any, ...]:
        """The spectrum of ``(a | w / a)``, touching no engine state (runs in worker threads).

        For a first factor of deeper configurations the Gram's eigenvectors come too, so that
        :meth:`level1_Y` needs no second Gram.
        """
        B, X = self.B, self._matrix(a)
        if self.svd == "randomized":
            level = truncated_svd(B, X, cap, "randomized", self.rng)
            return np.asarray(level.sig2[0]), float(level.rest2[0]), None
        if self.svd == "exact":
            return _svd_values2(B, X)[0], 0.0, None
        m, n = X.shape[1], X.shape[2]
        G = _gram(B, X, m <= n)[0]
        if a not in self.heads:
            return _eigvals_desc(G[None])[0], 0.0, None
        w, V = np.linalg.eigh(G)
        sig2 = np.clip(w[::-1], 0.0, None)
        size = sig2.shape[0]
        k = min(cap, size)
        # the Gram's vectors are trusted as _svd._gram trusts them: unless what lies beyond
        # the cap is too small for the Gram's absolute accuracy (then level1_Y recomputes)
        if k < size and sig2[k:].sum() < GRAM_RELIABLE * size * eps(X) * sig2.sum():
            return sig2, 0.0, None
        return sig2, 0.0, (m <= n, like(np.ascontiguousarray(V[:, ::-1][:, :k]), X), sig2[:k])

    def store_spectrum(self, a: tuple[int, ...], work: tuple[Any, ...]) -> _Spectrum:
        sig2, rest2, kept = work
        sp = self.spectra[a] = _Spectrum(sig2, rest2)
        if kept is not None:
            nbytes = int(np.prod(kept[1].shape)) * 8
            if self.vec_bytes + nbytes <= _VEC_CACHE_BYTES:
                self.vecs[a] = kept
                self.vec_bytes += nbytes
        return sp

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        """``fn`` over items, in order; on the worker threads when there are."""
        return self.pool.map(fn, items) if self.pool is not None else map(fn, items)

    def _split(self, n: int) -> list[tuple[int, int]]:
        k = min(self.workers, n)
        edges = [n * i // k for i in range(k + 1)]
        return [(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False) if hi > lo]

    def grams(self, X: Any) -> np.ndarray:
        """Smaller-side Grams of a stack X (P, m, n) as float64 numpy (P, s, s), s = min(m, n).

        With worker threads the stack is split across them, or for a single matrix the long
        side is, as a sum of partial Grams.
        """
        m, n = X.shape[1], X.shape[2]

        def gram(Z: Any) -> np.ndarray:  # the side is X's, also for a chunk of its long side
            return _gram(self.B, Z, m <= n)

        P = X.shape[0]
        if self.pool is None or P * m * n * min(m, n) < _PARALLEL_MIN_SIZE:
            return gram(X)
        if P >= self.workers:
            return np.concatenate(list(self.map(gram, [X[lo:hi] for lo, hi in self._split(P)])))
        if m <= n:
            parts = [X[:, :, lo:hi] for lo, hi in self._split(n)]
        else:
            parts = [X[:, lo:hi, :] for lo, hi in self._split(m)]
        return sum(self.map(gram, parts))

    def eigvals(self, G: np.ndarray) -> np.ndarray:
        """:func:`_eigvals_desc` of a stack of Grams, split across the worker threads."""
        P = G.shape[0]
        if self.pool is None or P < 2 or P * G.shape[1] ** 3 < _PARALLEL_MIN_SIZE:
            return _eigvals_desc(G)
        chunks = [G[lo:hi] for lo, hi in self._split(P)]
        return np.concatenate(list(self.map(_eigvals_desc, chunks)))

    def level1_Y(self, a: tuple[int, ...], rank: int, cap: int) -> Any:
        """``Y = Uᵀ X`` (rank, numel / |a|): the level-1 remainders, rows as tensors of w / a.

        From the vectors kept by :meth:`spectrum_work` when there are: ``Uᵀ X`` for a wide unfolding
        (U from ``X Xᵀ``), ``diag(σ) Vᵀ`` for a tall one (V from ``Xᵀ X``: no product with X).
        """
        B = self.B
        if a in self.y_cache and self.y_cache[a].shape[0] >= rank:
            self.y_cache.move_to_end(a)
            return self.y_cache[a][:rank]
        kept = self.vecs.pop(a, None)
        if kept is not None:
            self.vec_bytes -= int(np.prod(kept[1].shape)) * 8
        if kept is not None and kept[1].shape[1] >= rank:
            wide, V, sig2 = kept
            if wide:
                X, Vt = self._matrix(a)[0], B.transpose(V, (1, 0))
                if self.pool is None:
                    Y = B.matmul(Vt, X)
                else:  # numpy: the columns split across the worker threads
                    cols = self._split(X.shape[1])
                    Y = np.concatenate(
                        list(self.map(lambda c: Vt @ X[:, c[0] : c[1]], cols)), axis=1
                    )
            else:
                scale = like(np.sqrt(sig2)[:, None], V)
                Y = scale * B.transpose(V, (1, 0))
        else:
            method = "gram" if self.svd == "auto" else self.svd
            level = truncated_svd(B, self._matrix(a), max(cap, rank), method, self.rng)
            Y = level.Y[0]
        self.y_cache[a] = Y
        if len(self.y_cache) > 2:
            self.y_cache.popitem(last=False)
        return Y[:rank]

    # -- deeper levels ---------------------------------------------------------------------
    def values2(self, X: Any) -> np.ndarray:
        """All squared singular values of a stack X (P, m, n), descending, as float64 numpy."""
        return self.values2_and_col_grams(X)[0]

    def values2_and_col_grams(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`values2`, and the column-side Grams ``XᵀX`` when it formed them.

        ``"auto"``/``"gram"``: eigenvalues of the smaller Gram matrix; otherwise a thin SVD
        (and no Grams). For S = 3 the chain's second unfolding's Gram is the sum of the nested
        level's column Grams over the first R_1 branches.
        """
        if self.svd in ("auto", "gram"):
            G = self.grams(X)
            return self.eigvals(G), (G if X.shape[1] > X.shape[2] else None)
        return _svd_values2(self.B, X), None

    def _rest_tensor(self, shapes: Shapes, Y: Any) -> Any:
        """Rows of Y (tensors of shape w / a1) rearranged by (a2..aS): (P, d2, d3..dS)."""
        B = self.B
        rest_shapes = shapes[1:]
        P = Y.shape[0]
        if len(rest_shapes) == 1:
            return B.reshape(Y, (P, -1))
        split, perm, out = rearrange_plan(rest_shapes)
        Z = B.reshape(Y, (P, *split))
        Z = B.transpose(Z, (0, *(p + 1 for p in perm)))
        return B.reshape(Z, (P, *out))

    def nested_tree(
        self,
        shapes: Shapes,
        d: Sequence[int],
        caps: Ranks,
        give_up: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    ) -> NestedTree | None:
        """The nested SVD tree at ``caps`` (level 1 from the shared spectrum).

        With ``give_up`` (S = 3 only), the level-2 branches are computed in growing chunks,
        largest level-1 singular value first; after each chunk ``give_up(level1_tail, sv2)``
        sees the level-1 tail and the branches so far, and returning True abandons the tree
        (None is returned). See :meth:`_level2_values`.
        """
        sp = self.spectra[shapes[0]]
        M1 = min(caps[0], sp.cap)
        sig2s = [sp.sig2[:M1].copy()]
        rest2s = [np.asarray(sp.rest2 + sp.sig2[M1:].sum())]
        Ms = [M1]
        if len(d) == 3:
            Y = self.level1_Y(shapes[0], M1, self.need[shapes[0]])
            sv2 = self._level2_values(Y, shapes, d, sp.tail(M1), give_up)
            if sv2 is None:
                return None
            M = min(caps[1], sv2.shape[1])
            sig2s.append(sv2[:, :M])
            rest2s.append(sv2[:, M:].sum(axis=1))
            Ms.append(M)
        elif len(d) > 3:
            B = self.B
            X = self._rest_tensor(shapes, self.level1_Y(shapes[0], M1, self.need[shapes[0]]))
            X = B.reshape(X, (M1, d[1], prod(d[2:])))
            for k in range(1, len(d) - 1):
                branch = tuple(Ms)
                if k == len(d) - 2:  # the last level needs singular values only
                    sv2 = self.values2(X)
                    M = min(caps[k], sv2.shape[1])
                    sig2s.append(sv2[:, :M].reshape(*branch, M))
                    rest2s.append(sv2[:, M:].sum(axis=1).reshape(branch))
                    Ms.append(M)
                    break
                level = truncated_svd(B, X, caps[k], self.svd, self.rng)
                M = level.sig2.shape[1]
                sig2s.append(level.sig2.reshape(*branch, M))
                rest2s.append(level.rest2.reshape(branch))
                Ms.append(M)
                X = B.reshape(level.Y, (level.Y.shape[0] * M, d[k + 1], prod(d[k + 2 :])))
        return NestedTree([], None, sig2s, rest2s, tuple(Ms), self.norm2)

    def _level2_values(
        self,
        Y: Any,
        shapes: Shapes,
        d: Sequence[int],
        tail1: np.ndarray,
        give_up: Callable[[np.ndarray, np.ndarray], bool] | None,
    ) -> np.ndarray | None:
        """:meth:`values2` of the level-2 branches of an S = 3 tree (rows of Y rearranged by
        ``(a2 | a3)``), keeping their column Grams for the chain of the same shapes.

        With ``give_up``, in chunks of 8, 16, 32, ... rows, each rearranged only when it is
        reached, asking ``give_up`` after each chunk but the last; None if it gave up (the
        Grams of the branches computed are still kept: the chain sums them and forms the rest).
        """
        M1 = Y.shape[0]
        parts: list[np.ndarray] = []
        grams: list[np.ndarray] = []
        done, step = 0, (M1 if give_up is None else 8)
        while done < M1:
            hi = min(M1, done + step)
            X = self.B.reshape(self._rest_tensor(shapes, Y[done:hi]), (hi - done, d[1], d[2]))
            sv2, G = self.values2_and_col_grams(X)
            parts.append(sv2)
            if G is not None:
                grams.append(G)
            done, step = hi, 2 * step
            if done < M1 and give_up is not None and give_up(tail1, np.concatenate(parts)):
                break
        self.col_grams = (shapes, np.concatenate(grams)) if len(grams) == len(parts) else None
        return np.concatenate(parts) if done == M1 else None

    def chain_error2(self, shapes: Shapes, d: Sequence[int], ranks: Ranks) -> float:
        """Exact squared error of TT-SVD on R(W) at ``ranks`` (level 1 shared)."""
        sp = self.spectra[shapes[0]]
        err2 = sp.tail_at(ranks[0])
        if len(d) == 2:
            return err2
        kept = self.col_grams
        if len(d) == 3 and kept is not None and kept[0] == shapes:
            # Σ_{r < R_1} Z_rᵀ Z_r: the Gram of Z (R_1 d_2, d_3) from the nested level's Grams,
            # and from new ones for branches a given-up nested tree did not reach
            have = kept[1].shape[0]
            G = kept[1][: ranks[0]].sum(axis=0)
            if have < ranks[0]:
                Y = self.level1_Y(shapes[0], ranks[0], self.need[shapes[0]])
                X = self.B.reshape(
                    self._rest_tensor(shapes, Y[have : ranks[0]]), (ranks[0] - have, d[1], d[2])
                )
                G = G + self.grams(X).sum(axis=0)
            return err2 + float(self.eigvals(G[None])[0, ranks[1] :].sum())
        B = self.B
        X = self._rest_tensor(shapes, self.level1_Y(shapes[0], ranks[0], self.need[shapes[0]]))
        X = B.reshape(X, (1, ranks[0] * d[1], prod(d[2:])))
        for k in range(1, len(d) - 1):
            if k == len(d) - 2:  # the last step needs singular values only
                err2 += float(self.values2(X)[0, ranks[k] :].sum())
                break
            level = truncated_svd(B, X, ranks[k], self.svd, self.rng)
            err2 += float(level.rest2.sum())
            r = level.sig2.shape[1]
            X = B.reshape(level.Y, (1, r * d[k + 1], prod(d[k + 2 :])))
        return err2

    # -- lower bounds ----------------------------------------------------------------------
    def lower2(self, job: _Job, caps: Ranks, budget: int) -> float:
        """Certified lower bound on the squared error of any ranks of ``job`` within budget.

        Any structure of the job has rank <= R_1 in the unfolding ``(a1 | rest)`` and rank
        <= P (nested: R_1⋯R_{S-1}; chain: R_{S-1}) in ``(a1..a_{S-1} | a_S)``; Eckart-Young on
        both spectra, minimised over R_1 with the largest last rank the budget then allows.
        """
        d = job.d
        first = self.spectra[job.shapes[0]]
        last = self.spectra[job.prefix_last]
        R1 = np.arange(1, caps[0] + 1)
        rest = budget - R1 * d[0] - sum(d[1:-2])
        if job.form == "nested":
            # P = R_1⋯R_{S-1}: Σ_{k>=2} P_k d_k <= rest and P_k <= P, so P (d_{S-1} + d_S) <= rest;
            # and P is a multiple of R_1
            P = rest // (d[-2] + d[-1]) // R1 * R1
        else:
            # R_{S-1} (R_{S-2} d_{S-1} + d_S) <= rest, R_{S-2} >= 1 (= R_1 when S = 3)
            left = R1 if len(d) == 3 else 1
            P = rest // (left * d[-2] + d[-1])
        ok = P >= 1
        if not ok.any():
            return np.inf
        t1 = first.tails_at(R1[ok])
        t2 = last.tails_at(P[ok])
        return float(np.min(np.maximum(t1, t2)))


class _Progress:
    def __init__(self, total: int, enabled: bool | Callable[[int, int], Any] | None) -> None:
        self.total, self.done = total, 0
        self.callback = enabled if callable(enabled) else None
        show = enabled if isinstance(enabled, bool) else (enabled is None and sys.stderr.isatty())
        self.bar = None
        self.text = False
        self.last = 0.0
        if show and self.callback is None:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="sekron search", unit="cfg", file=sys.stderr)
            except ImportError:
                self.text = True

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.bar is not None:
            self.bar.update(n)
        elif self.text:
            now = time.monotonic()
            if now - self.last > 0.2 or self.done == self.total:
                self.last = now
                sys.stderr.write(f"\rsekron search: {self.done}/{self.total} configurations")
                sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.text:
            sys.stderr.write("\n")
            sys.stderr.flush()


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: Any) -> int:
    if threads is None:
        return available_cpus()
    if not is_int(threads) or int(threads) < 1:
        raise ValueError(f"threads must be an int >= 1 or None; got {threads!r}.")
    return int(threads)


@contextlib.contextmanager
def _workers(threads: int, backend: str) -> Iterator[ThreadPoolExecutor | None]:
    """For a numpy search: BLAS single-threaded, and ``threads`` worker threads if > 1.

    Many small factorizations run faster side by side than each on a multi-threaded BLAS,
    whose threads cost more than they save on small products and, on a busy machine, can make
    a search many times slower (measured: 26x). scikit-learn's KMeans limits BLAS the same way.
    The caller's BLAS setting is restored on exit.
    """
    if backend != "numpy":
        yield None
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if threads < 2:
            yield None
            return
        with ThreadPoolExecutor(threads) as pool:
            yield pool


def _run(
    tensor: Any, budgets: Sequence[int], *, threads: int = 1, **options: Any
) -> list[SearchResult]:
    """Search at several budgets at once (sharing every SVD); one SearchResult per budget.

    ``options`` are :func:`_run_with`'s; ``threads`` sets up its worker threads.
    """
    _, backend = check_tensor(tensor)
    with _workers(threads, backend) as pool:
        return _run_with(tensor, budgets, pool=pool, workers=threads, **options)


def _run_with(
    tensor: Any,
    budgets: Sequence[int],
    *,
    max_factors: int,
    forms: tuple[str, ...],
    max_configs: int | None,
    svd: str,
    random_state: Any,
    exhaustive: bool,
    progress: bool | Callable[[int, int], Any] | None,
    max_seconds: float | None = None,
    pool: ThreadPoolExecutor | None = None,
    workers: int = 1,
) -> list[SearchResult]:
    start = time.perf_counter()
    deadline = None if max_seconds is None else start + max_seconds
    t, backend = check_tensor(tensor)
    shape = tuple(int(s) for s in t.shape)
    top = max(budgets)

    # 1. enumerate configurations, filter by the smallest structure, cap by balance
    configs: list[Shapes] = []
    for S in range(2, max_factors + 1):
        configs.extend(c for c in enumerate_configs(shape, S) if _min_params(c) <= top)
    if not configs:
        every = (c for S in range(2, max_factors + 1) for c in enumerate_configs(shape, S))
        smallest = min((_min_params(c) for c in every), default=None)
        if smallest is None:
            raise ValueError(
                f"tensor of shape {shape} has no SeKron configuration with 2..{max_factors} "
                "factors: every mode size is prime or 1 and there is at most one mode > 1 to "
                "split. Give a tensor with a composite mode or more modes."
            )
        raise ValueError(
            f"the budget of {top:,} parameters is below the smallest SeKron structure of a tensor "
            f"of shape {shape} with 2..{max_factors} factors ({smallest:,} parameters at ranks 1)."
        )
    configs.sort(key=lambda c: (balance_score(c), len(c), c))
    if max_configs is not None:
        configs = configs[:max_configs]

    jobs: list[_Job] = []
    for c in configs:
        d = factor_sizes(c)
        job_forms = ("nested" if "nested" in forms else "chain",) if len(c) == 2 else forms
        for form in job_forms:
            capf = _nested_caps if form == "nested" else _chain_caps
            per_budget = tuple(capf(d, c, b) if _min_params(c) <= b else () for b in budgets)
            jobs.append(_Job(c, form, d, per_budget, _prefix(c, len(c) - 1)))

    eng = _Engine(t, backend, budgets, svd, check_random_state(random_state), pool, workers)
    eng.heads = {job.shapes[0] for job in jobs if len(job.d) > 2}

    # 2. the spectra every job needs: a1 (nested) and every prefix (chain, lower bounds)
    need = eng.need

    def want(a: tuple[int, ...], cap: int) -> None:
        need[a] = max(need.get(a, 0), cap)

    for job in jobs:
        for caps, b in zip(job.caps, budgets, strict=True):
            if not caps:
                continue
            S = len(job.d)
            want(job.shapes[0], caps[0])
            if job.form == "chain":
                for k in range(1, S - 1):
                    want(_prefix(job.shapes, k + 1), caps[k])
            elif S > 2:
                want(
                    _prefix(job.shapes, S - 1),
                    max(1, (b - sum(job.d[:-2])) // (job.d[-2] + job.d[-1])),
                )

    pbar = _Progress(len(jobs) + len(need), progress)
    evaluated: list[list[Candidate]] = [[] for _ in budgets]
    best2 = [np.inf for _ in budgets]
    n_pruned = [0 for _ in budgets]
    skipped2 = [np.inf for _ in budgets]  # lowest lower bound among unevaluated jobs
    interrupted = timed_out = False
    order: list[_Job] = []
    pos = -1  # index in ``order`` of the first job not yet evaluated; -1: deep phase not begun

    def record(job: _Job, bi: int, ranks: Ranks, err2: float) -> None:
        n = nested_params(job.d, ranks) if job.form == "nested" else chain_params(job.d, ranks)
        rel = _relative(err2, eng.norm2)
        evaluated[bi].append(Candidate(job.shapes, job.form, ranks, n, rel, t))
        best2[bi] = min(best2[bi], err2)

    try:
        todo = sorted(need, key=lambda a: (-prod(a), a))
        # each spectrum holds a rearranged copy of the tensor and its Gram: run at most as
        # many at once as fit in _SPECTRA_BYTES
        itemsize = numpy_dtype(t.dtype).itemsize
        at_once = max(1, min(eng.workers, _SPECTRA_BYTES // (2 * eng.numel * itemsize)))
        for i in range(0, len(todo), at_once):
            batch = todo[i : i + at_once]
            works = eng.map(lambda a: eng.spectrum_work(a, need[a]), batch)
            for a, work in zip(batch, works, strict=True):
                eng.store_spectrum(a, work)
                pbar.update()
        # 3. two-factor configurations: exact from the spectra alone
        deep = []
        for job in jobs:
            if len(job.d) > 2:
                deep.append(job)
                continue
            sp = eng.spectra[job.shapes[0]]
            for bi, caps in enumerate(job.caps):
                if not caps:
                    continue
                M = min(caps[0], sp.cap)
                E = sp.tail(M)
                P = _ranks.params_table(job.d, (M,), "nested")
                ranks = _ranks.select_from_tables(E, P, tol2=None, budget=budgets[bi])
                if ranks is not None:
                    record(job, bi, ranks, float(E[ranks[0] - 1]))
            pbar.update()
        # 4. deeper configurations, most promising first; skip those that cannot win
        for job in deep:
            job.lower2 = [
                eng.lower2(job, caps, b) if caps else np.inf
                for caps, b in zip(job.caps, budgets, strict=True)
            ]
        order = _deep_order(deep)
        for pos, job in enumerate(order):  # noqa: B007 (pos is read after the loop)
            if deadline is not None and time.perf_counter() > deadline:
                timed_out = True
                break
            live = [
                bi
                for bi, caps in enumerate(job.caps)
                if caps and (exhaustive or job.lower2[bi] < best2[bi] * (1 - 1e-12))
            ]
            for bi, caps in enumerate(job.caps):
                if caps and bi not in live:
                    n_pruned[bi] += 1
                    skipped2[bi] = min(skipped2[bi], job.lower2[bi])
            if live:
                gave_up = _evaluate_deep(
                    eng,
                    job,
                    [(bi, budgets[bi], job.caps[bi]) for bi in live],
                    record,
                    None if exhaustive else best2,
                )
                for bi, lb in gave_up.items():  # given up part-way: pruned by a tighter bound
                    n_pruned[bi] += 1
                    skipped2[bi] = min(skipped2[bi], lb)
            pbar.update()
        else:
            pos = len(order)
    except KeyboardInterrupt:
        interrupted = True
        if not any(evaluated):
            pbar.close()
            raise
    pbar.close()
    n_open = [0 for _ in budgets]  # unevaluated configurations that might still win
    if pos < 0:  # stopped before the deeper configurations were bounded
        skipped2 = [0.0 for _ in budgets]
        n_open = [
            sum(1 for j in jobs if j.caps[bi]) - len(evaluated[bi]) for bi in range(len(budgets))
        ]
    else:
        for job in order[pos:]:
            for bi, caps in enumerate(job.caps):
                if caps:
                    skipped2[bi] = min(skipped2[bi], job.lower2[bi])
                    n_open[bi] += job.lower2[bi] < best2[bi] * (1 - 1e-12)

    seconds = time.perf_counter() - start
    results = []
    for bi, b in enumerate(budgets):
        if not evaluated[bi]:
            raise ValueError(
                f"no configuration fits the budget of {b:,} parameters for shape {shape}."
            )
        results.append(
            SearchResult(
                pareto_front(evaluated[bi]),
                evaluated[bi],
                budget=b,
                tensor_shape=shape,
                n_configs=sum(1 for j in jobs if j.caps[bi]),
                n_pruned=n_pruned[bi],
                interrupted=interrupted,
                seconds=seconds,
                timed_out=timed_out,
                bound=_relative(skipped2[bi], eng.norm2),
                n_open=n_open[bi],
            )
        )
    return results


def _relative(err2: float, norm2: float) -> float:
    if not np.isfinite(err2):
        return float("inf")
    return 0.0 if norm2 == 0.0 else float(np.sqrt(max(err2, 0.0) / norm2))


def _partial_nested_bound2(
    tail1: np.ndarray, sv2: np.ndarray, d: Sequence[int], budget: int
) -> float:
    """Lower bound on the squared error of a nested 3-factor tree at any ranks within budget,
    from its level-1 tail and the first ``k = len(sv2)`` level-2 branches only.

    For R_1 <= k this is the exact error at the largest R_2 the budget allows (the error falls
    as R_2 grows); for R_1 > k the branches not yet computed are bounded by 0.
    """
    k, m = sv2.shape
    R1 = np.arange(1, tail1.shape[0] + 1)
    R2 = np.minimum(m, (budget - R1 * d[0]) // (R1 * (d[1] + d[2])))
    ok = R2 >= 1
    if not ok.any():
        return np.inf
    R1, R2 = R1[ok], R2[ok]
    # tails[r, j] = Σ_{i >= j} sv2[r, i]: branch r's squared error at rank j; C[q, j] sums
    # tails[r, j] over the first q branches
    tails = np.concatenate([np.cumsum(sv2[:, ::-1], axis=1)[:, ::-1], np.zeros((k, 1))], axis=1)
    C = np.concatenate([np.zeros((1, m + 1)), np.cumsum(tails, axis=0)])
    return float(np.min(tail1[R1 - 1] + C[np.minimum(R1, k), R2]))


def _evaluate_deep(
    eng: _Engine,
    job: _Job,
    live: list[tuple[int, int, Ranks]],
    record: Callable[[_Job, int, Ranks, float], None],
    best2: Sequence[float] | None = None,
) -> dict[int, float]:
    """Evaluate ``job`` at the live budgets; returns ``{budget index: lower bound}`` instead
    when, given ``best2`` (the best squared errors so far), a nested 3-factor tree was given up
    after some of its branches because none of its ranks could beat them."""
    if job.form == "nested":
        # one tree at the elementwise-largest caps serves every budget
        caps = tuple(max(c[k] for _, _, c in live) for k in range(len(job.d) - 1))
        bounds: dict[int, float] = {}

        def give_up(tail1: np.ndarray, sv2: np.ndarray) -> bool:
            assert best2 is not None
            for bi, b, _ in live:
                bounds[bi] = _partial_nested_bound2(tail1, sv2, job.d, b)
                if bounds[bi] < best2[bi] * (1 - 1e-12):
                    return False
            return True

        tree = eng.nested_tree(
            job.shapes, job.d, caps, give_up if best2 is not None and len(job.d) == 3 else None
        )
        if tree is None:
            return bounds
        for bi, b, _ in live:
            ranks = _choose_nested(tree, job.d, None, b)
            if ranks is not None:
                record(job, bi, ranks, _ranks.nested_error2(tree.sig2, tree.rest2, ranks))
        return {}
    for bi, b, caps in live:
        tails = [eng.spectra[_prefix(job.shapes, k + 1)].tail(caps[k]) for k in range(len(caps))]
        ranks = _choose_chain_budget(tails, job.d, b)
        if ranks is not None:
            record(job, bi, ranks, eng.chain_error2(job.shapes, job.d, ranks))
    return {}


# ----------------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------------
def search(
    tensor: Any,
    *,
    max_params: int | None = None,
    compression: float | None = None,
    max_factors: int = 3,
    forms: Sequence[str] = ("nested", "chain"),
    max_configs: int | None = None,
    exhaustive: bool = False,
    max_seconds: float | None = None,
    svd: str = "auto",
    random_state: Any = None,
    progress: bool | Callable[[int, int], Any] | None = None,
    threads: int | None = None,
) -> SearchResult:
    """Search factor shapes, form and ranks for the lowest SeKron error within a parameter budget.

    Parameters
    ----------
    tensor : array
        Any N-way numpy, torch or jax array (1-D works: its single mode is factorized).
    max_params : int, optional
        Parameter budget. Give exactly one of ``max_params`` and ``compression``.
    compression : float > 1, optional
        Budget as a ratio: ``max_params = floor(numel / compression)``.
    max_factors : int >= 2
        Configurations with 2..max_factors factors are considered.
    forms : sequence of {"nested", "chain"}
        Forms for S >= 3 (for S = 2 they coincide and one candidate is kept).
    max_configs : int, optional
        Keep only this many factor-shape configurations, the most balanced first (smallest
        variance of log factor size).
    exhaustive : bool
        Evaluate every configuration, even those whose certified lower bound cannot beat the best
        error found so far. The best candidate is the same either way; the front may then hold
        more candidates.
    max_seconds : float > 0, optional
        Stop evaluating configurations with S >= 3 after this much wall time (the shared
        level-1 spectra and every 2-factor configuration are always computed; they are exact
        from the spectra alone). Configurations are evaluated most promising first, so a
        stopped search returns the best found so far, with ``result.timed_out`` set and a
        certificate: ``result.bound`` is a certified lower bound on the error of every
        configuration left unevaluated, ``result.certified`` says whether the best is the
        best overall, and ``result.n_open`` counts the unevaluated configurations whose bound
        leaves them a chance to beat it.
    svd : {"auto", "exact", "gram", "randomized"}
        SVD kernel (see :func:`sekron.decompose`). ``"auto"`` uses the Gram kernel for the
        shared level-1 spectra.
    random_state : None, int or numpy Generator
        Seed for ``svd="randomized"``.
    progress : bool or callable, optional
        A progress bar on stderr (tqdm if installed, else a text line). ``None`` shows it only when
        stderr is a terminal; ``False`` disables it; a callable receives ``(done, total)``.
    threads : int >= 1, optional
        Threads for numpy input (default: the CPUs available). The many small factorizations
        are spread over this many worker threads, each with a single-threaded BLAS: for the
        duration of the call BLAS is limited to one thread (threadpoolctl; the caller's setting
        is restored). torch and jax inputs run in the calling thread with their own threading.

    Returns
    -------
    SearchResult
        The Pareto front of parameters vs error, lowest error first; ``.best``, ``.all``.

    Raises
    ------
    TypeError
        Unsupported array or argument kinds.
    ValueError
        Neither or both of ``max_params``/``compression``, ``compression <= 1``, a budget below
        the smallest structure, ``max_factors < 2``, or a tensor with no configuration at all.
    KeyboardInterrupt
        Only when interrupted before any candidate was evaluated. Otherwise Ctrl-C returns what
        was found so far, with ``result.interrupted = True``.

    Notes
    -----
    For each configuration, ranks are chosen from one SVD tree capped at the budget: nested by the
    exact error table of every rank tuple, chain by the certified bound ``Σ_k ε_k²`` (as in
    :func:`sekron.decompose`); each candidate's ``rel_error`` is then the exact error of the
    structure ``decompose(tensor, shapes, rank=ranks, form=form)`` returns, computed from singular
    values. S = 2 is globally optimal per configuration (Eckart-Young); for S >= 3 it is the
    paper's recursive SVD, not a joint optimum.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.search import search
    >>> W = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    >>> res = search(W, compression=4, progress=False)
    >>> res.best.n_params <= W.size // 4
    True
    >>> st = res.best.to_sekron()
    >>> abs(st.rel_error - res.best.rel_error) < 1e-8
    True
    """
    if not is_int(max_factors) or int(max_factors) < 2:
        raise ValueError(f"max_factors must be an int >= 2; got {max_factors!r}.")
    form_t = _check_forms(forms)
    if max_configs is not None:
        max_configs = check_positive_int(max_configs, "max_configs")
    if svd not in METHODS:
        raise ValueError(f"svd must be one of {METHODS}; got {svd!r}.")
    max_seconds = check_max_seconds(max_seconds)
    n_threads = check_threads(threads)
    t, _ = check_tensor(tensor)
    budget = _check_budget(max_params, compression, prod(t.shape))
    return _run(
        tensor,
        [budget],
        max_factors=int(max_factors),
        forms=form_t,
        max_configs=max_configs,
        svd=svd,
        random_state=random_state,
        exhaustive=bool(exhaustive),
        progress=progress,
        max_seconds=max_seconds,
        threads=n_threads,
    )[0]
