"""Stand-in for :mod:`sekron._executor` (issue #14) until it is merged: the same two functions,
local only. Delete this module once ``sekron._executor`` exists and import from it instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._validation import _type_name

__all__ = ["check_executor", "map_ordered"]


def check_executor(executor: object, name: str = "executor") -> Any:
    """None, or (later) a ``concurrent.futures.Executor``; for now only None is accepted."""
    if executor is not None:
        raise TypeError(f"{name} must be None here; got {_type_name(executor)}.")
    return None


def map_ordered(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    executor: Any,
    shared: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Any]:
    """``[fn(item, **shared) for item in items]``, in this process."""
    del executor, labels
    out = []
    for i, item in enumerate(items):
        out.append(fn(item, **(shared or {})))
        if progress is not None:
            progress(i + 1, len(items))
    return out
