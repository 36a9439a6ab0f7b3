"""Random SeKron tensors, for tests, benchmarks and planted-recovery experiments."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from ._backend import get_backend
from ._plan import factor_array_shapes
from ._validation import check_form, check_rank, check_shapes
from .tensor import SeKronTensor

__all__ = ["random_sekron", "check_random_state"]

_BACKENDS = ("numpy", "pytorch", "jax")


def check_random_state(random_state: Any) -> np.random.Generator:
    """A numpy Generator from None, an int, a Generator or a legacy RandomState."""
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        "random_state must be None, an int, a numpy.random.Generator or RandomState; "
        f"got {type(random_state).__name__}."
    )


def random_sekron(
    shapes: Sequence[Sequence[int]],
    rank: int | Sequence[int],
    *,
    form: str = "nested",
    random_state: Any = None,
    backend: str = "numpy",
    dtype: str = "float64",
    device: Any = None,
) -> SeKronTensor:
    """A SeKronTensor with standard-normal factors, scaled so entries of Ŵ are O(1).

    Parameters
    ----------
    shapes : sequence of S >= 2 tuples of ints
        Factor shapes, one size per tensor mode.
    rank : int or sequence of S - 1 ints
        Ranks (not capped: a random tensor may be given any ranks).
    form : {"nested", "chain"}
    random_state : None, int, numpy Generator or RandomState
        Seed; the global RNG is never used.
    backend : {"numpy", "pytorch", "jax"}
        Kind of the factor arrays. The caller's active TensorLy backend is not consulted or changed.
    dtype : {"float64", "float32"}
    device : optional
        Torch device for ``backend="pytorch"``.

    Returns
    -------
    SeKronTensor

    Examples
    --------
    >>> from sekron import random_sekron
    >>> random_sekron([(4, 4, 3, 1), (4, 4, 1, 3), (4, 4, 1, 1)], [3, 2], random_state=0)
    nested SeKronTensor of shape (64, 64, 3, 3): 3 factors, ranks (3, 2), 528 params
    """
    form = check_form(form)
    checked = check_shapes(shapes, None)
    ranks = check_rank(rank, len(checked) - 1)
    assert ranks is not None
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}; got {backend!r}.")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")
    rng = check_random_state(random_state)
    B = get_backend(backend)
    arrays = []
    n_terms = prod(ranks)
    for k, s in enumerate(factor_array_shapes(checked, ranks, form)):
        data = rng.standard_normal(s)
        if k == 0:  # one overall scale so that sums over the rank terms stay O(1)
            data /= np.sqrt(n_terms)
        context: dict[str, Any] = {"dtype": getattr(B, dtype)}
        if backend == "pytorch" and device is not None:
            context["device"] = device
        arrays.append(B.tensor(data, **context))
    return SeKronTensor(arrays, form)
