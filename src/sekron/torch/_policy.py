"""How a conv weight is factorized: one function, :func:`factorize_weight`, for
``SeKronConv2d.from_conv`` and ``compress``, and the checks of its options.

A weight is factorized in one of three ways: explicit factor shapes (:func:`sekron.decompose`),
a classical structure (:func:`sekron.structures.get_structure` and its ``fit``) or
``structure="search"`` (:func:`sekron.search`). The budget is ``rank``, ``tol`` or
``compression`` (a parameter budget ``weight.numel() / compression``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .._typing import Form
from .._validation import (
    _type_name,
    budget_from_compression,
    check_compression,
    check_form,
    check_tol,
)
from ..tensor import SeKronTensor

__all__ = [
    "DEFAULT_COMPRESSION",
    "FactorizeOptions",
    "SEARCH_MAX_CONFIGS",
    "check_factorize_options",
    "factorize_weight",
    "structure_name",
]

# structure="search" evaluates this many factor configurations per layer, most balanced first
# (sekron.search's max_configs): an exhaustive 3-factor search of a 512x512x3x3 layer takes on
# the order of an hour on 2 cores, this one well under a minute.
SEARCH_MAX_CONFIGS = 200


class _DefaultRatio(float):
    """A compression ratio nobody passed: ``compress``'s default, which applies only when no
    other budget (``rank``, ``tol``) is given. It prints as the number it stands for."""

    def __repr__(self) -> str:
        return float.__repr__(self)


DEFAULT_COMPRESSION: float = _DefaultRatio(4.0)


class FactorizeOptions(NamedTuple):
    """Checked options of :func:`factorize_weight` (shapes come per layer)."""

    structure: Any  # None (explicit shapes), "search", a name or a structure object
    rank: Any
    tol: float | None
    compression: float | None
    form: Form


def structure_name(structure: Any) -> str:
    """Short name of a structure argument: the string itself or the object's ``.name``."""
    if isinstance(structure, str):
        return structure
    return str(getattr(structure, "name", type(structure).__name__))


def _search_function() -> Any:
    """:func:`sekron.search`, imported lazily (it is an optional part of the package)."""
    try:
        from ..search import search
    except ImportError as exc:  # pragma: no cover - only while sekron.search is missing
        raise ImportError(f"structure='search' needs sekron.search: {exc}") from exc
    return search


def _check_structure(structure: Any) -> None:
    if structure == "search":
        _search_function()
        return
    if not isinstance(structure, str) and not hasattr(structure, "fit"):
        raise TypeError(
            "structure must be a name ('cp', 'tucker', 'tucker2', 'tt', 'tr', 'gkpd', 'search') "
            f"or a structure object with .fit; got {_type_name(structure)}."
        )
    from ..structures import get_structure

    get_structure(structure)  # unknown names fail here, before any work


def check_factorize_options(
    *,
    shapes_given: bool,
    structure: Any,
    rank: Any,
    tol: object,
    compression: object,
    form: object,
) -> FactorizeOptions:
    """Check how layers will be factorized, before any work.

    ``compression`` equal to :data:`DEFAULT_COMPRESSION` (``compress``'s default) applies only
    when neither ``rank`` nor ``tol`` is given. Explicit options that contradict each other
    raise ValueError: ``tol`` with ``compression`` (two error targets), ``rank`` with
    ``compression`` for a structure (its fit takes one budget), ``tol``/``form`` with a
    structure, ``rank`` with ``structure="search"``.
    """
    if isinstance(compression, _DefaultRatio):
        compression = None if (rank is not None or tol is not None) else float(compression)
    ratio = None if compression is None else check_compression(compression)
    form_c = check_form(form)
    tol_c = None if tol is None else check_tol(tol)
    if shapes_given:
        if tol_c is not None and ratio is not None:
            raise ValueError(
                f"give at most one of tol and compression; got both (tol={tol!r}, "
                f"compression={compression!r}). Use rank as a cap with either."
            )
        return FactorizeOptions(None, rank, tol_c, ratio, form_c)  # type: ignore[arg-type]
    if tol_c is not None:
        raise ValueError(
            f"tol applies to explicit shapes only; got tol={tol!r} with "
            f"structure={structure!r}. Use rank or compression."
        )
    if form_c != "nested":
        raise ValueError(
            f"form applies to explicit shapes only; got form={form!r} with "
            f"structure={structure!r} (a structure fixes its own form)."
        )
    if structure == "search":
        if rank is not None:
            raise ValueError(
                f"rank does not apply to structure='search' (it chooses ranks); got rank={rank!r}."
            )
        if ratio is None:
            raise ValueError(
                "structure='search' needs compression (> 1), its parameter budget; got "
                "compression=None."
            )
    elif rank is not None and ratio is not None:
        raise ValueError(
            f"give at most one of rank and compression for structure={structure_name(structure)!r}"
            f"; got both (rank={rank!r}, compression={compression!r})."
        )
    _check_structure(structure)
    return FactorizeOptions(structure, rank, None, ratio, "nested")


def factorize_weight(
    weight: torch.Tensor, options: FactorizeOptions, shapes: Sequence[Sequence[int]] | None
) -> SeKronTensor:
    """Factorize a conv weight (checked: float32/64, finite) as ``options`` say.

    ``shapes`` (explicit factor shapes) go with ``options.structure is None``.
    """
    weight = weight.detach()
    budget = None
    if options.compression is not None:
        budget = budget_from_compression(options.compression, weight.numel())
    if options.structure is None:
        from ..decomposition import decompose

        assert shapes is not None
        return decompose(
            weight,
            shapes,
            options.rank,
            form=options.form,
            tol=options.tol,
            max_params=budget,
        )
    if options.structure == "search":
        result = _search_function()(
            weight,
            compression=options.compression,
            max_factors=3,
            max_configs=SEARCH_MAX_CONFIGS,
            progress=False,
        )
        best: SeKronTensor = result.best.to_sekron()
        return best
    from ..structures import get_structure

    fitted: SeKronTensor = get_structure(options.structure).fit(
        weight, rank=options.rank, max_params=budget
    )
    if structure_name(options.structure) == "tucker2":
        # the equal-count chain (U_F)(core)(U_C): the nested embedding stores U_C once per
        # r_1, more numbers than Tucker-2 itself and than the budget allows
        from .._embeddings import tucker2_chain

        fitted = tucker2_chain(fitted)
    return fitted
