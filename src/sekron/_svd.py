"""Batched truncated SVD kernels with exact discarded energy.

Each kernel takes a stack ``X`` of shape (P, m, n) and a cap K, and returns

- ``U`` (P, m, K) with orthonormal columns,
- ``Y = Uᵀ X`` (P, K, n), i.e. ``diag(σ) Vᵀ`` (the scale stays in the remainder),
- ``sig2`` (P, K) numpy float64: the kept squared singular values, descending,
- ``rest2`` (P,) numpy float64: the squared Frobenius norm discarded beyond K.

``X ≈ U Y`` with ``||X - U Y||² = rest2`` exactly (up to rounding): every kernel projects X
onto an orthonormal basis, so the discarded energy is ``||X||² - ||UᵀX||²``. Full matrices are
never formed, and K is capped at ``min(m, n)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

import numpy as np

from ._backend import eps, like, sq_norm, to_numpy
from ._typing import SVDMethod

METHODS: tuple[str, ...] = get_args(SVDMethod)
# "auto" switches to the Gram path for levels at least this large and this rectangular
GRAM_MIN_SIZE = 1 << 12
GRAM_MIN_ASPECT = 4
# the Gram path's discarded energy must exceed this many times m·eps·||X||² to be trusted
GRAM_RELIABLE = 1e3
RANDOMIZED_OVERSAMPLE = 10
RANDOMIZED_POWER_ITERS = 2


class Level(NamedTuple):
    U: Any
    Y: Any
    sig2: np.ndarray
    rest2: np.ndarray


def _np64(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float64)


def _transpose(B: Any, x: Any) -> Any:
    return B.transpose(x, (0, 2, 1))


def _exact(B: Any, X: Any, k: int) -> Level:
    U, s, Vh = B.svd(X, full_matrices=False)
    s2 = _np64(s) ** 2
    Y = B.reshape(s[:, :k], (s.shape[0], k, 1)) * Vh[:, :k, :]
    return Level(U[:, :, :k], Y, s2[:, :k], s2[:, k:].sum(axis=1))


def _gram(B: Any, X: Any, k: int) -> Level:
    """Eigen-decomposition of X Xᵀ (wide X) or XᵀX (tall X): no copy of X is made.

    Loses relative accuracy only in singular values below ~sqrt(eps)·σ_max; their energy is
    still accounted for to ~eps·||X||². When the discarded energy is so small that this
    absolute accuracy would not give it to rounding, the level is redone by the exact SVD.
    """
    m, n = X.shape[1], X.shape[2]
    if m <= n:
        G = B.matmul(X, _transpose(B, X))
        w, V = B.eigh(G)
        w_np = np.clip(_np64(w)[:, ::-1], 0.0, None)
        rest2 = w_np[:, k:].sum(axis=1)
        if k < m and np.any(rest2 < GRAM_RELIABLE * m * eps(X) * w_np.sum(axis=1)):
            return _exact(B, X, k)
        U = B.flip(V, axis=2)[:, :, :k]
        Y = B.matmul(_transpose(B, U), X)
        return Level(U, Y, w_np[:, :k], rest2)
    # tall: orthonormal basis of the column space from the right singular vectors
    G = B.matmul(_transpose(B, X), X)
    w, V = B.eigh(G)
    w_np = np.clip(_np64(w)[:, ::-1], 0.0, None)
    Vk = B.flip(V, axis=2)[:, :, :k]
    XV = B.matmul(X, Vk)
    U, _ = B.qr(XV)  # re-orthonormalise: exact projection even for tiny singular values
    Y = B.matmul(_transpose(B, U), X)
    kept = sq_norm(Y, batch=True)
    total = sq_norm(X, batch=True)
    rest2 = np.clip(total - kept, 0.0, None)
    if k < n and np.any(rest2 < GRAM_RELIABLE * n * eps(X) * total):
        return _exact(B, X, k)
    return Level(U, Y, w_np[:, :k], rest2)


def _randomized(B: Any, X: Any, k: int, rng: np.random.Generator) -> Level:
    """Halko-Martinsson-Tropp range finder with power iterations, batched over P."""
    P, m, n = X.shape
    width = min(k + RANDOMIZED_OVERSAMPLE, m, n)
    omega = like(rng.standard_normal((P, n, width)), X)
    Q, _ = B.qr(B.matmul(X, omega))
    for _ in range(RANDOMIZED_POWER_ITERS):
        Z, _ = B.qr(B.matmul(_transpose(B, X), Q))
        Q, _ = B.qr(B.matmul(X, Z))
    small = B.matmul(_transpose(B, Q), X)  # (P, width, n)
    Ub, s, Vh = B.svd(small, full_matrices=False)
    s2 = _np64(s) ** 2
    U = B.matmul(Q, Ub[:, :, :k])
    Y = B.reshape(s[:, :k], (P, k, 1)) * Vh[:, :k, :]
    total = sq_norm(X, batch=True)
    return Level(U, Y, s2[:, :k], np.clip(total - s2[:, :k].sum(axis=1), 0.0, None))


def truncated_svd(B: Any, X: Any, cap: int, method: SVDMethod, rng: np.random.Generator) -> Level:
    """Batched truncated SVD of X (P, m, n) keeping ``min(cap, m, n)`` components."""
    m, n = X.shape[1], X.shape[2]
    k = min(cap, m, n)
    if method == "exact":
        return _exact(B, X, k)
    if method == "gram":
        return _gram(B, X, k)
    if method == "randomized":
        if 2 * k >= min(m, n):  # a sketch this wide costs more than the exact SVD
            return _exact(B, X, k)
        return _randomized(B, X, k, rng)
    size = X.shape[0] * m * n
    if size >= GRAM_MIN_SIZE and max(m, n) >= GRAM_MIN_ASPECT * min(m, n):
        return _gram(B, X, k)
    return _exact(B, X, k)
