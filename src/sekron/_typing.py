"""Type aliases shared across sekron: shape tuples and the ``Literal`` choices of its options.

One definition per alias (opt_einsum keeps its options in one ``typing.py`` the same way).
"""

from __future__ import annotations

from typing import Literal

Shape = tuple[int, ...]
Shapes = tuple[tuple[int, ...], ...]
Ranks = tuple[int, ...]
Pair = tuple[int, int]
Pad4 = tuple[int, int, int, int]  # (top, bottom, left, right)

Form = Literal["nested", "chain"]
SVDMethod = Literal["auto", "exact", "gram", "randomized"]
ConvMethod = Literal["auto", "factorized", "reconstructed"]
Backend = Literal["numpy", "pytorch", "jax"]
Allocation = Literal["uniform", "global"]  # compress: one budget per layer, or for the model

__all__ = [
    "Allocation",
    "Backend",
    "ConvMethod",
    "Form",
    "Pad4",
    "Pair",
    "Ranks",
    "SVDMethod",
    "Shape",
    "Shapes",
]
