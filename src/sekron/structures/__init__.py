"""Named factorization structures (TT, TR, CP, Tucker, Tucker-2, GKPD) as exact SeKron embeddings.

Each structure is a small frozen dataclass. :meth:`~Structure.fit_result` fits it by its own
algorithm and returns a :class:`FitResult`: the structure's own ranks and parameter count (which
is what comparisons use) and the exact SeKron embedding of the fit (structures docs), whose relative
error is measured. :meth:`~Structure.fit` returns the embedding alone, and
:meth:`~Structure.n_params` the structure's own count at given ranks.

CP is fitted by alternating least squares and Tucker and Tucker-2 by HOOI, as TensorLy's
``parafac``, ``tucker`` and ``partial_tucker`` run them (the fits agree to rounding; see each
class), on a float64 numpy copy of the input, so that ``max_seconds`` can stop them between
sweeps; TR by TensorLy's ``tensor_ring``, run with the numpy backend active **for the calling
thread only** (the thread's previous state is restored exactly and TensorLy's global default is
never written); TT, GKPD and General by :func:`sekron.decompose`.

Every fit works on the tensor scaled by an exact power of two, so errors are right at any scale
(1e±200 in float64), and the scale is put back into the embedding's first factor.
"""

from __future__ import annotations

from collections.abc import Callable

from .._validation import _type_name
from ._base import BudgetTooSmall, FitResult, Structure
from ._cp import CP
from ._svd import GKPD, TT, General, balanced_split
from ._tr import TR
from ._tucker import Tucker, Tucker2

__all__ = [
    "BudgetTooSmall",
    "CP",
    "FitResult",
    "GKPD",
    "General",
    "Structure",
    "TR",
    "TT",
    "Tucker",
    "Tucker2",
    "balanced_split",
    "get_structure",
]

_BY_NAME: dict[str, Callable[[], Structure]] = {
    "tt": TT,
    "tr": TR,
    "cp": CP,
    "tucker": Tucker,
    "tucker2": Tucker2,
    "gkpd": GKPD,
}


def get_structure(name_or_obj: str | Structure) -> Structure:
    """A structure by name ("tt", "tr", "cp", "tucker", "tucker2", "gkpd") or the object itself.

    Raises
    ------
    TypeError
        If ``name_or_obj`` is neither a str nor a Structure.
    ValueError
        For an unknown name.

    Examples
    --------
    >>> from sekron.structures import get_structure
    >>> get_structure("tucker2")
    Tucker2(n_iter_max=100, tol=1e-08)
    >>> get_structure("GKPD").name
    'gkpd'
    """
    if isinstance(name_or_obj, Structure):
        return name_or_obj
    if not isinstance(name_or_obj, str):
        raise TypeError(
            f"name_or_obj must be a structure name or a Structure; got {_type_name(name_or_obj)}."
        )
    key = name_or_obj.lower()
    if key not in _BY_NAME:
        raise ValueError(
            f"unknown structure {name_or_obj!r}; known names are {sorted(_BY_NAME)} "
            "(use General(shapes, form) for plain SeKron)."
        )
    return _BY_NAME[key]()
