"""Joint refinement of any SeKron tensor against a target: alternating least squares (ALS).

``decompose(..., refine=k)`` refines its own SVD result. :func:`refine` refines *any* warm start:
another structure's embedding (CP, TT, Tucker-2, ...), a candidate of the structure search, or a
tensor whose ranks were changed with ``rank=``, including ranks above a level's SVD rank (a sum of
R Kronecker products is a valid structure for any R; for CP-like ranks (R, 1, .., 1) a larger R
is often the better use of a budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import (
    get_backend,
    like,
    pow2_scale,
    pow2_shifts,
    scale_by,
    sq_norm,
    times_pow2,
    to_numpy,
)
from ._plan import factor_sizes
from ._rearrange import rearrange_unchecked
from ._validation import _type_name, check_int, check_number, check_rank, check_tensor
from .decomposition import _als
from .random import check_random_state
from .tensor import SeKronTensor

__all__ = ["refine"]

# new rank slices start at this fraction of the factor's root-mean-square entry
_PAD_SCALE = 0.1


def refine(
    tensor: Any,
    st: SeKronTensor,
    *,
    rank: int | Sequence[int] | None = None,
    sweeps: int = 20,
    tol: float = 1e-6,
    random_state: Any = None,
) -> SeKronTensor:
    """Refine a SeKron tensor against ``tensor`` by alternating least squares over its factors.

    Parameters
    ----------
    tensor : array
        The target, a numpy, torch or jax array of float32 or float64 with ``st.shape``. Its
        kind, dtype and device must be those of ``st``'s factors.
    st : SeKronTensor
        The warm start, in either form; its shapes, form and (unless ``rank`` is given) ranks are
        kept.
    rank : int or sequence of S - 1 ints, optional
        New ranks for the warm start before refining. A level cut to a lower rank drops its
        last terms. A level grown to a higher rank gets new terms that start at exactly zero:
        the new slices are zero in the factor that introduces the rank index and random in the
        later factors (a tenth of the factor's root-mean-square entry, seeded by
        ``random_state``), so the first least-squares solve can use them. Growing ranks
        therefore never raises the error above ``st``'s. Ranks are *not* capped at a level's
        SVD rank.
    sweeps : int >= 1
        At most this many ALS sweeps (each solves one linear least-squares problem per factor).
    tol : float in [0, 1)
        Stop once a sweep lowers the squared error by less than ``tol`` times its value.
    random_state : None, int or numpy Generator
        Seed for the new slices of ``rank``.

    Returns
    -------
    SeKronTensor
        Of ``st``'s form and shapes, with ``rel_error`` the measured relative Frobenius error.
        Its factors are balanced: their root-mean-square entries agree within a factor of 2
        (exact power-of-two rescaling, which does not change the tensor), so they train well
        as parameters.
        It is never above the warm start's error (after cutting ranks, if ``rank`` cuts any): a
        sweep that would increase it is not kept.

    Raises
    ------
    TypeError
        ``st`` is not a SeKronTensor, or its factors are not of ``tensor``'s kind and dtype.
    ValueError
        ``st.shape != tensor.shape``, or invalid ``rank``, ``sweeps`` or ``tol``.

    Notes
    -----
    Ŵ is linear in each factor separately, so with the others fixed the best factor solves the
    normal equations built from the other factors' Gram matrices (pseudo-inverse for singular
    ones). Each solve is optimal given the others, so the error never increases. The work
    happens on the rearranged tensor R(W), after an exact power-of-two normalization, so the
    error is correct at any scale.

    References
    ----------
    Hameed et al., arXiv:2210.06299 (the nested form); Kolda & Bader, "Tensor Decompositions
    and Applications", SIAM Review 2009 (ALS).

    Examples
    --------
    >>> import numpy as np, sekron
    >>> W = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    >>> shapes = [(16, 1, 1, 1), (1, 8, 1, 1), (1, 1, 3, 3)]
    >>> greedy = sekron.decompose(W, shapes, rank=[8, 1])
    >>> better = sekron.refine(W, greedy, rank=[12, 1], random_state=0)
    >>> better.ranks, better.rel_error < greedy.rel_error
    ((12, 1), True)
    """
    t, backend = check_tensor(tensor)
    if not isinstance(st, SeKronTensor):
        raise TypeError(f"st must be a SeKronTensor; got {_type_name(st)}.")
    if tuple(st.shape) != tuple(t.shape):
        raise ValueError(
            f"st has shape {tuple(st.shape)} but tensor has shape {tuple(t.shape)}; refine "
            "needs a warm start of the tensor's shape."
        )
    if st.backend != backend or str(st.dtype) != str(t.dtype):
        raise TypeError(
            f"st's factors are {st.backend} {st.dtype} but tensor is {backend} {t.dtype}; "
            "give a warm start of the tensor's kind and dtype."
        )
    new_ranks = check_rank(rank, st.n_factors - 1)
    n_sweeps = check_int(sweeps, "sweeps", at_least=1)
    rtol = check_number(tol, "tol", at_least=0.0, below=1.0)
    rng = check_random_state(random_state)

    B = get_backend(backend)
    factors = list(st.factors)
    if new_ranks is not None and new_ranks != st.ranks:
        factors = _with_ranks(factors, st, new_ranks, rng)
    scale = pow2_scale(t)
    T = rearrange_unchecked(B, scale_by(t, scale), st.shapes)
    norm2 = float(sq_norm(T))
    n_modes = len(st.shapes[0])
    flat = [
        B.reshape(f, (*f.shape[: f.ndim - n_modes], dk))
        for f, dk in zip(factors, factor_sizes(st.shapes), strict=True)
    ]
    # every factor O(1) (Grams of factors near 1e±200 overflow), the product matched to the
    # scaled target: exact powers of two throughout
    extra = -int(np.frexp(scale)[1]) + 1  # scale == 2**-extra
    shift = extra
    for k, f in enumerate(flat):
        e = -int(np.frexp(pow2_scale(f))[1]) + 1  # pow2_scale(f) == 2**-e
        flat[k] = times_pow2(f, -e)
        shift -= e
    flat[-1] = times_pow2(flat[-1], -shift)
    flat, err2 = _als(B, T, flat, st.form, n_sweeps, rtol)
    # 1/scale folded in while balancing: one factor alone may not hold it (float32 near 3.4e38)
    flat = _balanced(flat, extra)
    out = [B.reshape(f, (*f.shape[:-1], *s)) for f, s in zip(flat, st.shapes, strict=True)]
    rel = 0.0 if norm2 == 0.0 else float(np.sqrt(max(err2, 0.0) / norm2))
    return SeKronTensor(out, st.form, rel_error=rel)


def _balanced(flat: list[Any], extra: int = 0) -> list[Any]:
    """The factors times powers of two whose product is ``2**extra``, with their root-mean-square
    entries within a factor of 2 of each other.

    Every term of Ŵ holds one slice of every factor, so scaling factor k by c_k with
    ``prod c_k == 1`` leaves Ŵ unchanged; powers of two keep it exact. Balanced factors train
    well as parameters (an optimizer's step is then of one size relative to every factor), and
    ``2**extra`` (the fit's scale) spread over all of them stays within the dtype's range where
    one factor alone would overflow. A factor that is all zero takes ``2**extra`` alone.
    """
    exps = []
    for k, f in enumerate(flat):
        a = np.asarray(to_numpy(f), dtype=np.float64)
        s = pow2_scale(a)  # log2 of the RMS without squaring entries near 1e±300
        rms = float(np.sqrt(np.mean(np.square(a * s))))
        if rms == 0.0:
            return [times_pow2(g, extra) if j == k else g for j, g in enumerate(flat)]
        exps.append(int(np.round(np.log2(rms) - np.log2(s))))
    return [times_pow2(f, k) for f, k in zip(flat, pow2_shifts(exps, extra), strict=True)]


def _with_ranks(
    factors: list[Any], st: SeKronTensor, ranks: tuple[int, ...], rng: np.random.Generator
) -> list[Any]:
    """The factors cut or grown to ``ranks``; grown terms start at zero (see :func:`refine`).

    A rank index is introduced by one factor (nested: R_{k+1} by factor k, its last rank
    axis; chain: R_{k+1} by factor k, its column axis). New slices are zero along that axis
    there, and random (at _PAD_SCALE of the factor's RMS) in every later factor.
    """
    S = st.n_factors
    out = []
    for k, f in enumerate(factors):
        a = np.asarray(to_numpy(f), dtype=np.float64)
        if st.form == "nested":
            lead = ranks[: min(k + 1, S - 1)]
            own_axis = k if k < S - 1 else None
        else:
            bounds = (1, *ranks, 1)
            lead = (bounds[k], bounds[k + 1])
            own_axis = 1 if k < S - 1 else None
        shape = (*lead, *st.shapes[k])
        rms = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
        new = rng.standard_normal(shape) * (_PAD_SCALE * (rms if rms > 0 else 1.0))
        if own_axis is not None:
            old = a.shape[own_axis]
            index = (slice(None),) * own_axis + (slice(old, None),)
            new[index] = 0.0
        keep = tuple(slice(0, min(p, q)) for p, q in zip(a.shape, shape, strict=True))
        new[keep] = a[keep]
        out.append(like(new, f))
    return out
