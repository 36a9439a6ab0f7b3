"""``method="auto"`` on JAX: measured once per (signature, input shape, stride, padding,
dilation, dtype), from shapes alone.

A plan's speed depends on shapes and dtypes, not on values, so the choice is measured on
zero arrays of the call's shapes, with each candidate compiled by ``jax.jit``, inside
``jax.ensure_compile_time_eval()``: it works in an eager call and while ``jax.jit`` or
``jax.grad`` traces the call (the tracers are never touched). The candidates, the timing
and the decision are :mod:`sekron._conv_choice`'s (as for torch); forward (inference) time
is what is measured. ``measure=False`` or ``SEKRON_AUTO_MEASURE=0`` use the cost model,
uncached. The cache keeps at most ``MAX_CACHE_ENTRIES`` choices (least recently used dropped
first, :class:`sekron._conv_choice.ChoiceCache`); :func:`clear_cache` forgets every choice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from .._conv_choice import (
    DENSE,
    Choice,
    ChoiceCache,
    candidates,
    decide,
    measuring_wanted,
    model_choice,
    time_interleaved,
)
from .._conv_plan import ConvKey

__all__ = ["cached_choices", "choose", "clear_cache"]

_CACHE: ChoiceCache[tuple[Any, ...], Choice] = ChoiceCache()


def clear_cache() -> None:
    """Forget every choice of ``sekron.jax.conv2d(..., method="auto")`` (cached per
    signature, input shape, stride, padding, dilation and dtype).

    Examples
    --------
    >>> import sekron.jax
    >>> sekron.jax.clear_cache()
    """
    _CACHE.clear()


def cached_choices() -> dict[tuple[Any, ...], Choice]:
    """A copy of the cache: ``(ConvKey, dtype name) -> Choice``, least recently used first."""
    return _CACHE.copy()


def _time(fns: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """:func:`sekron._conv_choice.time_interleaved` (each candidate blocks until ready)."""
    return time_interleaved(fns, lambda: None)


def _call(fn: Callable[..., Any], x: Any, factors: list[Any]) -> None:
    fn(x, factors).block_until_ready()


def choose(
    key: ConvKey,
    dtype: Any,
    factor_shapes: tuple[tuple[int, ...], ...],
    run: Callable[[Choice, Any, list[Any]], Any],
    measure: bool | None,
) -> Choice:
    """The choice for ``key`` in ``dtype``: cached, else measured (``run(choice, x,
    factors)`` computes one candidate; it is compiled per candidate and timed on zeros of
    ``key.in_shape`` and ``factor_shapes``), else the cost model's guess."""
    ckey = (key, jnp.dtype(dtype).name)
    hit = _CACHE.get(ckey)
    if hit is not None:
        return hit
    plans = candidates(key, layouts=("nhwc",))
    if not plans:
        _CACHE[ckey] = DENSE
        return DENSE
    if not measuring_wanted(measure):
        return model_choice(key)
    with jax.ensure_compile_time_eval():
        x = jnp.zeros(key.in_shape, dtype)
        factors = [jnp.zeros(s, dtype) for s in factor_shapes]
        fns: dict[str, Callable[[], Any]] = {
            name: partial(_call, jax.jit(partial(run, choice)), x, factors)
            for name, choice in {"dense": DENSE, **plans}.items()
        }
        choice = decide(plans, _time(fns), lambda best: _time({n: fns[n] for n in ("dense", best)}))
    _CACHE[ckey] = choice
    return choice
