"""Backend dispatch by the *input's* type, through TensorLy's backend objects.

sekron never calls ``tl.set_backend`` or ``tl.backend_context``: those write TensorLy's global
(or thread) state. Instead it loads the TensorLy ``Backend`` object that matches the array it was
given and calls that object's methods. The caller's active backend is untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
from tensorly.backend import BackendManager

__all__ = [
    "backend_name_of",
    "eps",
    "get_backend",
    "is_array",
    "like",
    "max_abs",
    "numpy_dtype",
    "pow2_scale",
    "pow2_shifts",
    "scale_by",
    "spread_pow2",
    "sq_norm",
    "times_pow2",
    "to_numpy",
    "unscaled",
]


@cache
def get_backend(name: str) -> Any:
    """The TensorLy ``Backend`` object called ``name``, loaded without activating it.

    Importing TensorLy's jax backend module switches ``jax_enable_x64`` on for the whole
    process (other threads see float64 arrays appear), so for jax the backend class is built
    from that module's source without that one statement (see :func:`_jax_backend`).
    """
    if name != "jax":
        return BackendManager.load_backend(name)
    return _jax_backend()


#: The statement of TensorLy's jax backend module that writes the process-wide x64 flag.
_X64_LINE = 'jax.config.update("jax_enable_x64", True)'


def _jax_backend() -> Any:
    """TensorLy's ``JaxBackend``, built without touching ``jax_enable_x64`` or the registry.

    When TensorLy has already imported its jax backend, its class is used as is. Otherwise the
    module's source runs in a private namespace with the x64 statement removed; the class it
    defines registers itself under a private name, which is taken out of TensorLy's registry
    again, so a later ``tl.set_backend("jax")`` imports TensorLy's own module as usual.
    """
    import importlib.util

    from tensorly.backend.core import Backend

    registry = Backend._available_backends
    if "jax" in registry:
        return registry["jax"]()
    spec = importlib.util.find_spec("tensorly.backend.jax_backend")
    loader: Any = None if spec is None else spec.loader
    source = None if loader is None else loader.get_source("tensorly.backend.jax_backend")
    if spec is None or source is None:
        raise ImportError("TensorLy's jax backend module was not found; pip install tensorly")
    private = "_sekron_jax"
    source = source.replace(_X64_LINE, "pass").replace(
        'backend_name="jax"', f'backend_name="{private}"'
    )
    namespace: dict[str, Any] = {"__name__": spec.name, "__package__": "tensorly.backend"}
    try:
        exec(compile(source, str(spec.origin), "exec"), namespace)
    finally:
        cls = registry.pop(private, None)
    if cls is None:
        raise ImportError("TensorLy's jax backend module defines no backend class")
    cls.backend_name = "jax"
    return cls()


def _is_torch(x: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x: object) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def backend_name_of(x: object) -> str | None:
    """TensorLy backend name for an array, or None when ``x`` is not a supported array."""
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_torch(x):
        return "pytorch"
    if _is_jax(x):
        return "jax"
    return None


def is_array(x: object) -> bool:
    return backend_name_of(x) is not None


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy or view of ``x`` (detached from any autograd graph)."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def like(data: Any, ref: Any) -> Any:
    """``data`` (numpy) as an array of ``ref``'s kind, dtype and device."""
    name = backend_name_of(ref)
    if name == "numpy":
        return np.asarray(data, dtype=ref.dtype)
    if name == "pytorch":
        import torch

        return torch.as_tensor(np.ascontiguousarray(data), dtype=ref.dtype, device=ref.device)
    import jax.numpy as jnp

    return jnp.asarray(data, dtype=ref.dtype)


def sq_norm(x: Any, batch: bool = False) -> np.ndarray:
    """Squared Frobenius norm (per leading index if ``batch``) in float64, without a temporary
    array of x's size."""
    name = backend_name_of(x)
    if name == "pytorch":
        import torch

        dims = tuple(range(1, x.ndim)) if batch else None
        return np.asarray(to_numpy(torch.linalg.vector_norm(x, dim=dims)), np.float64) ** 2
    if name == "jax":
        import jax.numpy as jnp

        flat = jnp.reshape(x, (x.shape[0], -1)) if batch else jnp.reshape(x, (1, -1))
        out = np.asarray(jnp.einsum("pi,pi->p", flat, flat), np.float64)
        return out if batch else out[0]
    flat = x.reshape(x.shape[0], -1) if batch else x.reshape(1, -1)
    out = np.einsum("pi,pi->p", flat, flat).astype(np.float64)
    return out if batch else out[0]


def pow2_scale(x: Any) -> float:
    """A power of two ``s`` with ``max|s·x|`` in [0.5, 1) (1.0 for an all-zero array).

    Relative errors do not depend on scale, but squares of entries near 1e±160 (float64) or
    1e±19 (float32) overflow or underflow. Multiplying by ``s`` is exact in floating point,
    so callers normalize once at the boundary, work on ``s·x`` and divide ``s`` out of one
    factor at the end.
    """
    m = max_abs(x)
    if m == 0.0 or not np.isfinite(m):
        return 1.0
    return float(np.ldexp(1.0, -int(np.frexp(m)[1])))


def max_abs(x: Any) -> float:
    """``max |x|`` as a Python float (0.0 for an empty array)."""
    name = backend_name_of(x)
    if name == "pytorch":
        return float(x.detach().abs().max()) if x.numel() else 0.0
    if name == "jax":
        import jax.numpy as jnp

        return float(jnp.max(jnp.abs(x))) if x.size else 0.0
    return float(np.max(np.abs(x))) if x.size else 0.0


def _max_exp(x: Any) -> int:
    """The largest binary exponent of ``x``'s floating dtype (128 for float32, 1024 float64)."""
    name = backend_name_of(x)
    if name == "pytorch":
        import torch

        largest = float(torch.finfo(x.dtype).max)
    elif name == "jax":
        import jax.numpy as jnp

        largest = float(jnp.finfo(x.dtype).max)
    else:
        largest = float(np.finfo(x.dtype).max)
    return int(np.frexp(largest)[1])


def times_pow2(x: Any, e: int) -> Any:
    """``x · 2**e`` exactly (barring underflow and overflow of the result), in steps of at most
    ``2**±(max_exp - 2)`` of ``x``'s dtype (126 for float32, 1022 for float64): every step is a
    normal number of that dtype (a multiplier cast to it stays finite and nonzero: jax on the
    CPU flushes subnormal float32 to zero)."""
    e = int(e)
    if e == 0:
        return x
    cap = _max_exp(x) - 2
    while e:
        step = max(-cap, min(cap, e))
        x = x * float(np.ldexp(1.0, step))
        e -= step
    return x


def scale_by(x: Any, scale: float) -> Any:
    """``x · scale`` for ``scale`` an exact power of two (such as :func:`pow2_scale`'s, which
    may be subnormal or beyond the dtype's range), by :func:`times_pow2`."""
    return times_pow2(x, int(np.frexp(scale)[1]) - 1)


def unscaled(factors: list[Any], scale: float, carrier: int) -> list[Any]:
    """``factors`` of a fit of ``scale · W`` turned into factors of ``W`` (``scale`` an exact
    power of two from :func:`pow2_scale`, so every step is exact).

    ``factors[carrier]`` takes ``1 / scale`` when its entries stay finite. Near the dtype's
    largest value (float32's 3.4e38) one factor cannot carry it: then ``1 / scale`` is spread
    over all the factors by powers of two, so that their largest entries end up of about the
    same size (the product, and so Ŵ, is the same). A factor that is all zero takes it all.
    """
    return spread_pow2(factors, -int(np.frexp(scale)[1]) + 1, carrier)  # 1/scale == 2**that


def spread_pow2(factors: list[Any], extra: int, carrier: int) -> list[Any]:
    """``factors`` whose product is multiplied by ``2**extra``: ``factors[carrier]`` takes it
    when its entries stay finite, else it is spread over all of them (see :func:`unscaled`)."""
    if extra == 0:
        return list(factors)
    tops = [max_abs(f) for f in factors]
    # m·2**e times 2**extra (m in [0.5, 1)) is finite iff e + extra <= the dtype's max exponent
    if tops[carrier] == 0.0 or int(np.frexp(tops[carrier])[1]) + extra <= _max_exp(
        factors[carrier]
    ):
        out = list(factors)
        out[carrier] = times_pow2(out[carrier], extra)
        return out
    if 0.0 in tops:
        zero = tops.index(0.0)
        return [times_pow2(f, extra) if k == zero else f for k, f in enumerate(factors)]
    shifts = pow2_shifts([int(np.frexp(m)[1]) for m in tops], extra)
    return [times_pow2(f, k) for f, k in zip(factors, shifts, strict=True)]


def pow2_shifts(exps: list[int], extra: int) -> list[int]:
    """Exponents ``k_i`` summing to ``extra`` that bring the binary exponents ``exps`` of the
    factors' sizes to one value, the rounded mean of ``exps`` plus ``extra`` (the last factor
    takes what rounding leaves): the factors times ``2**k_i`` have the product times
    ``2**extra``, balanced. Shared by :func:`spread_pow2` and ``sekron.refine``'s balancing."""
    target = int(np.round((sum(exps) + extra) / len(exps)))
    shifts = [target - e for e in exps[:-1]]
    return [*shifts, extra - sum(shifts)]


def numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype of a numpy, jax or torch dtype (torch's print as ``torch.float32``)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def eps(x: Any) -> float:
    """Machine epsilon of an array's floating dtype."""
    return float(np.finfo(numpy_dtype(x.dtype)).eps)


@contextmanager
def _thread_backend(name: str) -> Iterator[None]:
    """TensorLy's backend ``name``, active for the calling thread only; its state is restored.

    TensorLy's functions, algorithms and even its tensor classes' validation dispatch on the
    *active* backend. ``tl.backend_context`` restores with ``set_backend(old)``, which also
    overwrites the global default that other threads fall back to. Here only the thread-local
    slot that TensorLy's dispatch reads first (``BackendManager._THREAD_LOCAL_DATA.backend``)
    is set; afterwards it is put back as it was, or removed if it was absent. When ``name`` is
    already active nothing is touched.
    """
    import tensorly as tl
    from tensorly.backend import BackendManager

    if tl.get_backend() == name:
        yield
        return
    local = BackendManager._THREAD_LOCAL_DATA
    had = "backend" in local.__dict__
    old = local.__dict__.get("backend")
    local.backend = get_backend(name)
    try:
        yield
    finally:
        if had:
            local.backend = old
        else:
            del local.backend
