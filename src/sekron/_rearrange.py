"""R(W) and its inverse on checked input, for the modules that have validated it already
(the public, checking versions are :func:`sekron.kron.rearrange` and ``unrearrange``)."""

from __future__ import annotations

from typing import Any

from ._plan import is_identity, rearrange_plan, unrearrange_plan
from ._typing import Shapes

__all__ = ["rearrange_unchecked", "unrearrange_unchecked"]


def _apply(B: Any, x: Any, plan: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]) -> Any:
    split, perm, out_shape = plan
    if is_identity(perm):
        return B.reshape(x, out_shape)
    return B.reshape(B.transpose(B.reshape(x, split), perm), out_shape)


def rearrange_unchecked(B: Any, tensor: Any, shapes: Shapes) -> Any:
    return _apply(B, tensor, rearrange_plan(shapes))


def unrearrange_unchecked(B: Any, T: Any, shapes: Shapes) -> Any:
    return _apply(B, T, unrearrange_plan(shapes))
