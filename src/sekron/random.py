"""Random SeKron tensors, for tests, benchmarks and planted-recovery experiments."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, cast

import numpy as np

from ._backend import get_backend
from ._plan import factor_array_shapes, n_params
from ._typing import Backend, Form
from ._validation import _type_name, check_choice, check_form, check_rank, check_shapes, is_int
from .tensor import SeKronTensor

__all__ = ["check_random_state", "random_sekron"]

_BACKENDS = ("numpy", "pytorch", "jax")
#: The most parameters random_sekron allocates (16 GiB of float64): a rank typed with a few
#: zeros too many is refused with a ValueError instead of a MemoryError deep inside numpy.
MAX_PARAMS = 1 << 31


def check_random_state(random_state: Any) -> np.random.Generator:
    """A numpy Generator from None, an int >= 0, a Generator or a legacy RandomState."""
    if is_int(random_state):
        if int(random_state) < 0:
            raise ValueError(f"random_state must be an int >= 0 (a seed); got {random_state!r}.")
        return np.random.default_rng(int(random_state))
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        "random_state must be None, an int, a numpy.random.Generator or RandomState; "
        f"got {_type_name(random_state)}."
    )


def random_sekron(
    shapes: Sequence[Sequence[int]],
    rank: int | Sequence[int],
    *,
    form: Form = "nested",
    random_state: Any = None,
    backend: Backend = "numpy",
    dtype: str = "float64",
    device: Any = None,
) -> SeKronTensor:
    """A SeKronTensor with standard-normal factors, scaled so entries of Ŵ are O(1).

    Parameters
    ----------
    shapes : sequence of S >= 2 tuples of ints
        Factor shapes, one size per tensor mode.
    rank : int or sequence of S - 1 ints
        Ranks (not capped: a random tensor may be given any ranks), for at most
        :data:`MAX_PARAMS` (2**31) parameters in all.
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

    Raises
    ------
    TypeError
        Arguments of the wrong kind.
    ValueError
        Bad shapes, ranks, form, backend or dtype, or more than 2**31 parameters.

    Examples
    --------
    >>> from sekron import random_sekron
    >>> random_sekron([(4, 4, 3, 1), (4, 4, 1, 3), (4, 4, 1, 1)], [3, 2], random_state=0)
    nested SeKronTensor of shape (64, 64, 3, 3): 3 factors, ranks (3, 2), 528 params
    """
    form = cast(Form, check_form(form))
    checked = check_shapes(shapes, None)
    ranks = check_rank(rank, len(checked) - 1)
    assert ranks is not None
    check_choice(backend, "backend", _BACKENDS)
    check_choice(dtype, "dtype", ("float32", "float64"))
    size = n_params(checked, ranks, form)
    if size > MAX_PARAMS:
        raise ValueError(
            f"shapes and rank={rank!r} give {size:,} parameters; random_sekron makes at most "
            f"{MAX_PARAMS:,} (2**31)."
        )
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
