"""How a conv weight is factorized: one function, :func:`factorize_weight`, for
``SeKronConv2d.from_conv`` and ``compress``, and the checks of its options.

A weight is factorized in one of three ways: explicit factor shapes (:func:`sekron.decompose`),
a classical structure (:func:`sekron.structures.get_structure` and its ``fit``) or
``structure="search"`` (:func:`sekron.search`). The budget is ``rank``, ``tol`` or
``compression`` (a parameter budget ``weight.numel() / compression``); a search has a MAC
budget too (``mac_compression``, by default no more MACs per output position than the dense
conv) and a time limit per layer (``max_seconds``), never a cap on the configurations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .._typing import Form
from .._validation import (
    _type_name,
    budget_from_compression,
    check_compression,
    check_form,
    check_max_seconds,
    check_number,
    check_tensor,
    check_threads,
    check_tol,
)
from ..tensor import SeKronTensor

__all__ = [
    "DEFAULT_COMPRESSION",
    "DEFAULT_MAC_COMPRESSION",
    "DEFAULT_MAX_SECONDS",
    "FactorizeOptions",
    "Factorized",
    "as_float64_array",
    "check_factorize_options",
    "factorize_weight",
    "search_greedy",
    "search_joint",
    "search_note",
    "structure_name",
]


class _DefaultRatio(float):
    """A default nobody passed (a compression ratio, a MAC ratio, seconds): ``compress``'s
    defaults, which apply only where they make sense (``compression`` when no other budget,
    ``rank`` or ``tol``, is given; the search's options with ``structure="search"``). It
    prints as the number it stands for."""

    def __repr__(self) -> str:
        return float.__repr__(self)


DEFAULT_COMPRESSION: float = _DefaultRatio(4.0)
#: structure="search": no more MACs per output position than the dense conv. It applies to the
#: search only; an explicit value with another structure raises.
DEFAULT_MAC_COMPRESSION: float = _DefaultRatio(1.0)
#: structure="search": seconds per layer. Every configuration is considered (no cap); the
#: level-1 spectra and every 2-factor (GKPD) configuration are always scored in full, so the
#: best 2-factor split is never lost; deeper configurations are evaluated most promising
#: first, and a layer stopped by the limit is reported as cut short, with its certificate.
DEFAULT_MAX_SECONDS: float = _DefaultRatio(30.0)
#: structure="search": every 2-factor configuration (few, exact from the level-1 spectra:
#: the best 2-factor split is never lost) and this many of the 3-factor ones, most balanced
#: first. A layer with more 3-factor configurations within its budget is reported as cut short.
DEEP_CONFIGS = 200
#: ALS sweeps of the search's joint-fit stage (:func:`sekron.search`'s default).
JOINT_SWEEPS = 20


class FactorizeOptions(NamedTuple):
    """Checked options of :func:`factorize_weight` (shapes come per layer)."""

    structure: Any  # None (explicit shapes), "search", a name or a structure object
    rank: Any
    tol: float | None
    compression: float | None
    form: Form
    mac_compression: float | None = None  # structure="search" only
    max_seconds: float | None = None  # structure="search" only


class Factorized(NamedTuple):
    """A factorized weight; for ``structure="search"``, whether its search was cut short
    (``max_seconds``) and what its certificate says."""

    st: SeKronTensor
    cut_short: bool = False
    note: str | None = None


def search_note(result: Any, max_seconds: float | None) -> tuple[bool, str | None]:
    """(cut short?, text) of a :class:`sekron.search.SearchResult` of :func:`search_greedy`:
    stopped by time (with its certificate) or with 3-factor configurations left out."""
    from ..search._configs import enumerate_configs, min_params

    notes = []
    n_deep = sum(
        1 for c in enumerate_configs(result.tensor_shape, 3) if min_params(c) <= result.budget
    )
    if n_deep > DEEP_CONFIGS:
        notes.append(
            f"cut short: {DEEP_CONFIGS} most balanced of {n_deep:,} 3-factor configurations "
            "(every 2-factor one)"
        )
    if result.timed_out or result.interrupted:
        why = "interrupted" if result.interrupted else f"cut short at max_seconds={max_seconds:g}"
        if result.certified:
            notes.append(f"{why}; greedy best certified over every configuration searched")
        else:
            notes.append(
                f"{why}; {result.n_open:,} configurations left may reach greedy rel. error "
                f"{result.bound:.3g}"
            )
    return (True, "; ".join(notes)) if notes else (False, None)


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
    mac_compression: object = DEFAULT_MAC_COMPRESSION,
    max_seconds: object = DEFAULT_MAX_SECONDS,
) -> FactorizeOptions:
    """Check how layers will be factorized, before any work.

    ``compression`` equal to :data:`DEFAULT_COMPRESSION` (``compress``'s default) applies only
    when neither ``rank`` nor ``tol`` is given. Explicit options that contradict each other
    raise ValueError: ``tol`` with ``compression`` (two error targets), ``rank`` with
    ``compression`` for a structure (its fit takes one budget), ``tol``/``form`` with a
    structure, ``rank`` with ``structure="search"``, ``mac_compression`` or ``max_seconds``
    (other than their defaults) without ``structure="search"``.
    """
    search_only = {"mac_compression": mac_compression, "max_seconds": max_seconds}
    if structure != "search" or shapes_given:
        for name, value in search_only.items():
            if value is not None and not isinstance(value, _DefaultRatio):
                raise ValueError(
                    f"{name} applies to structure='search' only; got {name}={value!r} with "
                    + ("shapes." if shapes_given else f"structure={structure_name(structure)!r}.")
                )
        mac_c, seconds = None, None
    else:
        mac_c = (
            None
            if mac_compression is None
            else check_number(mac_compression, "mac_compression", at_least=1.0)
        )
        seconds = check_max_seconds(max_seconds)
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
    return FactorizeOptions(structure, rank, None, ratio, "nested", mac_c, seconds)


def factorize_weight(
    weight: torch.Tensor, options: FactorizeOptions, shapes: Sequence[Sequence[int]] | None
) -> Factorized:
    """Factorize a conv weight (checked: float32/64, finite) as ``options`` say.

    ``shapes`` (explicit factor shapes) go with ``options.structure is None``.
    """
    weight = weight.detach()
    budget = None
    if options.compression is not None:
        budget = budget_from_compression(options.compression, weight.numel())
    if options.structure is None:
        from ..decomposition import decompose
        from ..search._parallel import blas_threads

        assert shapes is not None
        with blas_threads(1):
            return Factorized(
                decompose(
                    as_float64_array(weight),
                    shapes,
                    options.rank,
                    form=options.form,
                    tol=options.tol,
                    max_params=budget,
                )
            )
    if options.structure == "search":
        assert budget is not None
        w64 = as_float64_array(weight)
        greedy = search_greedy(w64, options, [budget])[0]
        if greedy is None:
            raise ValueError(f"no structure fits the budget of {budget:,} parameters")
        result = search_joint(w64, options, greedy)
        best: SeKronTensor = result.best.to_sekron()
        return Factorized(best, *search_note(result, options.max_seconds))
    from ..search._parallel import blas_threads
    from ..structures import get_structure

    with blas_threads(1):
        fitted: SeKronTensor = get_structure(options.structure).fit(
            as_float64_array(weight), rank=options.rank, max_params=budget
        )
    if structure_name(options.structure) == "tucker2":
        # the equal-count chain (U_F)(core)(U_C): the nested embedding stores U_C once per
        # r_1, more numbers than Tucker-2 itself and than the budget allows
        from .._embeddings import tucker2_chain

        fitted = tucker2_chain(fitted)
    return Factorized(fitted)


def as_float64_array(weight: torch.Tensor) -> Any:
    """The weight as a float64 numpy array, where the search runs: its numpy kernels are
    multi-threaded and measured 50x faster than torch's on a 512x128x3x3 layer (5.3 s against
    279 s), and the joint fits' normal equations of a float32 weight can be too
    ill-conditioned for ``eigh`` (a 512x512x3x3 layer failed so). The layer is built in the
    conv's dtype and on its device afterwards."""
    return weight.detach().to(device="cpu", dtype=torch.float64).numpy()


def search_greedy(weight: Any, options: FactorizeOptions, budgets: list[int]) -> list[Any]:
    """The greedy stage of :func:`sekron.search` at ``budgets`` (one run sharing every SVD):
    up to 3 factors, every configuration, within the MAC budget, in half of ``max_seconds``
    (the joint-fit stage gets the other half). Deterministic (seed 0).

    ``weight`` is :func:`as_float64_array` of the layer's weight."""
    from ..search._api import run_greedy
    from ..search._macs import mac_budget

    t, _ = check_tensor(weight)
    shape = tuple(int(v) for v in weight.shape)
    return run_greedy(
        t,
        budgets,
        max_factors=3,
        forms=("nested", "chain"),
        max_configs=None,
        svd="auto",
        random_state=0,
        exhaustive=False,
        progress=False,
        max_seconds=None if options.max_seconds is None else options.max_seconds / 2,
        threads=check_threads(None),
        max_macs=mac_budget(None, options.mac_compression, shape),
        max_deep_configs=DEEP_CONFIGS,
    )


def search_joint(weight: Any, options: FactorizeOptions, greedy: Any) -> Any:
    """The joint-fit stage of :func:`sekron.search` (20 ALS sweeps) on a greedy result, in
    half of ``max_seconds``."""
    from ..random import check_random_state
    from ..search._api import with_joint_fits

    t, _ = check_tensor(weight)
    deadline = None
    if options.max_seconds is not None:
        deadline = time.perf_counter() + options.max_seconds / 2
    return with_joint_fits(
        t,
        weight,
        greedy,
        sweeps=JOINT_SWEEPS,
        warm_starts=None,
        rng=check_random_state(0),
        deadline=deadline,
        threads=check_threads(None),
    )
