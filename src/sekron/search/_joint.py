"""The joint-fit stage of the structure search: a shortlist of warm starts refined by ALS.

The greedy search ranks structures by the error of one pass of SVDs. For S >= 3 that error can
be far above what a joint fit of the same structure reaches, so this stage refines a shortlist
and ranks it by the refined error. The shortlist holds:

1. ``greedy``: the ``top`` best greedy candidates, at their greedy ranks;
2. ``split``: for the ``top`` best configurations with S >= 3, lopsided rank splits (one level
   at the largest rank the budget allows, the others at 1) and, for S = 3, a geometric ladder
   of first ranks with the largest second rank that fits. Ranks above a level's SVD rank are
   allowed: the SVD result is grown with terms that start at zero (:func:`sekron.refine`);
3. ``cp`` / ``tt`` / ``tucker2``: the classical families' own fits, embedded at an *equal*
   parameter count (CP nested (R, 1, .., 1); TT and Tucker-2 in chain form, Tucker-2 as the
   chain (F)(H, W)(C) whose middle factor is the core), with one factor per tensor mode where
   the family has one. These are the structures with as many factors as the tensor has modes;
4. ``cp-grouped``: the CP fit with its modes grouped (for a conv weight (F)(C)(H W): rank-R
   sums whose spatial factors are full matrices, not outer products), its rank cut to fit the
   budget. Each grouping of the modes into two or more groups is tried.

Every start holds at most ``budget`` parameters. All starts get a few sweeps; the best
``keep`` get the rest of ``sweeps`` (successive halving). ALS never increases a start's error,
so the stage's best is at most the error of every start, the families' included.

What it can miss: a configuration outside the greedy top whose greedy error is poor but whose
refined error is best, and rank splits between the ones listed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import permutations
from math import prod
from typing import Any, NamedTuple

import numpy as np

from .._backend import (
    backend_name_of,
    get_backend,
    max_abs,
    pow2_scale,
    scale_by,
    spread_pow2,
    sq_norm,
    to_numpy,
)
from .._embeddings import tucker2_chain
from .._plan import full_ranks, n_params
from .._typing import Form, Ranks, Shapes
from ..decomposition import decompose
from ..refinement import _with_ranks, refine
from ..tensor import SeKronTensor
from ._macs import conv_macs
from ._parallel import Workers, workers

__all__ = [
    "Refined",
    "Start",
    "family_starts",
    "grouped_cp_starts",
    "joint_stage",
    "refine_starts",
    "shortlist",
]

FIRST_SWEEPS = 5
#: Starts whose ALS would solve a normal-equation system larger than this are not refined.
MAX_GRAM = 1024


class Start(NamedTuple):
    """A warm start of the joint-fit stage."""

    st: SeKronTensor
    source: str  # "greedy", "split", "cp", "tt", "tucker2", "cp-grouped", "warm-start"
    greedy_error: float | None = None


class Refined(NamedTuple):
    """A refined structure: the fit, where it started and its greedy error (if it had one)."""

    st: SeKronTensor
    source: str
    greedy_error: float | None


def _params(shapes: Shapes, form: str, ranks: Sequence[int]) -> int:
    return n_params(shapes, tuple(ranks), form)


def _largest(shapes: Shapes, form: str, ranks: list[int], level: int, budget: int) -> int:
    """The largest rank at ``level`` (others as given) within the budget; 0 if none fits."""
    ranks = list(ranks)
    ranks[level] = 1
    if _params(shapes, form, ranks) > budget:
        return 0
    lo, hi = 1, 2
    while True:
        ranks[level] = hi
        if _params(shapes, form, ranks) > budget:
            break
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        ranks[level] = mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _params(shapes, form, ranks) <= budget else (lo, mid)
    return lo


def rank_splits(shapes: Shapes, form: str, budget: int) -> list[Ranks]:
    """Lopsided rank tuples within the budget, and for S = 3 a ladder of first ranks."""
    levels = len(shapes) - 1
    out: dict[Ranks, None] = {}
    for level in range(levels):
        base = [1] * levels
        r = _largest(shapes, form, base, level, budget)
        if r:
            base[level] = r
            out[tuple(base)] = None
    if levels == 2:
        r1 = 2
        while True:
            r2 = _largest(shapes, form, [r1, 1], 1, budget)
            if r2 <= 1:  # (r1, 1) and larger r1 are below the lopsided (R, 1) split
                break
            out[(r1, r2)] = None
            r1 *= 2
    return list(out)


def _start_at(tensor: Any, shapes: Shapes, form: Form, ranks: Ranks, seed: int) -> SeKronTensor:
    """The greedy SVD fit at ``ranks`` (capped at full rank), grown to ``ranks`` with terms
    that start at zero (the same tensor; the first sweep of the stage puts them to use)."""
    capped = tuple(min(r, f) for r, f in zip(ranks, full_ranks(shapes, form), strict=True))
    st = decompose(tensor, shapes, rank=capped, form=form)
    if st.ranks == tuple(ranks):
        return st
    grown = _with_ranks(list(st.factors), st, tuple(ranks), np.random.default_rng(seed))
    return SeKronTensor(grown, st.form, rel_error=st.rel_error)


def shortlist(
    tensor: Any,
    greedy: Sequence[Any],
    budget: int,
    *,
    top: int = 8,
    split_top: int = 4,
    random_state: int = 0,
    pool: Workers | None = None,
) -> list[Start]:
    """Warm starts from the greedy candidates (``shapes``, ``form``, ``ranks``, ``rel_error``):
    the ``top`` best at their ranks, and rank splits of the ``split_top`` best configurations
    of each number of factors S >= 3 (so a larger ``max_factors`` adds starts without pushing
    out the 3-factor ones). The starts are fitted on ``pool``'s worker threads when given, in
    the same order and with the same values."""
    ranked = sorted(greedy, key=lambda c: (c.rel_error, c.n_params))
    jobs: list[tuple[Shapes, Form, Ranks, str, float | None]] = [
        (c.shapes, c.form, tuple(c.ranks), "greedy", c.rel_error) for c in ranked[:top]
    ]
    seen: dict[int, set[tuple[Shapes, str]]] = {}
    for c in ranked:
        configs = seen.setdefault(len(c.shapes), set())
        if len(c.shapes) < 3 or len(configs) >= split_top or (c.shapes, c.form) in configs:
            continue
        configs.add((c.shapes, c.form))
        for ranks in rank_splits(c.shapes, c.form, budget):
            if ranks != tuple(c.ranks):
                jobs.append((c.shapes, c.form, ranks, "split", None))

    def fit(job: tuple[Shapes, Form, Ranks, str, float | None]) -> Start:
        shapes, form, ranks, source, error = job
        if source == "greedy":
            return Start(decompose(tensor, shapes, rank=ranks, form=form), source, error)
        return Start(_start_at(tensor, shapes, form, ranks, random_state), source)

    return list((pool or Workers()).map(fit, jobs))


def family_starts(
    tensor: Any,
    budget: int,
    *,
    random_state: int = 0,
    pool: Workers | None = None,
    deadline: float | None = None,
) -> dict[str, SeKronTensor]:
    """CP, TT and Tucker-2 fits within the budget, embedded at their own parameter counts
    (fitted on ``pool``'s worker threads when given).

    A family that cannot meet the budget, or does not apply to the tensor's modes, is left out.
    With ``deadline`` (a ``time.perf_counter()`` value) the iterative fits (CP-ALS, Tucker-2's
    HOOI) stop iterating when it passes (after one sweep at least): a CP fit of rank 573 to a
    512x512x3x3 weight at 4x took over 240 s otherwise. Past it, no family is fitted.
    """
    from .. import structures

    if deadline is not None and time.perf_counter() > deadline:
        return {}

    def fit(name: str) -> SeKronTensor | None:
        seconds = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
        try:
            st = (
                structures.get_structure(name)
                .fit_result(
                    tensor, max_params=budget, random_state=random_state, max_seconds=seconds
                )
                .embedding
            )
        except ValueError:
            return None
        if name == "tucker2":
            st = tucker2_chain(st)
        return st if st.n_params <= budget else None

    names = ("cp", "tt", "tucker2")
    fits = (pool or Workers()).map(fit, names)
    return {name: st for name, st in zip(names, fits, strict=True) if st is not None}


def grouped_cp_starts(cp: SeKronTensor, budget: int) -> list[Start]:
    """The CP fit ``cp`` (nested, one mode per factor, ranks (R, 1, .., 1)) with its modes
    grouped: for every partition of the modes into 2 .. N-1 groups, a nested (R', 1, .., 1)
    structure over the groups, R' <= R the largest rank within the budget, started from the
    R' CP terms of largest norm (its tensor is then exactly that truncation of the CP fit)."""
    B = get_backend(cp.backend)
    sizes = cp.shape
    n = len(sizes)
    vecs = [B.reshape(f, (cp.ranks[0], -1)) for f in cp.factors]
    order = _terms_by_norm(cp)
    starts = []
    for groups in _partitions(list(range(n))):
        if not 2 <= len(groups) < n:
            continue
        r = min(cp.ranks[0], budget // sum(prod(sizes[m] for m in g) for g in groups))
        if r < 1:
            continue
        keep = np.asarray(order[:r], dtype=np.int64)  # indexes numpy, torch and jax alike
        factors = []
        for j, g in enumerate(groups):
            block = vecs[g[0]][keep]
            for m in g[1:]:
                block = B.reshape(block[:, :, None] * vecs[m][keep][:, None, :], (r, -1))
            lead = (r,) + (1,) * min(j, len(groups) - 2)
            shape = tuple(sizes[m] if m in g else 1 for m in range(n))
            factors.append(B.reshape(block, (*lead, *shape)))
        starts.append(Start(SeKronTensor(factors, "nested"), "cp-grouped"))
    return starts


def _partitions(items: list[int]) -> list[list[list[int]]]:
    """Every partition of ``items`` into non-empty groups, each group in increasing order."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for p in _partitions(rest):
        out.append([[first], *p])
        for i in range(len(p)):
            out.append([*p[:i], [first, *p[i]], *p[i + 1 :]])
    return out


def refine_starts(
    tensor: Any,
    starts: Sequence[Start],
    *,
    sweeps: int,
    keep: int = 6,
    deadline: float | None = None,
    pool: Workers | None = None,
) -> list[Refined]:
    """Successive halving: every start gets ``FIRST_SWEEPS`` sweeps, the best ``keep`` the rest.

    Returns the refined starts, lowest refined error first (ties in start order). Past
    ``deadline`` (a ``time.perf_counter()`` value) no further start is refined: the ones not
    reached stay candidates as they are (their error measured), so the result is never worse
    than any start, however early the stage is stopped (:func:`sekron.compare` relies on it:
    the families' fits it passes as warm starts bound the searched error). The starts are
    refined on ``pool``'s worker threads when given; each start's result does not depend on
    them.
    """
    pool = pool or Workers()
    first = min(FIRST_SWEEPS, sweeps)
    fixed, todo = [], []
    for i, s in enumerate(starts):
        if len(s.st.shapes) == 2 or _largest_gram(s.st) > MAX_GRAM:
            # S = 2 is optimal already (Eckart-Young); a huge normal-equation system is not
            # worth its cost: such a start stays a candidate as it is
            fixed.append((i, Refined(_measured(tensor, s.st), s.source, s.greedy_error)))
        else:
            todo.append((i, s))

    def step(item: tuple[int, Any], n: int) -> tuple[int, Refined] | None:
        i, s = item
        if deadline is not None and time.perf_counter() > deadline:
            return None
        return i, Refined(refine(tensor, s.st, sweeps=n), s.source, s.greedy_error)

    def as_is(item: tuple[int, Start]) -> tuple[int, Refined]:
        i, s = item
        return i, Refined(_measured(tensor, s.st), s.source, s.greedy_error)

    def order(items: list[tuple[int, Refined]]) -> list[tuple[int, Refined]]:
        return sorted(items, key=lambda x: (x[1].st.rel_error, x[1].st.n_params, x[0]))

    firsts = list(pool.map(lambda x: step(x, first), todo))
    done = order([r if r is not None else as_is(x) for r, x in zip(firsts, todo, strict=True)])
    if sweeps > first:
        more = [r for r in pool.map(lambda x: step(x, sweeps - first), done[:keep])]
        done = [m or d for m, d in zip(more, done, strict=False)] + done[keep:]
    return [r for _, r in order(done + fixed)]


def _measured(tensor: Any, st: SeKronTensor) -> SeKronTensor:
    """``st`` with its relative error measured against ``tensor`` (scale-safe), if unknown."""
    if st.rel_error is not None:
        return st
    s = pow2_scale(tensor)
    scaled = scale_by(tensor, s)
    # s goes into the factors before the product (terms of st may exceed the dtype's range
    # where they cancel: a CP fit near float32's largest value): into the largest one, or
    # spread over all where that one cannot hold it (s > 1 for a tiny tensor)
    tops = [max_abs(f) for f in st.factors]
    factors = spread_pow2(list(st.factors), int(np.frexp(s)[1]) - 1, tops.index(max(tops)))
    approx = SeKronTensor._trusted(
        factors, st.form, st.shapes, st.ranks, backend=st.backend
    ).to_tensor()
    den = float(sq_norm(scaled))
    num = float(sq_norm(scaled - approx))
    return st.with_rel_error(0.0 if den == 0.0 else float(np.sqrt(num / den)))


def _largest_gram(st: SeKronTensor) -> int:
    """The side of the largest normal-equation system an ALS sweep of ``st`` solves."""
    S, R = st.n_factors, st.ranks
    if st.form == "nested":
        return max(prod(R[: min(k + 1, S - 1)]) for k in range(S))
    bounds = (1, *R, 1)
    return max(bounds[k] * bounds[k + 1] for k in range(S))


def joint_stage(
    tensor: Any,
    greedy: Sequence[Any],
    budget: int,
    *,
    sweeps: int,
    warm_starts: Sequence[SeKronTensor] | None,
    random_state: int,
    deadline: float | None,
    threads: int = 1,
    max_macs: int | None = None,
) -> list[Refined]:
    """The whole second stage: the shortlist of the greedy candidates, the families' fits (or
    the caller's ``warm_starts``), the grouped CP fit, refined by :func:`refine_starts`; with
    ``max_macs`` (per output position, a 4-way tensor), only the starts within it."""
    # all of it under the search's BLAS limit: outside it, a loaded machine made the starts'
    # SVDs and CP-ALS up to 25x slower (OpenBLAS threads competing with the worker threads)
    with workers(threads, backend_name_of(tensor) or "numpy") as pool:
        starts = shortlist(tensor, greedy, budget, random_state=random_state, pool=pool)
        if warm_starts is None:
            family = family_starts(
                tensor, budget, random_state=random_state, pool=pool, deadline=deadline
            )
            starts += [Start(st, name) for name, st in family.items()]
            cp = family.get("cp")
        else:
            starts += [Start(st, "warm-start") for st in warm_starts]
            cp = next((st for st in warm_starts if _is_cp(st)), None)
        if cp is not None:
            starts += grouped_cp_starts(cp, budget)
            # the CP fit in the factor order its conv plan costs least, truncated to the MAC
            # budget (its largest terms) where the budget binds
            cheap = cheapest_cp(cp, max_macs) if max_macs is not None else cp
            if cheap is not None and cheap is not cp:
                starts.append(Start(cheap, "cp" if warm_starts is None else "warm-start"))
        if max_macs is not None:
            starts = [
                s for s in starts if conv_macs(s.st.shapes, s.st.ranks, s.st.form) <= max_macs
            ]
        return refine_starts(tensor, starts, sweeps=sweeps, deadline=deadline, pool=pool)


def _terms_by_norm(cp: SeKronTensor) -> Any:
    """The indexes of a CP embedding's terms, largest norm first (by the sum of the log norms
    of its factors: their product overflows for entries near the float range's ends)."""
    vecs = [to_numpy(f).reshape(cp.ranks[0], -1) for f in cp.factors]
    with np.errstate(divide="ignore"):  # a zero term: log 0 = -inf, last
        logs = np.sum([np.log(np.linalg.norm(v, axis=1)) for v in vecs], axis=0)
    return np.argsort(-logs, kind="stable")


def cheapest_cp(cp: SeKronTensor, max_macs: int | None = None) -> SeKronTensor | None:
    """A CP embedding (:func:`_is_cp`) of a 4-way conv weight in the factor order whose conv
    plan costs the fewest MACs (``cp`` itself when its own order does): the same tensor and
    parameters, since each term is an outer product of its factors, in any order. The order
    (F)(kh)(kw)(C) costs ``R (F + kh + kw + C)`` per output position, CP's own plan, where
    (F)(C)(kh)(kw) runs both spatial stages over all C channels.

    With ``max_macs``, above which that plan costs: the R' terms of largest norm, R' the
    largest rank within it (None when not even one term fits)."""
    n, rank = len(cp.shapes), cp.ranks[0]
    order = min(
        permutations(range(n)),
        key=lambda p: (conv_macs(tuple(cp.shapes[k] for k in p), cp.ranks, "nested"), p),
    )
    shapes = tuple(cp.shapes[k] for k in order)
    ones = (1,) * (n - 1)
    keep = rank if max_macs is None else min(rank, max_macs // conv_macs(shapes, ones, "nested"))
    if keep < 1:
        return None
    if order == tuple(range(n)) and keep == rank:
        return cp
    terms: Any = slice(None)  # every term, or the largest ones
    if keep < rank:
        terms = np.sort(np.asarray(_terms_by_norm(cp)[:keep], dtype=np.int64))
    factors = [
        cp.factors[k][terms].reshape((keep,) + (1,) * (min(pos + 1, n - 1) - 1) + cp.shapes[k])
        for pos, k in enumerate(order)
    ]
    return SeKronTensor(factors, "nested", rel_error=None if keep < rank else cp.rel_error)


def _is_cp(st: SeKronTensor) -> bool:
    """Nested, one mode per factor, ranks (R, 1, .., 1): a CP embedding."""
    one_mode = all(sum(1 for v in s if v > 1) <= 1 for s in st.shapes)
    return (
        st.form == "nested"
        and len(st.shapes) == len(st.shape)
        and one_mode
        and all(r == 1 for r in st.ranks[1:])
    )
