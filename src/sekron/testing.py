"""Test helpers for sekron and for libraries built on it: one tolerance rule, one comparison,
and hypothesis strategies for shapes that factor into Kronecker products.

The strategies need ``hypothesis`` (``pip install sekron[test]``); the rest needs only numpy.
"""

from __future__ import annotations

from math import prod
from typing import Any, NamedTuple

import numpy as np

from ._backend import numpy_dtype, to_numpy
from ._plan import Ranks, Shapes, full_ranks, tensor_shape

__all__ = [
    "ConvCase",
    "KronShapes",
    "Problem",
    "assert_close",
    "conv_cases",
    "kron_shapes",
    "ranks_for",
    "rel_error",
    "sekron_problems",
    "tolerance",
]


def tolerance(dtype: Any, *, exact: bool = False) -> float:
    """The one tolerance of the test-suite: ``4 * sqrt(eps)`` of ``dtype``.

    About 6e-8 for float64 and 1.4e-3 for float32: for approximations (decompositions,
    fits, errors computed two ways). Accepts numpy, torch and jax dtypes.

    ``exact=True`` gives its square, ``16 * eps`` (3.6e-15 for float64, 1.9e-6 for float32):
    for computations that equal their reference up to the order of the floating-point
    operations, such as a factorized convolution against ``F.conv2d`` on the rebuilt kernel.
    """
    tol = 4.0 * float(np.sqrt(np.finfo(numpy_dtype(dtype)).eps))
    return tol * tol if exact else tol


def rel_error(actual: Any, expected: Any) -> float:
    """``||actual - expected|| / ||expected||`` in float64 (0 when both are zero)."""
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: {a.shape} != {e.shape}")
    den = float(np.linalg.norm(e))
    num = float(np.linalg.norm(a - e))
    return num if den == 0.0 else num / den


def assert_close(actual: Any, expected: Any, *, rtol: float | None = None) -> None:
    """Assert a relative Frobenius error within ``rtol`` (default: :func:`tolerance`)."""
    tol = tolerance(getattr(actual, "dtype", np.float64)) if rtol is None else rtol
    err = rel_error(actual, expected)
    if not err <= tol:
        raise AssertionError(f"relative error {err:.3e} exceeds {tol:.3e}")


class KronShapes(NamedTuple):
    """A tensor shape and S factor shapes that multiply out to it, mode by mode."""

    tensor_shape: tuple[int, ...]
    shapes: Shapes


class Problem(NamedTuple):
    """A drawn decomposition problem: shapes, a form, ranks within full rank and a tensor."""

    shapes: Shapes
    form: str
    ranks: Ranks
    tensor: np.ndarray


def kron_shapes(
    *,
    min_factors: int = 2,
    max_factors: int = 3,
    min_modes: int = 1,
    max_modes: int = 3,
    max_side: int = 3,
) -> Any:
    """Strategy for :class:`KronShapes`; shrinks towards 2 factors, 1 mode and sides of 1."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> KronShapes:
        n_factors = draw_(st.integers(min_factors, max_factors))
        n_modes = draw_(st.integers(min_modes, max_modes))
        side = st.integers(1, max_side)
        shapes = tuple(tuple(draw_(side) for _ in range(n_modes)) for _ in range(n_factors))
        return KronShapes(tensor_shape(shapes), shapes)

    return draw()


def ranks_for(shapes: Shapes, form: str, *, max_rank: int | None = None) -> Any:
    """Strategy for rank tuples between 1 and the full ranks of ``shapes`` in ``form``."""
    from hypothesis import strategies as st

    full = full_ranks(shapes, form)
    tops = [f if max_rank is None else min(f, max_rank) for f in full]
    return st.tuples(*(st.integers(1, t) for t in tops))


def sekron_problems(
    *,
    forms: tuple[str, ...] = ("nested", "chain"),
    max_factors: int = 3,
    max_modes: int = 3,
    max_side: int = 3,
    max_size: int = 4096,
) -> Any:
    """Strategy for :class:`Problem` with a standard-normal float64 tensor (seeded draw)."""
    from hypothesis import assume
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> Problem:
        ks = draw_(kron_shapes(max_factors=max_factors, max_modes=max_modes, max_side=max_side))
        assume(prod(ks.tensor_shape) <= max_size)
        form = draw_(st.sampled_from(forms))
        ranks = draw_(ranks_for(ks.shapes, form))
        seed = draw_(st.integers(0, 2**32 - 1))
        tensor = np.random.default_rng(seed).standard_normal(ks.tensor_shape)
        return Problem(ks.shapes, form, ranks, tensor)

    return draw()


class ConvCase(NamedTuple):
    """A drawn convolution: a SeKron kernel signature (factor shapes ``(f, c, *window)``, form,
    ranks, seed) and arguments that fit it; ``in_shape`` is ``(N, C, *spatial)`` or, unbatched,
    ``(C, *spatial)``."""

    shapes: Shapes
    form: str
    ranks: Ranks
    seed: int
    stride: tuple[int, ...]
    padding: int | tuple[int, ...] | str
    dilation: tuple[int, ...]
    in_shape: tuple[int, ...]


def conv_cases(*, n_spatial: int = 2, max_factors: int = 4, max_side: int = 3) -> Any:
    """Strategy for :class:`ConvCase` (S = 2..``max_factors``, either form, ranks 1..3,
    strides 1..3, dilations 1..2, padding an int, a tuple, ``"same"`` (stride 1) or
    ``"valid"``, spatial sizes that fit the dilated kernel, batch None, 1 or 2); shared by
    the torch and jax convolution tests."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw_: Any) -> ConvCase:
        ks = draw_(
            kron_shapes(
                min_factors=2, max_factors=max_factors, min_modes=4, max_modes=4, max_side=max_side
            )
        )
        shapes = ks.shapes if n_spatial == 2 else tuple(s[:3] for s in ks.shapes)
        form = draw_(st.sampled_from(("nested", "chain")))
        ranks = tuple(draw_(st.integers(1, 3)) for _ in range(len(shapes) - 1))
        seed = draw_(st.integers(0, 2**31 - 1))
        window = tensor_shape(shapes)[2:]
        stride = tuple(draw_(st.integers(1, 3)) for _ in window)
        dilation = tuple(draw_(st.integers(1, 2)) for _ in window)
        kind = draw_(st.sampled_from(("int", "tuple", "same", "valid")))
        padding: int | tuple[int, ...] | str = kind
        if kind == "int":
            padding = draw_(st.integers(0, 2))
        elif kind == "tuple":
            padding = tuple(draw_(st.integers(0, 2)) for _ in window)
        elif kind == "same":
            stride = (1,) * n_spatial
        size = tuple(
            (k - 1) * d + 1 + draw_(st.integers(0, 4))
            for k, d in zip(window, dilation, strict=True)
        )
        batch = draw_(st.sampled_from((None, 1, 2)))
        channels = tensor_shape(shapes)[1]
        in_shape = (channels, *size) if batch is None else (batch, channels, *size)
        return ConvCase(shapes, form, ranks, seed, stride, padding, dilation, in_shape)

    return draw()
