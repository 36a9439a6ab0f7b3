"""TensorLy interop: CP, Tucker, TT and TR tensors are exact SeKron tensors (structures docs).

With one mode per factor (``shapes[k]`` holds mode k, every other size is 1) a Kronecker product
of the factors is an outer product, so each of TensorLy's factorized formats is a SeKronTensor with
particular ranks and factor contents. :func:`from_tensorly` builds that embedding;
:func:`to_tensorly` goes back wherever the SeKron structure allows.

Everything here is array plumbing (reshape, transpose, multiplication by ones, one QR): no
approximation, so reconstructions agree to rounding. Arrays stay of their own kind, dtype and
device, and TensorLy's active backend is neither read nor changed.
"""

from __future__ import annotations

from math import prod
from typing import Any, Literal

import numpy as np
from tensorly.cp_tensor import CPTensor
from tensorly.tr_tensor import TRTensor
from tensorly.tt_tensor import TTTensor
from tensorly.tucker_tensor import TuckerTensor

from ._backend import _thread_backend, get_backend, to_numpy
from ._embeddings import (
    _cp_factors,
    _ctx,
    _expand,
    _tr_factors,
    _tt_factors,
    _tucker_factors,
)
from ._typing import Form, Shapes
from ._validation import _type_name, check_array_group
from .tensor import SeKronTensor

__all__ = ["from_tensorly", "to_tensorly"]

#: The TensorLy types :func:`to_tensorly` can produce.
_Kind = Literal["cp", "tucker", "tt", "tr"]
_KINDS: tuple[_Kind, ...] = ("cp", "tucker", "tt", "tr")


# ----------------------------------------------------------------------------------------------
# TensorLy -> SeKron
# ----------------------------------------------------------------------------------------------
def _arrays_of(obj: Any) -> list[Any]:
    if isinstance(obj, CPTensor):
        return [obj.weights, *obj.factors]
    if isinstance(obj, TuckerTensor):
        return [obj.core, *obj.factors]
    return list(obj.factors)


def _check_arrays(arrays: list[Any], kind: str) -> tuple[Any, str]:
    backend = check_array_group(arrays, lambda i: f"the {kind}'s array {i}", f"the {kind}'s arrays")
    return get_backend(backend), backend


def _check_obj(obj: Any, form: object) -> str:
    """The TensorLy type's name of ``obj``, after checking ``obj`` and ``form``."""
    types = (CPTensor, TuckerTensor, TTTensor, TRTensor)
    kind = next((cls.__name__ for cls in types if isinstance(obj, cls)), None)
    if kind is None:
        raise TypeError(
            "obj must be a TensorLy CPTensor, TuckerTensor, TTTensor or TRTensor; "
            f"got {_type_name(obj)}."
        )
    if form is not None and form not in ("chain", "nested"):
        raise ValueError(f"form must be None, 'chain' or 'nested'; got {form!r}.")
    if form == "chain" and kind != "TTTensor":
        raise ValueError(
            f"form='chain' embeds a TTTensor only; a {kind} embeds in nested form. Leave form=None."
        )
    if len(obj.shape) < 2:
        raise ValueError(
            f"obj must have at least 2 modes to embed as a SeKron tensor (S >= 2 factors); "
            f"the {kind} has shape {tuple(obj.shape)}."
        )
    return kind


def from_tensorly(obj: Any, *, form: Form | None = None) -> SeKronTensor:
    """The exact SeKron embedding of a TensorLy CP, Tucker, TT or TR tensor (structures docs).

    Parameters
    ----------
    obj : CPTensor, TuckerTensor, TTTensor or TRTensor
        From ``tensorly.cp_tensor``, ``tensorly.tucker_tensor``, ``tensorly.tt_tensor`` or
        ``tensorly.tr_tensor``, with at least 2 modes and numpy, torch or jax arrays of one dtype.
    form : {"chain", "nested"}, optional
        Only for a TTTensor: ``"chain"`` (default; the factors are the TT cores) or ``"nested"``.
        The other formats embed in nested form only.

    Returns
    -------
    SeKronTensor
        With one mode per factor, ``shapes[k] = (1, .., n_k, .., 1)``; arrays of the input's kind,
        dtype and device (differentiable on autograd backends). ``.rel_error`` is None: the
        embedding is exact, so ``to_tensor()`` equals TensorLy's own reconstruction to rounding.

    Raises
    ------
    TypeError
        If ``obj`` is not one of the four types, or its arrays are of mixed kinds or dtypes.
    ValueError
        If ``obj`` has fewer than 2 modes, or ``form`` is not allowed for its type.

    Notes
    -----
    With N modes and factor k holding only mode k, a Kronecker product of the factors is an
    outer product. Writing A_k for factor k:

    - **CP**, ``W = Σ_r λ_r U_1[:, r] ∘ .. ∘ U_N[:, r]``: nested, ranks ``(R, 1, .., 1)``,
      ``A_1[r] = λ_r U_1[:, r]`` and ``A_k[r, 0, .., 0] = U_k[:, r]``; ``R Σ_k n_k`` parameters.
    - **Tucker**, core G of shape ``(t_1..t_N)``: nested, ranks ``(t_1..t_{N-1})``,
      ``A_k[r_1..r_k] = U_k[:, r_k]`` for k < N and ``A_N[r_1..r_{N-1}] = Σ_t G[r_1..r_{N-1}, t]
      U_N[:, t]`` (the core is absorbed into the last factor).
    - **TT**, cores ``G_k[r_{k-1}, n_k, r_k]``: chain with ``A_k = G_k`` (transposed to
      ``(r_{k-1}, r_k, n_k)``), or nested with ``A_k[r_1..r_k] = G_k[r_{k-1}, :, r_k]``.
    - **TR**, cores ``G_k[q_{k-1}, n_k, q_k]`` with ``q_N = q_0``: nested, ranks
      ``(q_0 q_1, q_2, .., q_{N-1})``; the first rank index is the pair ``s = (q_0, q_1)``,
      ``A_1[s] = G_1[q_0, :, q_1]``, ``A_k[s, q_2..q_k] = G_k[q_{k-1}, :, q_k]`` and the last
      factor ``A_N[s, q_2..q_{N-1}] = G_N[q_{N-1}, :, q_0]`` reads the q_0 inside s.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299, Section 3.3.

    Examples
    --------
    >>> import numpy as np, sekron
    >>> from tensorly.cp_tensor import CPTensor
    >>> rng = np.random.default_rng(0)
    >>> cp = CPTensor((np.ones(3), [rng.standard_normal((n, 3)) for n in (4, 5, 6)]))
    >>> st = sekron.from_tensorly(cp)
    >>> st
    nested SeKronTensor of shape (4, 5, 6): 3 factors, ranks (3, 1), 45 params
    >>> st.n_params == 3 * (4 + 5 + 6)
    True
    >>> import tensorly as tl
    >>> bool(np.allclose(st.to_tensor(), tl.cp_to_tensor(cp)))
    True
    """
    kind = _check_obj(obj, form)
    B, _ = _check_arrays(_arrays_of(obj), kind)
    if kind == "CPTensor":
        return SeKronTensor(_cp_factors(B, obj.weights, obj.factors), "nested")
    if kind == "TuckerTensor":
        return SeKronTensor(_tucker_factors(B, obj.core, obj.factors), "nested")
    if kind == "TTTensor":
        chosen = "chain" if form is None else form
        return SeKronTensor(_tt_factors(B, obj.factors, chosen), chosen)
    return SeKronTensor(_tr_factors(B, obj.factors), "nested")


# ----------------------------------------------------------------------------------------------
# SeKron -> TensorLy
# ----------------------------------------------------------------------------------------------
def _spans(shape_k: tuple[int, ...]) -> list[int]:
    return [n for n, v in enumerate(shape_k) if v != 1]


def _one_mode_problem(shapes: Shapes) -> str | None:
    """Why ``shapes`` is not one mode per factor with factor k on mode k (None when it is)."""
    n_factors, n_modes = len(shapes), len(shapes[0])
    for k, s in enumerate(shapes):
        spans = _spans(s)
        if len(spans) > 1:
            return f"shapes[{k}] = {s} spans {len(spans)} modes; {{kind}} needs one mode per factor"
        if spans and spans[0] != k:
            return f"shapes[{k}] = {s} holds mode {spans[0]}; {{kind}} needs factor k on mode k"
    if n_factors != n_modes:
        return (
            f"the tensor has {n_modes} modes but {n_factors} factors; {{kind}} needs one factor "
            "per mode"
        )
    return None


def _tucker_layout(shapes: Shapes) -> bool:
    """Factor k < S-1 on mode k alone; the last factor holds modes S-1..N-1 whole."""
    n_factors, n_modes = len(shapes), len(shapes[0])
    if n_factors > n_modes:
        return False
    for k, s in enumerate(shapes[:-1]):
        if any(v != 1 for n, v in enumerate(s) if n != k):
            return False
    last = shapes[-1]
    return all(last[n] == 1 for n in range(n_factors - 1))


def _constant_over(a: np.ndarray, n_axes: int) -> bool:
    """Whether ``a`` does not depend on its first ``n_axes`` indices (exact equality)."""
    if n_axes == 0:
        return True
    ref = a[(slice(0, 1),) * n_axes]
    return bool(np.array_equal(a, np.broadcast_to(ref, a.shape)))


def _factors_constant(st: SeKronTensor, n_axes: Any) -> bool:
    """``n_axes(k)`` leading rank axes of factor k are irrelevant, for every middle/last factor."""
    for k in range(1, st.n_factors):
        m = n_axes(k)
        if m > 0 and not _constant_over(to_numpy(st.factors[k]), m):
            return False
    return True


def _flat(B: Any, f: Any, n_rank_dims: int, n: int) -> Any:
    return B.reshape(f, (*f.shape[:n_rank_dims], n))


def _nested_to_cp(B: Any, st: SeKronTensor) -> CPTensor:
    """Any nested one-mode tensor is CP of rank prod(ranks): U_k[:, p] = A_k[p_1..p_k]."""
    n = st.shape
    R = st.ranks
    P = prod(R)
    S = st.n_factors
    factors = []
    for k, f in enumerate(st.factors):
        d = min(k + 1, S - 1)
        V = _flat(B, f, d, n[k])
        V = B.reshape(V, (*R[:d], *(1,) * (S - 1 - d), n[k]))
        V = B.reshape(_expand(B, V, (*R, n[k])), (P, n[k]))
        factors.append(B.transpose(V, (1, 0)))
    weights = B.ones((P,), **_ctx(B, st.factors[0]))
    return CPTensor((weights, factors))


def _nested_to_tucker(B: Any, st: SeKronTensor) -> TuckerTensor:
    """Tucker layout with factor k depending on r_k only (k < S-1); the last factor is the core."""
    S, R = st.n_factors, st.ranks
    full = st.shape
    factors = []
    for k, f in enumerate(st.factors[:-1]):
        V = B.reshape(f[(0,) * k], (R[k], full[k]))
        factors.append(B.transpose(V, (1, 0)))
    rest = full[S - 1 :]
    core = B.reshape(st.factors[-1], (*R, *rest))
    ctx = _ctx(B, st.factors[0])
    P = prod(R)
    if len(rest) == 1 and P < rest[0]:
        # compress the last mode: A_N = (P, n) = Rm^T Q^T with Q (n, P) orthonormal
        Q, Rm = B.qr(B.transpose(B.reshape(core, (P, rest[0])), (1, 0)))
        core = B.reshape(B.transpose(Rm, (1, 0)), (*R, P))
        factors.append(Q)
    else:
        factors.extend(B.eye(n, **ctx) for n in rest)
    return TuckerTensor((core, factors))


def _nested_to_tt(B: Any, st: SeKronTensor, compact: bool) -> list[Any]:
    """TT cores of a nested one-mode tensor.

    Compact (factor k depends on r_{k-1}, r_k only; the last on r_{N-1} only): ranks R.
    Otherwise lifted to ranks P_k = R_1..R_k with block-diagonal cores
    ``G_k[p, i, (p', r)] = δ(p, p') A_k[p, r](i)``: exact, never smaller.
    """
    n, R, S = st.shape, st.ranks, st.n_factors
    ctx = _ctx(B, st.factors[0])
    cores = []
    for k, f in enumerate(st.factors):
        if k == 0:
            V = _flat(B, f, 1, n[0])  # (R_1, n)
            cores.append(B.reshape(B.transpose(V, (1, 0)), (1, n[0], R[0])))
            continue
        last = k == S - 1
        d = k if last else k + 1
        V = _flat(B, f, d, n[k])
        if compact:
            V = V[(0,) * (k - 1)]  # (R_k[, R_{k+1}], n)
            if last:
                cores.append(B.reshape(V, (R[k - 1], n[k], 1)))
            else:
                cores.append(B.transpose(V, (0, 2, 1)))
            continue
        Pk = prod(R[:k])
        if last:
            cores.append(B.reshape(V, (Pk, n[k], 1)))
            continue
        V = B.reshape(V, (Pk, 1, R[k], n[k]))
        eye = B.reshape(B.eye(Pk, **ctx), (Pk, Pk, 1, 1))
        G = B.reshape(eye * V, (Pk, Pk * R[k], n[k]))
        cores.append(B.transpose(G, (0, 2, 1)))
    return cores


def to_tensorly(st: SeKronTensor, *, kind: _Kind | None = None) -> Any:
    """The TensorLy CP, Tucker, TT or TR tensor equal to a SeKronTensor, where one exists.

    Parameters
    ----------
    st : SeKronTensor
    kind : {None, "cp", "tucker", "tt", "tr"}
        The TensorLy type wanted. None picks the most compact exact type (see Notes).

    Returns
    -------
    CPTensor, TuckerTensor, TTTensor or TRTensor
        Its reconstruction equals ``st.to_tensor()`` to rounding; arrays keep their kind, dtype
        and device.

    Raises
    ------
    TypeError
        If ``st`` is not a SeKronTensor.
    ValueError
        If ``kind`` is unknown, or the structure cannot be written as that type; the message
        says why (e.g. a factor spanning two modes).

    Notes
    -----
    A **chain** with one mode per factor (``shapes[k]`` holds mode k only) is a TT: the cores
    are the factors. A **nested** tensor with one mode per factor is, by ``kind=None``:

    - a **CP** of rank R when its ranks are ``(R, 1, .., 1)``;
    - else a **Tucker** when every factor 1 < k < N depends on its own rank index r_k only
      (checked by exact equality, as :func:`from_tensorly` builds it); the last factor is the
      core, with the last mode compressed by a QR when ``prod(ranks) < n_N``;
    - else a **TT**: with ranks ``(R_1..R_{N-1})`` when factor k depends on ``(r_{k-1}, r_k)``
      only and the last on r_{N-1} only, otherwise lifted to ranks ``P_k = R_1⋯R_k``.

    ``kind="cp"`` works for every nested one-mode tensor (rank ``R_1⋯R_{N-1}``); ``kind="tr"``
    writes the TT as a TR with ``q_0 = 1``. A nested tensor whose last factor holds all of modes
    S-1..N-1 and whose other factors are on modes 0..S-2 (for example Tucker-2 of a conv weight)
    is a Tucker tensor with identity factors on the modes of the last factor.

    Examples
    --------
    >>> import numpy as np, sekron, tensorly as tl
    >>> st = sekron.decompose(np.arange(24.0).reshape(2, 3, 4), [(2, 1, 1), (1, 3, 1), (1, 1, 4)],
    ...                       form="chain")
    >>> tt = sekron.to_tensorly(st)
    >>> type(tt).__name__, tt.rank
    ('TTTensor', (1, 2, 4, 1))
    >>> bool(np.allclose(tl.tt_to_tensor(tt), st.to_tensor()))
    True
    """
    if not isinstance(st, SeKronTensor):
        raise TypeError(f"st must be a SeKronTensor; got {_type_name(st)}.")
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be None or one of {_KINDS}; got {kind!r}.")
    # TensorLy's classes validate their arrays with the active backend: use the arrays' own
    with _thread_backend(st.backend):
        return _to_tensorly(st, kind)


def _to_tensorly(st: SeKronTensor, kind: _Kind | None) -> Any:
    B = get_backend(st.backend)
    name = {None: "TensorLy", "cp": "CP", "tucker": "Tucker", "tt": "TT", "tr": "TR"}[kind]
    problem = _one_mode_problem(st.shapes)

    if st.form == "chain":
        if kind in ("cp", "tucker"):
            raise ValueError(
                f"kind={kind!r}: a chain SeKronTensor converts to 'tt' or 'tr' only "
                "(its factors are TT cores)."
            )
        if problem is not None:
            raise ValueError(problem.format(kind="TT") + ".")
        n = st.shape
        cores = [
            B.transpose(B.reshape(f, (f.shape[0], f.shape[1], n[k])), (0, 2, 1))
            for k, f in enumerate(st.factors)
        ]
        return TRTensor(cores) if kind == "tr" else TTTensor(cores)

    if problem is not None:
        if kind in (None, "tucker") and _tucker_layout(st.shapes):
            if _factors_constant(st, lambda k: k if k < st.n_factors - 1 else 0):
                return _nested_to_tucker(B, st)
            raise ValueError(
                "the factors on modes 0..S-2 depend on earlier rank indices; a Tucker tensor "
                "needs factor k to depend on r_k only."
            )
        raise ValueError(problem.format(kind=name) + ".")

    S = st.n_factors
    if kind == "cp" or (kind is None and all(r == 1 for r in st.ranks[1:])):
        return _nested_to_cp(B, st)
    if kind in (None, "tucker"):
        tucker_ok = S >= 3 and _factors_constant(st, lambda k: k if k < S - 1 else 0)
        if tucker_ok or (S == 2 and kind == "tucker"):
            return _nested_to_tucker(B, st)
        if kind == "tucker":
            raise ValueError(
                "a factor 1 <= k < S-1 depends on earlier rank indices; a Tucker tensor needs "
                "factor k to depend on r_k only. Use kind='tt' or 'cp'."
            )
    compact = _factors_constant(st, lambda k: k - 1 if k < S - 1 else S - 2)
    cores = _nested_to_tt(B, st, compact)
    return TRTensor(cores) if kind == "tr" else TTTensor(cores)
