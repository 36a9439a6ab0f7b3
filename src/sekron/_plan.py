"""Backend-free plans: shape arithmetic, permutations and einsum equations.

Everything here is a pure function of tuples of ints, cached with ``functools.lru_cache``.
Arrays are only touched by the callers, in their execute step.

Notation (theory docs): ``shapes`` holds S tuples of length N; ``d[k] = prod(shapes[k])`` is the
size of factor k once flattened, i.e. the k-th dimension of the rearranged tensor R(W).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import prod
from typing import Any

import opt_einsum

from ._typing import Ranks, Shapes


@lru_cache(maxsize=1024)
def tensor_shape(shapes: Shapes) -> tuple[int, ...]:
    """Mode sizes ``w_n = prod_k shapes[k][n]`` of the tensor the factors describe."""
    n_modes = len(shapes[0])
    return tuple(prod(s[n] for s in shapes) for n in range(n_modes))


@lru_cache(maxsize=1024)
def factor_sizes(shapes: Shapes) -> tuple[int, ...]:
    """``d_k = |a^(k)|``: the dimensions of the rearranged S-way tensor R(W)."""
    return tuple(prod(s) for s in shapes)


def _drop_unit_axes(
    split: tuple[int, ...], perm: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Remove size-1 axes from a (split, perm) pair: a smaller transpose, the same result."""
    keep = [i for i, size in enumerate(split) if size != 1]
    new_index = {old: new for new, old in enumerate(keep)}
    return tuple(split[i] for i in keep), tuple(new_index[p] for p in perm if p in new_index)


@lru_cache(maxsize=1024)
def rearrange_plan(shapes: Shapes) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(split shape, permutation, output shape) taking W to R(W).

    W is reshaped so that mode n becomes the digits (a^(1)_n .. a^(S)_n), factor 1 slowest;
    the digits of each factor are then brought together, factor 1 first.
    """
    n_factors, n_modes = len(shapes), len(shapes[0])
    split = tuple(shapes[k][n] for n in range(n_modes) for k in range(n_factors))
    perm = tuple(n * n_factors + k for k in range(n_factors) for n in range(n_modes))
    return (*_drop_unit_axes(split, perm), factor_sizes(shapes))


@lru_cache(maxsize=1024)
def unrearrange_plan(shapes: Shapes) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(split shape, permutation, output shape) taking R(W) back to W."""
    n_factors, n_modes = len(shapes), len(shapes[0])
    split = tuple(shapes[k][n] for k in range(n_factors) for n in range(n_modes))
    perm = tuple(k * n_modes + n for n in range(n_modes) for k in range(n_factors))
    return (*_drop_unit_axes(split, perm), tensor_shape(shapes))


def is_identity(perm: tuple[int, ...]) -> bool:
    return perm == tuple(range(len(perm)))


@lru_cache(maxsize=1024)
def nested_full_ranks(shapes: Shapes) -> Ranks:
    """``R_k = min(d_k, prod_{l>k} d_l)``: the ranks at which the nested form is exact."""
    d = factor_sizes(shapes)
    return tuple(min(d[k], prod(d[k + 1 :])) for k in range(len(d) - 1))


@lru_cache(maxsize=1024)
def chain_full_ranks(shapes: Shapes) -> Ranks:
    """``R_k = min(prod_{l<=k} d_l, prod_{l>k} d_l)``: ranks of the unfoldings of R(W)."""
    d = factor_sizes(shapes)
    return tuple(min(prod(d[: k + 1]), prod(d[k + 1 :])) for k in range(len(d) - 1))


def full_ranks(shapes: Shapes, form: str) -> Ranks:
    return nested_full_ranks(shapes) if form == "nested" else chain_full_ranks(shapes)


@lru_cache(maxsize=4096)
def factor_array_shapes(shapes: Shapes, ranks: Ranks, form: str) -> tuple[tuple[int, ...], ...]:
    """The array shape of every factor (theory docs layouts)."""
    n_factors = len(shapes)
    if form == "nested":
        return tuple(
            ranks[: min(k + 1, n_factors - 1)] + tuple(shapes[k]) for k in range(n_factors)
        )
    bounds = (1, *ranks, 1)
    return tuple((bounds[k], bounds[k + 1], *shapes[k]) for k in range(n_factors))


def nested_params(d: Sequence[int], ranks: Sequence[int]) -> int:
    """``Σ_{k<S} P_k d_k + P_{S-1} d_S`` with ``P_k = R_1⋯R_k`` (factor sizes ``d``)."""
    total, P = 0, 1
    for k, r in enumerate(ranks):
        P *= r
        total += P * d[k]
    return total + P * d[-1]


def chain_params(d: Sequence[int], ranks: Sequence[int]) -> int:
    """``Σ_k R_{k-1} R_k d_k`` with ``R_0 = R_S = 1`` (factor sizes ``d``)."""
    b = (1, *ranks, 1)
    return sum(b[k] * b[k + 1] * d[k] for k in range(len(d)))


def n_params(shapes: Shapes, ranks: Ranks, form: str) -> int:
    """Number of stored numbers: the sum of the factors' sizes."""
    count = nested_params if form == "nested" else chain_params
    return count(factor_sizes(shapes), ranks)


@lru_cache(maxsize=256)
def reconstruction_equation(n_factors: int, form: str) -> str:
    """einsum equation building R(W) from factors flattened to ``(*rank dims, d_k)``."""
    sym = opt_einsum.get_symbol
    modes = [sym(n_factors + 1 + k) for k in range(n_factors)]
    if form == "nested":
        ranks = [sym(k) for k in range(n_factors - 1)]
        terms = ["".join(ranks[: min(k + 1, n_factors - 1)]) + modes[k] for k in range(n_factors)]
    else:
        ranks = [sym(k) for k in range(n_factors + 1)]
        terms = [ranks[k] + ranks[k + 1] + modes[k] for k in range(n_factors)]
    return ",".join(terms) + "->" + "".join(modes)


@lru_cache(maxsize=1024)
def contraction(equation: str, *shapes: tuple[int, ...]) -> Any:
    """A cached ``opt_einsum.contract_expression``: planned once, executed many times."""
    return opt_einsum.contract_expression(equation, *shapes, optimize="auto")


@lru_cache(maxsize=256)
def als_equations(n_factors: int, form: str, k: int) -> tuple[str, str, str]:
    """einsum equations of one ALS update of factor ``k`` (factors flattened to
    ``(*rank dims, d_k)``): ``(reconstruction, right-hand side, Gram)``.

    The right-hand side contracts T with every other factor, the Gram contracts every other
    factor with itself; both leave factor k's rank dims (then their primed copies, or d_k).
    """
    sym = opt_einsum.get_symbol
    n_rank = n_factors - 1 if form == "nested" else n_factors + 1
    rank = [sym(i) for i in range(n_rank)]
    prime = [sym(n_rank + i) for i in range(n_rank)]
    mode = [sym(2 * n_rank + i) for i in range(n_factors)]
    if form == "nested":
        own = [list(range(min(j + 1, n_factors - 1))) for j in range(n_factors)]
    else:
        own = [[j, j + 1] for j in range(n_factors)]
    rank_l = ["".join(rank[i] for i in o) for o in own]
    prime_l = ["".join(prime[i] for i in o) for o in own]
    modes = "".join(mode)
    rec = ",".join(r + m for r, m in zip(rank_l, mode, strict=True)) + "->" + modes
    others = [i for i in range(n_factors) if i != k]
    present = set(modes + "".join(rank_l[i] for i in others))
    out_rank = "".join(c for c in rank_l[k] if c in present)
    out_prime = "".join(prime_l[k][rank_l[k].index(c)] for c in out_rank)
    rhs = f"{modes},{','.join(rank_l[i] + mode[i] for i in others)}->{out_rank}{mode[k]}"
    gram = (
        ",".join(rank_l[i] + mode[i] + "," + prime_l[i] + mode[i] for i in others)
        + "->"
        + out_rank
        + out_prime
    )
    return rec, rhs, gram
