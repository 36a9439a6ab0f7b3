"""Running independent pieces of work on an executor: local by default, or a cluster engine.

sekron has no scheduler of its own. Its independent pieces (the layers of ``compress``, the
families of ``compare``, groups of configurations in ``search``) run either in a plain loop in
this process (``executor=None``, the default) or on any ``concurrent.futures.Executor``:
a ``ThreadPoolExecutor``, a ``ProcessPoolExecutor``, or a Dask cluster through
``dask.distributed.Client(...).get_executor()``.

Large objects shared by every task (a weight tensor) go in ``shared``. On Dask they are scattered
to the workers once (``Client.scatter``, broadcast so that a lost worker loses no data), and every
task refers to them by key; any other executor receives them as they are. On Dask, items, shared
values and results travel as plain pickles (:class:`Pickled`): Dask's own serializer of
``torch.nn.Module`` objects breaks them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import (
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    TimeoutError,
    as_completed,
)
from contextlib import closing
from typing import Any, TypeVar

__all__ = ["check_executor", "iter_completed", "map_ordered"]

T = TypeVar("T")
R = TypeVar("R")

_NO_SHARED: Mapping[str, Any] = {}


def check_executor(executor: object, name: str = "executor") -> Executor | None:
    """``executor`` if it is None or a ``concurrent.futures.Executor``; TypeError otherwise.

    Dask's ``Client`` is not an Executor itself; its ``get_executor()`` is, and the message
    says so.
    """
    if executor is None or isinstance(executor, Executor):
        return executor
    kind = type(executor)
    hint = ""
    if kind.__name__ == "Client" and kind.__module__.startswith("distributed"):
        hint = " For a Dask cluster pass client.get_executor()."
    raise TypeError(
        f"{name} must be None (run locally) or a concurrent.futures.Executor; got "
        f"{kind.__module__}.{kind.__qualname__}.{hint}"
    )


def _dask_client(executor: Executor) -> Any:
    """The Dask client behind ``executor``, or None when it is not Dask's ClientExecutor."""
    if "distributed" not in sys.modules:  # an executor from Dask means Dask is imported
        return None
    from distributed.cfexecutor import ClientExecutor

    return executor._client if isinstance(executor, ClientExecutor) else None


def _label(labels: Sequence[str] | None, i: int, n: int) -> str:
    return f"{labels[i]!r}" if labels is not None else f"item {i} of {n}"


def _add_label(exc: BaseException, label: str) -> None:
    """Add a note to ``exc`` naming the task it came from (its type and message unchanged)."""
    note = f"sekron: raised by the task for {label}"
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _engine_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's (a lost worker, a broken pool), not the task's own."""
    return isinstance(exc, BrokenExecutor | CancelledError) or type(exc).__module__.startswith(
        "distributed."
    )


def _local(
    fn: Callable[..., R],
    items: Sequence[T],
    shared: Mapping[str, Any],
    progress: Callable[[int, int], Any] | None,
    labels: Sequence[str] | None,
) -> list[R]:
    results = []
    n = len(items)
    for i, item in enumerate(items):
        try:
            results.append(fn(item, **shared))
        except Exception as exc:
            _add_label(exc, _label(labels, i, n))
            raise
        if progress is not None:
            progress(i + 1, n)
    return results


class Pickled:
    """An object shipped to or from a Dask worker as one pickle (cloudpickle, protocol 5).

    Dask serializes ``torch.nn.Module`` objects with a generic serializer that rebuilds their
    ``OrderedDict`` attributes as plain dicts: such a model then fails in
    ``register_forward_hook`` ("cannot create weak reference to 'dict' object"). A plain
    pickle rebuilds any object as pickle does locally. The object is unpickled once per
    process that holds this wrapper (a scattered copy serves every task of its worker).
    """

    def __init__(self, value: Any) -> None:
        import cloudpickle

        self.payload = cloudpickle.dumps(value, protocol=5)
        self._value: Any = None
        self._loaded = False

    def __getstate__(self) -> bytes:
        return self.payload

    def __setstate__(self, payload: bytes) -> None:
        self.payload, self._value, self._loaded = payload, None, False

    @property
    def value(self) -> Any:
        if not self._loaded:
            import pickle

            self._value, self._loaded = pickle.loads(self.payload), True
        return self._value


def _dask_task(fn: Callable[..., Any], item: Pickled, /, **shared: Pickled) -> Pickled:
    """``fn(item, **shared)`` on a Dask worker, its arguments and result as :class:`Pickled`."""
    return Pickled(fn(item.value, **{k: v.value for k, v in shared.items()}))


def _scatter(client: Any, shared: Mapping[str, Any]) -> dict[str, Any]:
    """``shared`` with every value replaced by the Dask future of one broadcast copy."""
    if not shared:
        return {}
    values = [Pickled(v) for v in shared.values()]
    futures = client.scatter(values, broadcast=True, hash=False)
    return dict(zip(shared.keys(), futures, strict=True))


def iter_completed(
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    executor: Executor,
    shared: Mapping[str, Any] = _NO_SHARED,
    labels: Sequence[str] | None = None,
    timeout: float | None = None,
) -> Generator[tuple[int, R], None, None]:
    """``(i, fn(items[i], **shared))`` pairs on ``executor``, in the order the tasks complete.

    Every item is submitted at once; ``shared`` as in :func:`map_ordered`. After ``timeout``
    seconds the iteration simply ends. Whenever it ends early (the timeout, a failing task, an
    exception such as KeyboardInterrupt in the consumer, or the consumer closing it), the tasks
    not done yet are cancelled. Errors are those of :func:`map_ordered`.
    """
    n = len(items)
    client = _dask_client(executor)
    kwargs = _scatter(client, shared) if client is not None else dict(shared)
    futures: list[Future[Any]] = []
    try:
        if client is None:
            futures = [executor.submit(fn, item, **kwargs) for item in items]
        else:
            futures = [executor.submit(_dask_task, fn, Pickled(x), **kwargs) for x in items]
        index = {id(f): i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures, timeout=timeout):
                i = index[id(future)]
                result = _result(future, _label(labels, i, n))
                yield i, (result if client is None else result.value)
        except TimeoutError:
            return
    finally:
        for f in futures:
            f.cancel()
        if client is not None and kwargs:
            client.cancel(list(kwargs.values()))


_CANCELLED = (
    "the engine cancelled it (on Dask: its shared inputs were lost with the workers that held "
    "them, or the cluster was shut down)"
)


def _result(future: Future[Any], label: str) -> Any:
    """``future.result()``, its error labelled (an engine's failure as a RuntimeError)."""
    try:
        return future.result()
    except Exception as exc:
        if _engine_failure(exc):
            why = str(exc) or (_CANCELLED if isinstance(exc, CancelledError) else "")
            raise RuntimeError(
                f"the executor failed to run the task for {label}: {type(exc).__name__}: {why}"
            ) from exc
        _add_label(exc, label)
        raise


def map_ordered(
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    executor: Executor | None,
    shared: Mapping[str, Any] = _NO_SHARED,
    progress: Callable[[int, int], Any] | None = None,
    labels: Sequence[str] | None = None,
) -> list[R]:
    """``[fn(item, **shared) for item in items]``, on ``executor``, in input order.

    Parameters
    ----------
    fn : callable
        A top-level (picklable) function ``fn(item, **shared)``.
    items : sequence
        One task per item.
    executor : concurrent.futures.Executor or None
        None runs a plain loop in this process. Otherwise every item is submitted at once and the
        results are put back in input order, whatever order they complete in.
    shared : mapping of str to object, optional
        Keyword arguments common to every task. On a Dask ``ClientExecutor`` they are scattered
        to the workers once (broadcast) and the tasks refer to them; any other executor receives
        them as they are.
    progress : callable, optional
        ``progress(done, total)`` after each result arrives.
    labels : sequence of str, optional
        One name per item (a layer name), used in error messages; by default ``item i of n``.

    Returns
    -------
    list
        ``fn``'s results in the order of ``items``.

    Raises
    ------
    Exception
        The first failing task's exception, re-raised as it is with a note naming the item's
        label; the pending tasks are cancelled.
    RuntimeError
        When the engine itself loses a task (a worker died too often, a process pool broke, the
        task was cancelled by the engine), naming the item's label; it chains the engine's error.
    KeyboardInterrupt
        Cancels the pending tasks and propagates.
    """
    if executor is None:
        return _local(fn, items, shared, progress, labels)
    n = len(items)
    results: dict[int, R] = {}
    tasks = iter_completed(fn, items, executor=executor, shared=shared, labels=labels)
    with closing(tasks):  # cancels what is pending when anything here raises
        for i, result in tasks:
            results[i] = result
            if progress is not None:
                progress(len(results), n)
    return [results[i] for i in range(n)]
