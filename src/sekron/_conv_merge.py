"""Partial reconstruction: merge adjacent Kronecker factors before convolving (conv docs).

A SeKron kernel of S factors is also one of S' < S factors: merging factors k and k + 1 into
their Kronecker product (summed over, or fused with, the rank that links them) gives the same
kernel. The groupings of the factors into consecutive runs (``2^(S-1) - 1`` of them besides
the full kernel) span a plan space from the fully factorized plan (every run of length 1) to
the dense conv (one run), so a layer can run the cheapest one. The signatures are pure
functions of tuples of ints; :func:`merge_factors` does the array work with any backend's
``einsum`` (torch or jax), so this module imports neither.

Merging factors k and k + 1 (0-based, S factors, ranks ``R_1..R_{S-1}``):

- nested, k + 1 < S - 1: ``M[r_1..r_k, (r_{k+1}, r_{k+2})] = A_k[..r_{k+1}] ⊗ A_{k+1}[..r_{k+2}]``;
  the two ranks fuse into one of size ``R_{k+1} R_{k+2}`` in every later factor;
- nested, k + 1 = S - 1 (the last two): ``M[r_1..r_{S-2}] = Σ_r A_{S-2}[.., r] ⊗ A_{S-1}[.., r]``;
- chain: ``M[a, b] = Σ_r A_k[a, r] ⊗ A_{k+1}[r, b]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import product
from math import prod
from typing import Any

from ._typing import Ranks, Shapes

__all__ = ["groupings", "merge_factors", "merged_signature"]

Grouping = tuple[int, ...]  # lengths of consecutive runs of factors, summing to S


@lru_cache(maxsize=64)
def groupings(n_factors: int) -> tuple[Grouping, ...]:
    """Every grouping of ``n_factors`` factors into at least two consecutive runs, the fully
    factorized one ``(1, .., 1)`` first.

    >>> groupings(3)
    ((1, 1, 1), (1, 2), (2, 1))
    """
    out = []
    for cuts in product((True, False), repeat=n_factors - 1):
        sizes, run = [], 1
        for cut in cuts:
            if cut:
                sizes.append(run)
                run = 1
            else:
                run += 1
        sizes.append(run)
        if len(sizes) > 1:
            out.append(tuple(sizes))
    return tuple(out)


def _pairs(grouping: Grouping) -> list[int]:
    """The pair merges (left index, in the current numbering) that realize ``grouping``:
    runs from the right, each merged from its left end."""
    starts = [sum(grouping[:i]) for i in range(len(grouping))]
    return [s for s, n in reversed(list(zip(starts, grouping, strict=True))) for _ in range(n - 1)]


def _merge_ranks(ranks: Ranks, form: str, k: int) -> Ranks:
    n_factors = len(ranks) + 1
    if form == "chain" or k + 1 == n_factors - 1:
        return ranks[:k] + ranks[k + 1 :]
    return (*ranks[:k], ranks[k] * ranks[k + 1], *ranks[k + 2 :])


@lru_cache(maxsize=1024)
def merged_signature(
    shapes: Shapes, ranks: Ranks, form: str, grouping: Grouping
) -> tuple[Shapes, Ranks]:
    """The (shapes, ranks) of the kernel with its factors merged by ``grouping``.

    >>> merged_signature(((4, 4, 3, 1), (4, 4, 1, 3), (8, 8, 1, 1)), (2, 2), "nested", (1, 2))
    (((4, 4, 3, 1), (32, 32, 1, 3)), (2,))
    >>> merged_signature(((4, 4, 3, 1), (4, 4, 1, 3), (8, 8, 1, 1)), (2, 2), "nested", (2, 1))
    (((16, 16, 3, 3), (8, 8, 1, 1)), (4,))
    """
    shapes_l, ranks_t = list(shapes), tuple(ranks)
    for k in _pairs(grouping):
        ranks_t = _merge_ranks(ranks_t, form, k)
        merged = tuple(a * b for a, b in zip(shapes_l[k], shapes_l[k + 1], strict=True))
        shapes_l[k : k + 2] = [merged]
    return tuple(shapes_l), ranks_t


def _kron_eq(lead_a: str, lead_b: str, lead_out: str, n_modes: int) -> str:
    """einsum equation of a Kronecker product over the last ``n_modes`` modes."""
    a, b = "ABCDEFGH"[:n_modes], "IJKLMNOP"[:n_modes]
    out = "".join(x + y for x, y in zip(a, b, strict=True))
    return f"{lead_a}{a},{lead_b}{b}->{lead_out}{out}"


def _merge_pair(
    factors: list[Any], shapes: Shapes, ranks: Ranks, form: str, k: int, einsum: Callable
) -> list[Any]:
    n_factors, n_modes = len(factors), len(shapes[0])
    merged_shape = tuple(a * b for a, b in zip(shapes[k], shapes[k + 1], strict=True))
    if form == "chain":
        m = einsum(_kron_eq("ax", "xb", "ab", n_modes), factors[k], factors[k + 1])
        m = m.reshape(*m.shape[:2], *merged_shape)
        return [*factors[:k], m, *factors[k + 2 :]]
    if k + 1 == n_factors - 1:  # the last two: sum over the rank they share
        m = einsum(_kron_eq("...x", "...x", "...", n_modes), factors[k], factors[k + 1])
        m = m.reshape(*m.shape[:k], *merged_shape)
        return [*factors[:k], m]
    m = einsum(_kron_eq("...x", "...xy", "...xy", n_modes), factors[k], factors[k + 1])
    m = m.reshape(*m.shape[:k], ranks[k] * ranks[k + 1], *merged_shape)
    later = [
        f.reshape(*f.shape[:k], ranks[k] * ranks[k + 1], *f.shape[k + 2 :])
        for f in factors[k + 2 :]
    ]
    return [*factors[:k], m, *later]


def merge_factors(
    factors: Sequence[Any],
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    grouping: Grouping,
    einsum: Callable,
) -> list[Any]:
    """The factors of the kernel merged by ``grouping`` (see :func:`merged_signature`),
    computed with ``einsum`` (``torch.einsum`` or ``jax.numpy.einsum``): differentiable."""
    out, shapes_t, ranks_t = list(factors), tuple(shapes), tuple(ranks)
    for k in _pairs(grouping):
        out = _merge_pair(out, shapes_t, ranks_t, form, k, einsum)
        shapes_t, ranks_t = merged_signature(
            shapes_t, ranks_t, form, (1,) * k + (2,) + (1,) * (len(shapes_t) - k - 2)
        )
    return out


def merged_params(shapes: Shapes, ranks: Ranks, form: str) -> int:
    """Elements of the factors of a signature (the size of the merged factors to build)."""
    n = len(shapes)
    if form == "chain":
        r = (1, *ranks, 1)
        return sum(r[k] * r[k + 1] * prod(s) for k, s in enumerate(shapes))
    return sum(prod(ranks[: min(k + 1, n - 1)]) * prod(s) for k, s in enumerate(shapes))
