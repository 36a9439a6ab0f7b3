"""Parallelism of a numpy search: worker threads, single-threaded BLAS, splitting stacks.

Many small factorizations run faster side by side than each on a multi-threaded BLAS, whose
threads cost more than they save on small products and, on a busy machine, can make a search
many times slower (measured: 26x). scikit-learn's KMeans limits BLAS the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["InOrder", "Workers", "blas_threads", "workers"]

#: Work (multiply-adds of a Gram stack, cubed sizes of an eigenvalue stack) below which a stack
#: is not split across worker threads: dispatching costs more than it saves.
PARALLEL_MIN_SIZE = 1 << 20


class InOrder:
    """A stand-in for a thread pool that runs every call in the calling thread, in order: with
    it, :class:`Workers` splits work exactly as ``n`` threads would (the same results to the
    bit) on one core, which is what a task on a cluster worker gets."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        return map(fn, items)


class Workers:
    """Worker threads (or none: everything runs in the calling thread)."""

    def __init__(self, pool: ThreadPoolExecutor | InOrder | None = None, n: int = 1) -> None:
        self.pool = pool
        self.n = n if pool is not None else 1

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        """``fn`` over items, in order; on the worker threads when there are."""
        return self.pool.map(fn, items) if self.pool is not None else map(fn, items)

    def split(self, n: int) -> list[tuple[int, int]]:
        """``[lo, hi)`` ranges cutting ``range(n)`` into at most one chunk per worker."""
        k = min(self.n, n)
        edges = [n * i // k for i in range(k + 1)]
        return [(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False) if hi > lo]

    def worth_splitting(self, work: int) -> bool:
        """Whether a job of ``work`` multiply-adds is worth spreading over the workers."""
        return self.pool is not None and work >= PARALLEL_MIN_SIZE


def blas_threads(n: int) -> Any:
    """A context limiting numpy's BLAS to ``n`` threads in this process, restored on exit
    (threadpoolctl). With ``n=1`` a factorization gives the same bits wherever it runs, here
    or on a cluster worker, and a busy machine cannot slow it by thread contention."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def workers(threads: int, backend: str, in_order: bool = False) -> Iterator[Workers]:
    """numpy's BLAS single-threaded; for a numpy search ``threads`` worker threads if > 1 (with
    ``in_order``, work split as for them but run in the calling thread: see :class:`InOrder`).

    torch and jax inputs run in the calling thread with their own threading; their Grams'
    eigenvalue problems are numpy's, so BLAS is limited for them too (with two BLAS threads on
    a busy 2-core machine, compressing the digits CNN's largest layer took 70 s instead of
    14 s). The caller's BLAS setting is restored on exit.
    """
    with blas_threads(1):
        if backend != "numpy" or threads < 2:
            yield Workers()
            return
        if in_order:
            yield Workers(InOrder(), threads)
            return
        with ThreadPoolExecutor(threads) as pool:
            yield Workers(pool, threads)
