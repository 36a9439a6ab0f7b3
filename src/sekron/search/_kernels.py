"""The array work of a search: Grams, eigenvalues, level-1 spectra and remainders, deeper levels.

Everything returns float64 numpy tables of squared singular values; the configurations and
their bookkeeping live in :mod:`sekron.search._phases`.

- :class:`Kernels` holds the backend, the SVD method and the worker threads, and computes
  Grams and their eigenvalues (split across the workers when worth it).
- :class:`Level1` computes the level-1 spectrum of R(W) for ``(a | w / a)`` once per first
  factor ``a`` and keeps the remainders ``Uᵀ X`` of the most recent first factors.
- :func:`nested_values` and :func:`chain_error2` score one configuration from them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from math import prod
from typing import Any

import numpy as np

from .. import _ranks
from .._backend import backend_name_of, eps, like, numpy_dtype, sq_norm, to_numpy
from .._plan import rearrange_plan
from .._rearrange import rearrange_unchecked
from .._svd import GRAM_RELIABLE, truncated_svd
from .._tree import NestedTree
from .._typing import Ranks, Shapes, SVDMethod
from ._parallel import Workers

__all__ = [
    "Kernels",
    "Level1",
    "Spectrum",
    "chain_error2",
    "level2_grams",
    "nested_values",
    "on_device",
]

#: Bytes of level-1 singular vectors kept from the spectra until their configurations are
#: evaluated; beyond this they are recomputed.
VEC_CACHE_BYTES = 512 << 20
#: Memory for level-1 spectra computed at once on worker threads (each holds a rearranged
#: copy of the tensor and a Gram matrix).
SPECTRA_BYTES = 1 << 30

#: ``give_up(level1_tail, sv2) -> bool``: abandon a nested tree after some level-2 branches
GiveUp = Callable[[np.ndarray, np.ndarray], bool]


def _gram(B: Any, X: Any, rows: bool) -> np.ndarray:
    """Grams of a stack X (P, m, n) as float64 numpy: ``X Xᵀ`` if ``rows``, else ``Xᵀ X``."""
    Xt = B.transpose(X, (0, 2, 1))
    return np.asarray(to_numpy(B.matmul(X, Xt) if rows else B.matmul(Xt, X)), dtype=np.float64)


def _svd_values2(B: Any, X: Any) -> np.ndarray:
    """Squared singular values of a stack X (P, m, n) from a thin SVD, descending."""
    return np.asarray(to_numpy(B.svd(X, full_matrices=False)[1]), dtype=np.float64) ** 2


def _eigvals_desc(G: np.ndarray) -> np.ndarray:
    """Eigenvalues of a stack of symmetric PSD Grams (P, m, m), descending, clipped at 0."""
    return np.clip(np.linalg.eigvalsh(G)[:, ::-1], 0.0, None)


def on_device(t: Any) -> bool:
    """Whether a search of ``t`` solves its Gram eigenvalue problems on the tensor's device
    (a torch tensor on a CUDA GPU): the Grams stay there, only eigenvalues come back."""
    device = getattr(t, "device", None)
    return backend_name_of(t) == "pytorch" and getattr(device, "type", "cpu") == "cuda"


def _device_gram(B: Any, X: Any, rows: bool) -> Any:
    """Grams of a stack X (P, m, n) on X's device, in float64 (the numpy path's precision)."""
    import torch

    Xt = B.transpose(X, (0, 2, 1))
    G = B.matmul(X, Xt) if rows else B.matmul(Xt, X)
    return G.to(dtype=torch.float64)


def _device_eigvals_desc(G: Any) -> np.ndarray:
    """:func:`_eigvals_desc` of a stack of torch Grams, solved on their device (batched
    ``torch.linalg.eigvalsh``); the eigenvalues come back as float64 numpy."""
    import torch

    return np.clip(to_numpy(torch.linalg.eigvalsh(G)).astype(np.float64)[:, ::-1], 0.0, None)


class Kernels:
    """The backend, SVD method and workers of one search, and the time spent in its kernels."""

    def __init__(
        self,
        B: Any,
        svd: SVDMethod,
        rng: np.random.Generator,
        workers: Workers,
        device: bool = False,
    ) -> None:
        self.B, self.svd, self.rng, self.workers = B, svd, rng, workers
        self.device = device  # Grams and their eigenvalues on the tensors' device (on_device)
        self.seconds = 0.0  # wall time inside SVD / Gram / eigenvalue kernels
        self._depth = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the enclosed wall time in :attr:`seconds` (once, however deeply nested)."""
        self._depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - t0

    def grams(self, X: Any) -> np.ndarray:
        """Smaller-side Grams of a stack X (P, m, n) as float64 numpy (P, s, s), s = min(m, n).

        With worker threads the stack is split across them, or for a single matrix the long
        side is, as a sum of partial Grams.
        """
        m, n = X.shape[1], X.shape[2]
        B, pool = self.B, self.workers

        def gram(Z: Any) -> np.ndarray:  # the side is X's, also for a chunk of its long side
            return _gram(B, Z, m <= n)

        P = X.shape[0]
        with self.timed():
            if not pool.worth_splitting(P * m * n * min(m, n)):
                return gram(X)
            if P >= pool.n:
                return np.concatenate(list(pool.map(gram, [X[lo:hi] for lo, hi in pool.split(P)])))
            if m <= n:
                parts = [X[:, :, lo:hi] for lo, hi in pool.split(n)]
            else:
                parts = [X[:, lo:hi, :] for lo, hi in pool.split(m)]
            return sum(pool.map(gram, parts))

    def eigvals(self, G: np.ndarray) -> np.ndarray:
        """:func:`_eigvals_desc` of a stack of Grams, split across the worker threads."""
        P, pool = G.shape[0], self.workers
        with self.timed():
            if P < 2 or not pool.worth_splitting(P * G.shape[1] ** 3):
                return _eigvals_desc(G)
            chunks = [G[lo:hi] for lo, hi in pool.split(P)]
            return np.concatenate(list(pool.map(_eigvals_desc, chunks)))

    def values2(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """All squared singular values of a stack X (P, m, n), descending, as float64 numpy;
        and the column-side Grams ``XᵀX`` when it formed them (else None).

        ``"auto"``/``"gram"``: eigenvalues of the smaller Gram matrix; otherwise a thin SVD.
        """
        if self.svd in ("auto", "gram"):
            tall = X.shape[1] > X.shape[2]
            if self.device:
                with self.timed():
                    D = _device_gram(self.B, X, not tall)
                    return _device_eigvals_desc(D), (to_numpy(D) if tall else None)
            G = self.grams(X)
            return self.eigvals(G), (G if tall else None)
        with self.timed():
            return _svd_values2(self.B, X), None

    def truncated(self, X: Any, cap: int) -> Any:
        """:func:`sekron._svd.truncated_svd` with this search's method."""
        with self.timed():
            return truncated_svd(self.B, X, cap, self.svd, self.rng)


class Spectrum:
    """Squared singular values of R(W) for ``(a | w / a)``: kept σ² and the energy beyond."""

    __slots__ = ("sig2", "rest2", "cap", "_tail")

    def __init__(self, sig2: np.ndarray, rest2: float) -> None:
        self.sig2, self.rest2, self.cap = sig2, rest2, int(sig2.shape[0])
        # _tail[R-1] = best squared error at rank R (R = 1..cap), then 0 past the cap
        self._tail = np.concatenate([_ranks.tail(sig2, np.asarray(rest2)), [0.0]])

    def tail(self, length: int) -> np.ndarray:
        """``tail[R-1]``: squared error of the best rank-R approximation, R = 1..length."""
        return self._tail[: min(length, self.cap)]

    def tails_at(self, r: np.ndarray) -> np.ndarray:
        """Best squared errors at ranks r (a lower bound, 0, past the computed cap)."""
        return self._tail[np.minimum(r, self.cap + 1) - 1]

    def tail_at(self, r: int) -> float:
        """Best squared error at rank r (a lower bound, 0, past the computed cap)."""
        return float(self._tail[min(r, self.cap + 1) - 1])


class Level1:
    """The level-1 spectra of one tensor, shared by every configuration, and their remainders.

    ``need[a]`` is the largest rank any configuration starting with ``a`` can afford; for the
    ``heads`` (first factors of configurations with S >= 3) the spectrum's Gram eigenvectors
    are kept (up to :data:`VEC_CACHE_BYTES`) so that :meth:`remainders` needs no second Gram.
    """

    def __init__(
        self,
        t: Any,
        kern: Kernels,
        need: dict[tuple[int, ...], int],
        heads: set[Any],
        norm2: float | None = None,
    ) -> None:
        self.t, self.kern, self.need, self.heads = t, kern, need, heads
        self.shape = tuple(int(s) for s in t.shape)
        self.numel = prod(self.shape)
        self.norm2 = float(sq_norm(t)) if norm2 is None else norm2
        self.spectra: dict[tuple[int, ...], Spectrum] = {}
        self._vecs: dict[tuple[int, ...], tuple[bool, Any, np.ndarray]] = {}
        self._vec_bytes = 0
        self._y_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def matrix(self, a: tuple[int, ...]) -> Any:
        """R(W) for ``(a | w / a)`` as a stack of one matrix (1, |a|, numel / |a|)."""
        B = self.kern.B
        b = tuple(w // x for w, x in zip(self.shape, a, strict=True))
        X = rearrange_unchecked(B, self.t, (a, b))
        return B.reshape(X, (1, prod(a), prod(b)))

    def compute(self, on_done: Callable[[], Any]) -> None:
        """Every needed spectrum, largest first, as many at once as fit :data:`SPECTRA_BYTES`
        (each holds a rearranged copy of the tensor and its Gram); ``on_done`` after each."""
        todo = sorted(self.need, key=lambda a: (-prod(a), a))
        pool = self.kern.workers
        itemsize = numpy_dtype(self.t.dtype).itemsize
        at_once = max(1, min(pool.n, SPECTRA_BYTES // (2 * self.numel * itemsize)))
        for i in range(0, len(todo), at_once):
            batch = todo[i : i + at_once]
            with self.kern.timed():
                works = list(pool.map(self._spectrum_work, batch))
            for a, work in zip(batch, works, strict=True):
                self._store(a, work)
                on_done()

    def _spectrum_work(self, a: tuple[int, ...]) -> tuple[Any, ...]:
        """The spectrum of ``(a | w / a)``, touching no state (runs in worker threads)."""
        B, X, svd, cap = self.kern.B, self.matrix(a), self.kern.svd, self.need[a]
        if svd == "randomized":
            level = truncated_svd(B, X, cap, "randomized", self.kern.rng)
            return np.asarray(level.sig2[0]), float(level.rest2[0]), None
        if svd == "exact":
            return _svd_values2(B, X)[0], 0.0, None
        m, n = X.shape[1], X.shape[2]
        if self.kern.device:
            return self._device_spectrum(a, X, cap)
        G = _gram(B, X, m <= n)[0]
        if a not in self.heads:
            return _eigvals_desc(G[None])[0], 0.0, None
        w, V = np.linalg.eigh(G)
        sig2 = np.clip(w[::-1], 0.0, None)
        size = sig2.shape[0]
        k = min(cap, size)
        # the Gram's vectors are trusted as _svd._gram trusts them: unless what lies beyond
        # the cap is too small for the Gram's absolute accuracy (then remainders recomputes)
        if k < size and sig2[k:].sum() < GRAM_RELIABLE * size * eps(X) * sig2.sum():
            return sig2, 0.0, None
        return sig2, 0.0, (m <= n, like(np.ascontiguousarray(V[:, ::-1][:, :k]), X), sig2[:k])

    def _device_spectrum(self, a: tuple[int, ...], X: Any, cap: int) -> tuple[Any, ...]:
        """:meth:`_spectrum_work`'s Gram kernel on the tensor's device: the Gram and its
        eigenproblem stay there; the kept vectors too (in the tensor's dtype)."""
        import torch

        m, n = X.shape[1], X.shape[2]
        G = _device_gram(self.kern.B, X, m <= n)
        if a not in self.heads:
            return _device_eigvals_desc(G)[0], 0.0, None
        w, V = torch.linalg.eigh(G[0])
        sig2 = np.clip(to_numpy(w).astype(np.float64)[::-1], 0.0, None)
        size = sig2.shape[0]
        k = min(cap, size)
        if k < size and sig2[k:].sum() < GRAM_RELIABLE * size * eps(X) * sig2.sum():
            return sig2, 0.0, None
        kept = V.flip(-1)[:, :k].to(dtype=X.dtype).contiguous()
        return sig2, 0.0, (m <= n, kept, sig2[:k])

    def _store(self, a: tuple[int, ...], work: tuple[Any, ...]) -> None:
        sig2, rest2, kept = work
        self.spectra[a] = Spectrum(sig2, rest2)
        if kept is not None:
            nbytes = int(np.prod(kept[1].shape)) * 8
            if self._vec_bytes + nbytes <= VEC_CACHE_BYTES:
                self._vecs[a] = kept
                self._vec_bytes += nbytes

    def kept_vectors(self, a: tuple[int, ...]) -> tuple[bool, Any, np.ndarray] | None:
        """The Gram eigenvectors kept with the spectrum of ``a`` (None if there are none)."""
        return self._vecs.get(a)

    def restore(
        self, spectra: dict[tuple[int, ...], Spectrum], vecs: dict[tuple[int, ...], Any]
    ) -> None:
        """Take the spectra (and kept vectors) computed by another Level1 of the same tensor."""
        self.spectra, self._vecs = spectra, dict(vecs)

    def remainders(self, a: tuple[int, ...], rank: int) -> Any:
        """``Y = Uᵀ X`` (rank, numel / |a|): the level-1 remainders, rows as tensors of w / a.

        From the vectors kept with the spectrum when there are: ``Uᵀ X`` for a wide unfolding
        (U from ``X Xᵀ``), ``diag(σ) Vᵀ`` for a tall one (V from ``Xᵀ X``: no product with X).
        """
        if a in self._y_cache and self._y_cache[a].shape[0] >= rank:
            self._y_cache.move_to_end(a)
            return self._y_cache[a][:rank]
        with self.kern.timed():
            Y = self._remainders(a, rank)
        self._y_cache[a] = Y
        if len(self._y_cache) > 2:
            self._y_cache.popitem(last=False)
        return Y[:rank]

    def _remainders(self, a: tuple[int, ...], rank: int) -> Any:
        B, pool = self.kern.B, self.kern.workers
        kept = self._vecs.pop(a, None)
        if kept is not None:
            self._vec_bytes -= int(np.prod(kept[1].shape)) * 8
        if kept is None or kept[1].shape[1] < rank:
            method = "gram" if self.kern.svd == "auto" else self.kern.svd
            cap = max(self.need[a], rank)
            return truncated_svd(B, self.matrix(a), cap, method, self.kern.rng).Y[0]
        wide, V, sig2 = kept
        if not wide:
            return like(np.sqrt(sig2)[:, None], V) * B.transpose(V, (1, 0))
        X, Vt = self.matrix(a)[0], B.transpose(V, (1, 0))
        if pool.pool is None:
            return B.matmul(Vt, X)
        # numpy: the columns split across the worker threads
        cols = pool.split(X.shape[1])
        return np.concatenate(list(pool.map(lambda c: Vt @ X[:, c[0] : c[1]], cols)), axis=1)


def _rest_tensor(B: Any, shapes: Shapes, Y: Any) -> Any:
    """Rows of Y (tensors of shape w / a1) rearranged by (a2..aS): (P, d2, d3..dS)."""
    rest_shapes = shapes[1:]
    P = Y.shape[0]
    if len(rest_shapes) == 1:
        return B.reshape(Y, (P, -1))
    split, perm, out = rearrange_plan(rest_shapes)
    Z = B.reshape(Y, (P, *split))
    Z = B.transpose(Z, (0, *(p + 1 for p in perm)))
    return B.reshape(Z, (P, *out))


def nested_values(
    level1: Level1, shapes: Shapes, d: Sequence[int], caps: Ranks, give_up: GiveUp | None
) -> tuple[NestedTree | None, np.ndarray | None]:
    """The singular values of the nested SVD tree at ``caps`` (level 1 from the spectra), and
    for S = 3 the level-2 column Grams it formed (for the chain of the same shapes), or None.

    With ``give_up`` (S = 3 only), the level-2 branches are computed in growing chunks,
    largest level-1 singular value first; after each chunk ``give_up(level1_tail, sv2)``
    sees the level-1 tail and the branches so far, and returning True abandons the tree (its
    tree is then None; the Grams of the branches computed still come back).
    """
    kern, B = level1.kern, level1.kern.B
    sp = level1.spectra[shapes[0]]
    M1 = min(caps[0], sp.cap)
    sig2s = [sp.sig2[:M1].copy()]
    rest2s = [np.asarray(sp.rest2 + sp.sig2[M1:].sum())]
    Ms = [M1]
    col_grams = None
    if len(d) == 3:
        Y = level1.remainders(shapes[0], M1)
        sv2, col_grams = _level2_values(kern, Y, shapes, d, sp.tail(M1), give_up)
        if sv2 is None:
            return None, col_grams
        M = min(caps[1], sv2.shape[1])
        sig2s.append(sv2[:, :M])
        rest2s.append(sv2[:, M:].sum(axis=1))
        Ms.append(M)
    elif len(d) > 3:
        X = _rest_tensor(B, shapes, level1.remainders(shapes[0], M1))
        X = B.reshape(X, (M1, d[1], prod(d[2:])))
        for k in range(1, len(d) - 1):
            branch = tuple(Ms)
            if k == len(d) - 2:  # the last level needs singular values only
                sv2 = kern.values2(X)[0]
                M = min(caps[k], sv2.shape[1])
                sig2s.append(sv2[:, :M].reshape(*branch, M))
                rest2s.append(sv2[:, M:].sum(axis=1).reshape(branch))
                Ms.append(M)
                break
            level = kern.truncated(X, caps[k])
            M = level.sig2.shape[1]
            sig2s.append(level.sig2.reshape(*branch, M))
            rest2s.append(level.rest2.reshape(branch))
            Ms.append(M)
            X = B.reshape(level.Y, (level.Y.shape[0] * M, d[k + 1], prod(d[k + 2 :])))
    return NestedTree([], None, sig2s, rest2s, tuple(Ms), level1.norm2), col_grams


def level2_grams(level1: Level1, shapes: Shapes, d: Sequence[int], M1: int, rows: int) -> Any:
    """The column Grams of the first ``rows`` level-2 branches of an S = 3 nested tree of
    ``M1`` level-1 branches, computed exactly as :func:`nested_values` computes them when it
    gives up after that many (chunk by chunk)."""
    Y = level1.remainders(shapes[0], M1)
    tail1 = level1.spectra[shapes[0]].tail(M1)
    return _level2_values(level1.kern, Y, shapes, d, tail1, lambda _, sv2: sv2.shape[0] >= rows)[1]


def _level2_values(
    kern: Kernels,
    Y: Any,
    shapes: Shapes,
    d: Sequence[int],
    tail1: np.ndarray,
    give_up: GiveUp | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Squared singular values of the level-2 branches of an S = 3 tree (rows of Y rearranged
    by ``(a2 | a3)``), or None if ``give_up`` gave up; and their column Grams, or None.

    With ``give_up``, in chunks of 8, 16, 32, ... rows, each rearranged only when it is
    reached, asking ``give_up`` after each chunk but the last.
    """
    M1 = Y.shape[0]
    parts: list[np.ndarray] = []
    grams: list[np.ndarray] = []
    done, step = 0, (M1 if give_up is None else 8)
    while done < M1:
        hi = min(M1, done + step)
        X = kern.B.reshape(_rest_tensor(kern.B, shapes, Y[done:hi]), (hi - done, d[1], d[2]))
        sv2, G = kern.values2(X)
        parts.append(sv2)
        if G is not None:
            grams.append(G)
        done, step = hi, 2 * step
        if done < M1 and give_up is not None and give_up(tail1, np.concatenate(parts)):
            break
    col_grams = np.concatenate(grams) if len(grams) == len(parts) else None
    return (np.concatenate(parts) if done == M1 else None), col_grams


def chain_error2(
    level1: Level1,
    shapes: Shapes,
    d: Sequence[int],
    ranks: Ranks,
    col_grams: np.ndarray | None = None,
) -> float:
    """Exact squared error of TT-SVD on R(W) at ``ranks`` (level 1 from the spectra).

    ``col_grams`` (S = 3): the column Grams ``Z_rᵀ Z_r`` of the nested level-2 branches of the
    same shapes; the Gram of the chain's second unfolding Z (R_1 d_2, d_3) is their sum over
    the first R_1 branches (those beyond are formed here).
    """
    kern, B = level1.kern, level1.kern.B
    err2 = level1.spectra[shapes[0]].tail_at(ranks[0])
    if len(d) == 2:
        return err2
    if len(d) == 3 and col_grams is not None:
        have = col_grams.shape[0]
        G = col_grams[: ranks[0]].sum(axis=0)
        if have < ranks[0]:
            Y = level1.remainders(shapes[0], ranks[0])
            X = B.reshape(
                _rest_tensor(B, shapes, Y[have : ranks[0]]), (ranks[0] - have, d[1], d[2])
            )
            G = G + kern.grams(X).sum(axis=0)
        return err2 + float(kern.eigvals(G[None])[0, ranks[1] :].sum())
    X = _rest_tensor(B, shapes, level1.remainders(shapes[0], ranks[0]))
    X = B.reshape(X, (1, ranks[0] * d[1], prod(d[2:])))
    for k in range(1, len(d) - 1):
        if k == len(d) - 2:  # the last step needs singular values only
            err2 += float(kern.values2(X)[0][0, ranks[k] :].sum())
            break
        level = kern.truncated(X, ranks[k])
        err2 += float(level.rest2.sum())
        r = level.sig2.shape[1]
        X = B.reshape(level.Y, (1, r * d[k + 1], prod(d[k + 2 :])))
    return err2
