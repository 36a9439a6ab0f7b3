"""sekron.jax: convolution with SeKron kernels without building them, on JAX (conv docs).

The same stage plans as :mod:`sekron.torch` (the backend-neutral :mod:`sekron._conv_plan`),
run with ``jax.lax.conv_general_dilated``; works under ``jax.jit`` and ``jax.grad``.
Needs JAX (``pip install "sekron[jax]"``).
"""

from __future__ import annotations

try:
    import jax as _jax  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without jax
    raise ImportError("sekron.jax needs JAX: pip install 'sekron[jax]' (or jax>=0.4.20).") from exc

from ._auto import clear_cache
from ._functional import conv1d, conv2d

__all__ = ["clear_cache", "conv1d", "conv2d"]
