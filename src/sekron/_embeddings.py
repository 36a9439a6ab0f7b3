"""The SeKron factor layouts of TensorLy's CP, Tucker, TT and TR formats (structures docs).

With one mode per factor (``shapes[k]`` holds mode k, every other size is 1) a Kronecker product
of the factors is an outer product. These functions lay a format's arrays out as SeKron factors:
reshapes, transposes and multiplications by ones only, so the embedding is exact. Arrays keep
their kind, dtype and device. Used by :func:`sekron.from_tensorly` and
:mod:`sekron.structures`; :func:`tucker2_chain` gives Tucker-2 its equal-count chain form (the
search and ``compress`` store it that way).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

from ._typing import Shapes
from .tensor import SeKronTensor


# ----------------------------------------------------------------------------------------------
# plans: pure functions of tuples
# ----------------------------------------------------------------------------------------------
def _one_mode_shapes(tensor_shape: Sequence[int]) -> Shapes:
    """``shapes[k]`` = mode k's size at position k, 1 elsewhere (S = N factors).

    >>> _one_mode_shapes((4, 3, 2))
    ((4, 1, 1), (1, 3, 1), (1, 1, 2))
    """
    n_modes = len(tensor_shape)
    return tuple(
        tuple(int(tensor_shape[k]) if n == k else 1 for n in range(n_modes)) for k in range(n_modes)
    )


def _ctx(B: Any, x: Any) -> dict[str, Any]:
    """dtype (and torch device) of ``x``, without torch's ``requires_grad``."""
    return {k: v for k, v in B.context(x).items() if k in ("dtype", "device")}


def _expand(B: Any, x: Any, shape: tuple[int, ...]) -> Any:
    """Broadcast ``x`` (unit dims where it is constant) to ``shape`` by multiplying with ones."""
    if tuple(x.shape) == shape:
        return x
    return x * B.ones(shape, **_ctx(B, x))


def _as_mode(B: Any, x: Any, lead: tuple[int, ...], shape_k: tuple[int, ...]) -> Any:
    """``x`` of shape (*lead, n_k) reshaped to the factor layout (*lead, *shape_k)."""
    return B.reshape(x, (*lead, *shape_k))


# ----------------------------------------------------------------------------------------------
# TensorLy -> SeKron factor layouts
# ----------------------------------------------------------------------------------------------
def _cp_factors(B: Any, weights: Any, factors: Sequence[Any]) -> list[Any]:
    """CP rank R -> nested, ranks (R, 1, .., 1); weights folded into the first factor."""
    n_modes = len(factors)
    shapes = _one_mode_shapes(tuple(int(f.shape[0]) for f in factors))
    rank = int(factors[0].shape[1])
    out = []
    for k, U in enumerate(factors):
        V = B.transpose(U, (1, 0))  # (R, n_k)
        if k == 0:
            V = V * B.reshape(weights, (rank, 1))
        n_rank_dims = min(k + 1, n_modes - 1)
        out.append(_as_mode(B, V, (rank,) + (1,) * (n_rank_dims - 1), shapes[k]))
    return out


def _tucker_factors(B: Any, core: Any, factors: Sequence[Any]) -> list[Any]:
    """Tucker ranks t -> nested, ranks (t_1..t_{N-1}); the core is absorbed into the last factor."""
    n_modes = len(factors)
    shapes = _one_mode_shapes(tuple(int(f.shape[0]) for f in factors))
    t = tuple(int(f.shape[1]) for f in factors)
    out = []
    for k in range(n_modes - 1):
        V = B.transpose(factors[k], (1, 0))  # (t_k, n_k)
        V = B.reshape(V, (1,) * k + (t[k], int(factors[k].shape[0])))
        V = _expand(B, V, (*t[:k], t[k], int(factors[k].shape[0])))
        out.append(_as_mode(B, V, t[: k + 1], shapes[k]))
    # A_N[r_1..r_{N-1}] = sum_t G[r_1..r_{N-1}, t] U_N[:, t]
    P = prod(t[:-1])
    last = B.matmul(B.reshape(core, (P, t[-1])), B.transpose(factors[-1], (1, 0)))
    out.append(_as_mode(B, last, t[:-1], shapes[-1]))
    return out


def _tt_factors(B: Any, cores: Sequence[Any], form: str) -> list[Any]:
    """TT cores G_k (r_{k-1}, n_k, r_k) -> chain (identical) or nested (structures docs table)."""
    n_modes = len(cores)
    shapes = _one_mode_shapes(tuple(int(c.shape[1]) for c in cores))
    r = tuple(int(c.shape[2]) for c in cores[:-1])  # r_1..r_{N-1}
    out = []
    for k, G in enumerate(cores):
        r0, n, r1 = (int(v) for v in G.shape)
        V = B.transpose(G, (0, 2, 1))  # (r_{k-1}, r_k, n_k)
        if form == "chain":
            out.append(_as_mode(B, V, (r0, r1), shapes[k]))
        elif k == 0:
            out.append(_as_mode(B, B.reshape(V, (r1, n)), (r1,), shapes[k]))
        elif k < n_modes - 1:
            # A_k[r_1..r_k] = G_k[r_{k-1}, :, r_k], constant over r_1..r_{k-2}
            V = _expand(B, B.reshape(V, (1,) * (k - 1) + (r0, r1, n)), (*r[: k - 1], r0, r1, n))
            out.append(_as_mode(B, V, r[: k + 1], shapes[k]))
        else:
            V = B.reshape(V, (1,) * (k - 1) + (r0, n))
            out.append(_as_mode(B, _expand(B, V, (*r[: k - 1], r0, n)), r, shapes[k]))
    return out


def _tr_factors(B: Any, cores: Sequence[Any]) -> list[Any]:
    """TR cores G_k (q_k, n_k, q_{k+1}), q_N = q_0 -> nested, ranks (q_0 q_1, q_2, .., q_{N-1}).

    The first rank index fuses s = (q_0, q_1); the last factor uses q_{N-1} and the q_0 in s.
    """
    n_modes = len(cores)
    shapes = _one_mode_shapes(tuple(int(c.shape[1]) for c in cores))
    q = tuple(int(c.shape[0]) for c in cores)  # q_0..q_{N-1}
    ranks = (q[0] * q[1], *q[2:])
    n = tuple(int(c.shape[1]) for c in cores)
    out = []
    # factor 0: A_0[(a, b)] = G_0[a, :, b]
    V = B.reshape(B.transpose(cores[0], (0, 2, 1)), (ranks[0], n[0]))
    out.append(_as_mode(B, V, ranks[:1], shapes[0]))
    for k in range(1, n_modes - 1):
        # A_k[(a, b), q_2..q_{k+1}] = G_k[q_k, :, q_{k+1}]: constant over a and q_2..q_{k-1}
        V = B.transpose(cores[k], (0, 2, 1))  # (q_k, q_{k+1}, n_k)
        V = B.reshape(V, (1,) * k + (q[k], q[(k + 1) % n_modes], n[k]))
        V = _expand(B, V, (q[0], *q[1 : k + 2], n[k]))  # (a, b, q_2..q_{k+1}, n_k)
        out.append(_as_mode(B, V, ranks[: k + 1], shapes[k]))
    # last: A[(a, b), q_2..q_{N-1}] = G_{N-1}[q_{N-1}, :, a]
    k = n_modes - 1
    V = B.transpose(cores[k], (2, 0, 1))  # (q_0, q_{N-1}, n)
    if n_modes == 2:  # q_{N-1} is the b inside s
        out.append(_as_mode(B, B.reshape(V, (ranks[0], n[k])), ranks, shapes[k]))
    else:
        V = B.reshape(V, (q[0],) + (1,) * (n_modes - 2) + (q[k], n[k]))
        V = _expand(B, V, (*q, n[k]))
        out.append(_as_mode(B, V, ranks, shapes[k]))
    return out


def tucker2_chain(st: SeKronTensor) -> SeKronTensor:
    """Tucker-2's nested embedding (U_F)(U_C)(core) as the equal-count chain (U_F)(core)(U_C).

    The nested form repeats U_C for every r_1; the chain over the factor order (F), (H, W), (C)
    holds U_F, the core and U_C once each: exactly Tucker-2's own parameter count.
    """
    A1, A2, A3 = st.factors
    rf, rc = st.ranks
    first = A1.reshape((1, rf, *A1.shape[1:]))
    core = A3.reshape((rf, rc, *A3.shape[2:]))
    last = A2[0].reshape((rc, 1, *A2.shape[2:]))
    # one mode per factor: the Kronecker order of the factors does not change the tensor
    return SeKronTensor([first, core, last], "chain", rel_error=st.rel_error)
