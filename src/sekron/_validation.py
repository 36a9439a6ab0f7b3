"""Checks at the public boundary. Each error names the argument, what was expected and what came.

Internal code trusts its inputs: validate once, here.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from ._backend import backend_name_of
from ._plan import Ranks, Shapes, factor_sizes

FORMS = ("nested", "chain")


def _type_name(x: object) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


def check_positive_int(x: object, name: str) -> int:
    if not is_int(x):
        raise TypeError(f"{name} must be a positive int; got {x!r} of type {_type_name(x)}.")
    if int(x) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be a positive int; got {x!r}.")
    return int(x)  # type: ignore[call-overload]


def check_form(form: object) -> str:
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"form must be 'nested' or 'chain'; got {form!r}.")
    return form


def array_dtype_kind(x: Any) -> str:
    """'f' for float32/64, 'c' complex, 'i' integer or bool, 'h' half precision, '?' other."""
    name = str(x.dtype).rsplit(".", 1)[-1]
    if name in ("float32", "float64"):
        return "f"
    if name.startswith("complex"):
        return "c"
    if name in ("float16", "bfloat16"):
        return "h"
    if name == "bool" or name.startswith(("int", "uint")):
        return "i"
    return "?"


def check_array(x: object, name: str) -> str:
    """The TensorLy backend name of ``x``; TypeError unless it is a plain numpy, torch or jax
    array. numpy subclasses are refused: a masked array's mask or a matrix's 2-d rules would be
    dropped silently by the linear algebra."""
    backend = backend_name_of(x)
    if backend is None:
        raise TypeError(
            f"{name} must be a numpy.ndarray, torch.Tensor or jax.Array; got {_type_name(x)}."
        )
    if backend == "numpy" and type(x) is not np.ndarray:
        raise TypeError(
            f"{name} must be a plain numpy.ndarray; got the subclass {_type_name(x)} "
            "(for a masked array, fill or drop the masked entries and pass .data)."
        )
    return backend


def check_array_group(arrays: Sequence[Any], item: Any, group: str) -> str:
    """The one backend of a group of arrays that must share their kind and dtype.

    ``item(i)`` names array i in messages (``"factors[2]"``), ``group`` the group.
    """
    names = []
    for i, a in enumerate(arrays):
        name = backend_name_of(a)
        if name is None:
            raise TypeError(
                f"{item(i)} must be a numpy.ndarray, torch.Tensor or jax.Array; "
                f"got {_type_name(a)}."
            )
        names.append(name)
    if len(set(names)) > 1:
        raise TypeError(f"{group} must all be of one kind; got {names}.")
    dtypes = [str(a.dtype) for a in arrays]
    if len(set(dtypes)) > 1:
        raise TypeError(f"{group} must share one dtype; got {dtypes}.")
    return names[0]


def check_number(
    x: object,
    name: str,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> float:
    """A finite real number (not a bool) within the given bounds, as a float.

    Python ints too large for a float (``10**400``) raise ValueError, not OverflowError.
    """
    rule = " and ".join(
        f"{op} {b:g}" for op, b in ((">", above), (">=", at_least), ("<", below)) if b is not None
    )
    want = f"a finite number {rule}".rstrip()
    if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be {want}; got {x!r} of type {_type_name(x)}.")
    try:
        v = float(x)
    except (OverflowError, ValueError):
        raise ValueError(
            f"{name} must be {want}; got an int of {len(str(x))} digits, too large for a float."
        ) from None
    ok = np.isfinite(v)
    ok = ok and (above is None or v > above) and (at_least is None or v >= at_least)
    ok = ok and (below is None or v < below)
    if not ok:
        raise ValueError(f"{name} must be {want}; got {x!r}.")
    return v


def check_int(x: object, name: str, *, at_least: int = 1) -> int:
    """An int (not a bool) >= ``at_least``."""
    if not is_int(x):
        raise TypeError(f"{name} must be an int >= {at_least}; got {x!r} of type {_type_name(x)}.")
    if int(x) < at_least:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an int >= {at_least}; got {x!r}.")
    return int(x)  # type: ignore[call-overload]


def check_bool(x: object, name: str) -> bool:
    """A bool (numpy's too); strings such as ``"no"`` are refused, never read as True."""
    if not isinstance(x, bool | np.bool_):
        raise TypeError(f"{name} must be True or False; got {x!r} of type {_type_name(x)}.")
    return bool(x)


def check_choice(x: object, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (the members of an option's ``Literal`` type)."""
    if not isinstance(x, str) or x not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {x!r}.")
    return x


def check_compression(compression: object, name: str = "compression") -> float:
    """A compression ratio: dense size / parameters, a finite number > 1."""
    return check_number(compression, name, above=1.0)


def budget_from_compression(compression: float, numel: int) -> int:
    """The parameter budget ``floor(numel / compression)``, at least 1 (checked values)."""
    return max(1, int(numel / compression))


INT_MAX = 2**31 - 1  # sizes torch and numpy index with 32-bit ints


def check_ints(
    x: object, name: str, n: int, *, at_least: int, at_most: int = INT_MAX
) -> tuple[int, ...]:
    """An int (repeated ``n`` times) or a sequence of ``n`` ints, each within the bounds.

    Bools are refused (``True`` is not a stride). Used for conv ``stride``/``padding``/
    ``dilation``; the common cases (an int, a tuple of ints) take a fast path.
    """
    if type(x) is int and at_least <= x <= at_most:
        return (x,) * n
    if (
        type(x) is tuple
        and len(x) == n
        and all(type(v) is int and at_least <= v <= at_most for v in x)
    ):
        return x
    items: Sequence[Any] = x if isinstance(x, tuple | list) else (x,) * n
    want = f"an int or a tuple of {n} ints" if n > 1 else "an int"
    if len(items) != n or not all(is_int(v) for v in items):
        raise TypeError(f"{name} must be {want}; got {x!r}.")
    out = tuple(int(v) for v in items)
    if not all(at_least <= v <= at_most for v in out):
        raise ValueError(f"{name} must be >= {at_least} and <= {at_most} in every dim; got {x!r}.")
    return out


def check_tensor(tensor: object, name: str = "tensor") -> tuple[Any, str]:
    """Validate an input array; return it as floating point, with its TensorLy backend name.

    Integers are cast to floating point (float64 for numpy, the library default otherwise).
    """
    backend = check_array(tensor, name)
    t: Any = tensor
    kind = array_dtype_kind(t)
    if kind == "c":
        raise TypeError(
            f"{name} has complex dtype {t.dtype}; sekron decomposes real tensors only. "
            "Decompose the real and imaginary parts separately."
        )
    if kind in ("h", "?"):
        raise TypeError(
            f"{name} has dtype {t.dtype}; sekron supports float32 and float64 "
            "(and integers, which are cast). Cast it first, e.g. to float32."
        )
    if kind == "i":
        if backend == "numpy":
            t = t.astype(np.float64)
        elif backend == "pytorch":
            import torch

            t = t.to(torch.get_default_dtype())
        else:
            import jax.numpy as jnp

            t = t.astype(jnp.result_type(float))
    if backend == "pytorch":
        t = t.detach()
    if t.ndim == 0:
        raise ValueError(f"{name} must have at least one mode; got a 0-d array.")
    if prod(t.shape) == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(t.shape)}); every mode must have size >= 1."
        )
    finite = _all_finite(t, backend)
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf; decompose needs finite values.")
    return t, backend


def _all_finite(t: Any, backend: str) -> bool:
    if backend == "numpy":
        return bool(np.isfinite(t).all())
    if backend == "pytorch":
        return bool(t.isfinite().all())
    import jax.numpy as jnp

    return bool(jnp.isfinite(t).all())


def check_shapes(shapes: object, tensor_shape: tuple[int, ...] | None) -> Shapes:
    """``shapes``: S >= 2 tuples of positive ints, one size per tensor mode, multiplying out."""
    if isinstance(shapes, str | bytes) or not isinstance(shapes, Sequence):
        raise TypeError(
            "shapes must be a sequence of S >= 2 tuples of ints (one per factor); "
            f"got {_type_name(shapes)}."
        )
    if len(shapes) < 2:
        raise ValueError(f"shapes must hold at least 2 factor shapes (S >= 2); got {len(shapes)}.")
    out = []
    n_modes = None if tensor_shape is None else len(tensor_shape)
    for k, s in enumerate(shapes):
        if isinstance(s, str | bytes) or not isinstance(s, Sequence):
            raise TypeError(f"shapes[{k}] must be a tuple of ints; got {_type_name(s)}.")
        if n_modes is None:
            n_modes = len(s)
        if len(s) != n_modes:
            what = "the tensor has" if tensor_shape is not None else "shapes[0] has"
            raise ValueError(
                f"shapes[{k}] has {len(s)} modes but {what} {n_modes}; "
                "give one size per tensor mode."
            )
        for n, size in enumerate(s):
            if not is_int(size):
                raise TypeError(
                    f"shapes[{k}][{n}] must be a positive int; got {size!r} of type "
                    f"{_type_name(size)}."
                )
            if int(size) < 1:
                raise ValueError(f"shapes[{k}][{n}] must be a positive int; got {size!r}.")
        out.append(tuple(int(v) for v in s))
    if n_modes == 0:
        raise ValueError("shapes[0] is empty; each factor shape needs one size per tensor mode.")
    if tensor_shape is not None:
        for n in range(len(tensor_shape)):
            p = prod(s[n] for s in out)
            if p != tensor_shape[n]:
                raise ValueError(
                    f"mode {n}: prod(s[{n}] for s in shapes) == {p} but tensor.shape[{n}] == "
                    f"{tensor_shape[n]}."
                )
    return tuple(out)


def check_rank(rank: object, n_levels: int, name: str = "rank") -> Ranks | None:
    """None, an int for every level, or a sequence of one positive int per level (S - 1)."""
    if rank is None:
        return None
    if is_int(rank):
        return (check_positive_int(rank, name),) * n_levels
    if isinstance(rank, str | bytes) or not isinstance(rank, Sequence):
        raise TypeError(
            f"{name} must be an int or a sequence of {n_levels} ints (one per level); "
            f"got {_type_name(rank)}."
        )
    if len(rank) != n_levels:
        raise ValueError(
            f"{name} has {len(rank)} entries but there are {n_levels} levels "
            f"(S - 1 for S = {n_levels + 1} factors); got {tuple(rank)!r}."
        )
    return tuple(check_positive_int(r, f"{name}[{i}]") for i, r in enumerate(rank))


def check_tol(tol: object) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float in (0, 1); got {_type_name(tol)}.")
    try:
        t = float(tol)
    except OverflowError:  # an int too large for a float: outside (0, 1) all the same
        t = float("inf")
    if not 0.0 < t < 1.0:
        raise ValueError(f"tol must be in the open interval (0, 1); got {tol!r}.")
    return t


def check_max_params(max_params: object, shapes: Shapes) -> int:
    budget = check_positive_int(max_params, "max_params")
    smallest = sum(factor_sizes(shapes))
    if budget < smallest:
        raise ValueError(
            f"max_params={budget} is too small for any structure with these shapes: "
            f"ranks of 1 already need {smallest} parameters (the sum of the factor sizes)."
        )
    return budget


# ----------------------------------------------------------------------------------------------
# search options (shared by search and compare)
# ----------------------------------------------------------------------------------------------
def check_forms(forms: object) -> tuple[str, ...]:
    """A form or a non-empty sequence of forms, without repeats, in the order given."""
    if isinstance(forms, str):
        forms = (forms,)
    if not isinstance(forms, Sequence) or not forms:
        raise ValueError(f"forms must be a non-empty sequence of 'nested'/'chain'; got {forms!r}.")
    return tuple(dict.fromkeys(check_form(f) for f in forms))


def check_max_seconds(max_seconds: object) -> float | None:
    """None (no time limit) or a finite number of seconds > 0."""
    return None if max_seconds is None else check_number(max_seconds, "max_seconds", above=0.0)


def check_threads(threads: object) -> int:
    """An int >= 1; None means every CPU this process may run on."""
    if threads is None:
        import os

        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    return check_int(threads, "threads", at_least=1)


def check_progress(progress: object) -> Any:
    """None (a bar when stderr is a terminal), a bool, or a ``(done, total)`` callable."""
    if progress is None or isinstance(progress, bool | np.bool_):
        return None if progress is None else bool(progress)
    if not callable(progress):
        raise TypeError(
            "progress must be None, True, False or a callable taking (done, total); "
            f"got {progress!r} of type {_type_name(progress)}."
        )
    return progress
