"""Factor-shape configurations: pure functions of tuples of ints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import product
from math import log, prod

from .._plan import factor_sizes
from .._typing import Shape, Shapes

__all__ = ["balance_score", "enumerate_configs", "max_factors_of", "min_params", "prefix"]


@lru_cache(maxsize=4096)
def _n_prime_factors(n: int) -> int:
    """Ω(n): the prime factors of n counted with multiplicity (0 for n = 1)."""
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n //= p
            count += 1
        p += 1
    return count + (n > 1)


def max_factors_of(shape: Sequence[int]) -> int:
    """The most factors a configuration of ``shape`` can have: every factor needs a size >= 2,
    so at most Ω(w_1) + .. + Ω(w_N), the prime factors of all the mode sizes."""
    return sum(_n_prime_factors(int(w)) for w in shape)


@lru_cache(maxsize=4096)
def _factor_shapes(shape: Shape) -> tuple[Shape, ...]:
    """Every shape dividing ``shape`` mode by mode, not all ones, in lexicographic order."""
    per_mode = [[v for v in range(1, w + 1) if w % v == 0] for w in shape]
    return tuple(s for s in product(*per_mode) if any(v > 1 for v in s))


def _configs(shape: Shape, parts: int) -> Iterator[Shapes]:
    """Configurations of ``parts`` factors of ``shape``; every branch of the recursion yields
    (a remainder keeps at least one prime factor per factor still to come)."""
    if parts == 1:
        yield (shape,)
        return
    for a in _factor_shapes(shape):
        rest = tuple(w // v for w, v in zip(shape, a, strict=True))
        if max_factors_of(rest) >= parts - 1:
            for tail in _configs(rest, parts - 1):
                yield (a, *tail)


def enumerate_configs(tensor_shape: Sequence[int], n_factors: int) -> Iterator[Shapes]:
    """Every factor-shape configuration with ``n_factors`` factors, none of them all ones.

    Mode n of size w_n is split into an ordered factorization ``w_n = a^(1)_n ⋯ a^(S)_n``. A
    factor of all ones would make it a configuration with fewer factors, so every factor has
    a size >= 2 and there are none beyond :func:`max_factors_of` factors; only the
    configurations yielded are ever built. Yielded in lexicographic order.

    Examples
    --------
    >>> from sekron.search import enumerate_configs
    >>> list(enumerate_configs((4, 3), 2))
    [((1, 3), (4, 1)), ((2, 1), (2, 3)), ((2, 3), (2, 1)), ((4, 1), (1, 3))]
    >>> list(enumerate_configs((4, 3), 4))
    []
    """
    shape = tuple(int(w) for w in tensor_shape)
    if max_factors_of(shape) >= n_factors >= 1:
        yield from _configs(shape, n_factors)


def balance_score(shapes: Shapes) -> float:
    """Variance of ``log |a^(k)|`` over the factors: 0 for perfectly balanced factor sizes."""
    logs = [log(d) for d in factor_sizes(shapes)]
    mean = sum(logs) / len(logs)
    return sum((v - mean) ** 2 for v in logs) / len(logs)


def min_params(shapes: Shapes) -> int:
    """Parameters of the smallest structure (ranks 1): the sum of the factor sizes."""
    return sum(factor_sizes(shapes))


def prefix(shapes: Shapes, k: int) -> tuple[int, ...]:
    """Elementwise product of the first k factor shapes: the first factor of an unfolding."""
    return tuple(prod(s[n] for s in shapes[:k]) for n in range(len(shapes[0])))
