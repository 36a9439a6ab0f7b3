"""sekron._executor: local loop, thread and process pools, and a real Dask LocalCluster."""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from sekron._executor import check_executor, map_ordered


def _weighted(item: int, *, weights: np.ndarray) -> float:
    """A task whose later items finish first, so completion order is the reverse of input."""
    time.sleep(0.02 * (4 - item % 5))
    return float(item * weights.sum())


def _fails_on_three(item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item} is bad")
    return item


def _held_by_worker(item: int, *, weights: np.ndarray) -> bool:
    """Whether ``weights`` is the very object in the worker's memory (scattered), not a copy
    deserialized with this task's arguments."""
    from distributed import get_worker

    return any(getattr(value, "value", None) is weights for value in get_worker().data.values())


def _process_pool() -> ProcessPoolExecutor:
    """Two worker processes, spawned: forking a process that runs JAX's threads warns (and
    may deadlock)."""
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))


def test_check_executor_accepts_none_and_executors() -> None:
    assert check_executor(None) is None
    with ThreadPoolExecutor(1) as pool:
        assert check_executor(pool) is pool


def test_check_executor_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^executor must be None \(run locally\) or a "):
        check_executor(4)
    with pytest.raises(TypeError, match=r"^pool must be .* got builtins\.str\.$"):
        check_executor("dask", "pool")


def test_check_executor_points_a_dask_client_to_get_executor(dask_client) -> None:
    with pytest.raises(TypeError, match=r"pass client\.get_executor\(\)\.$"):
        check_executor(dask_client)


def _run_all(executor) -> list[float]:
    weights = np.arange(6.0)
    seen: list[tuple[int, int]] = []
    out = map_ordered(
        _weighted,
        list(range(10)),
        executor=executor,
        shared={"weights": weights},
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(k, 10) for k in range(1, 11)]
    return out


def test_results_in_input_order_on_every_executor(dask_client) -> None:
    expected = [15.0 * i for i in range(10)]
    assert _run_all(None) == expected
    with ThreadPoolExecutor(3) as pool:
        assert _run_all(pool) == expected
    with _process_pool() as pool:
        assert _run_all(pool) == expected
    assert _run_all(dask_client.get_executor()) == expected


def test_empty_items() -> None:
    with ThreadPoolExecutor(2) as pool:
        assert map_ordered(math.sqrt, [], executor=pool) == []
    assert map_ordered(math.sqrt, [], executor=None) == []


@pytest.mark.parametrize("kind", ["local", "threads", "processes", "dask"])
def test_a_failing_task_keeps_its_type_and_names_its_label(kind: str, dask_client) -> None:
    labels = [f"layer{i}" for i in range(6)]

    def run(executor) -> None:
        map_ordered(_fails_on_three, list(range(6)), executor=executor, labels=labels)

    with pytest.raises(ValueError, match=r"^item 3 is bad") as info:
        if kind == "local":
            run(None)
        elif kind == "threads":
            with ThreadPoolExecutor(2) as pool:
                run(pool)
        elif kind == "processes":
            with _process_pool() as pool:
                run(pool)
        else:
            run(dask_client.get_executor())
    assert info.value.__notes__ == ["sekron: raised by the task for 'layer3'"]


def test_default_label_is_the_item_index() -> None:
    with pytest.raises(ValueError) as info:
        map_ordered(_fails_on_three, list(range(5)), executor=None)
    assert info.value.__notes__ == ["sekron: raised by the task for item 3 of 5"]


def test_shared_values_are_scattered_to_dask_once(dask_client, monkeypatch) -> None:
    calls: list[int] = []
    scatter = dask_client.scatter

    def counting_scatter(data, **kwargs):
        calls.append(len(data))
        return scatter(data, **kwargs)

    monkeypatch.setattr(dask_client, "scatter", counting_scatter)
    weights = np.ones((64, 64))
    held = map_ordered(
        _held_by_worker,
        list(range(8)),
        executor=dask_client.get_executor(),
        shared={"weights": weights},
    )
    assert calls == [1]  # one scatter call, of the one shared value, for all 8 tasks
    assert held == [True] * 8  # every task read the worker's stored copy


def _scheduler_keys(client) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))


def _wait_for_keys(client, keys: set[str]) -> set[str]:
    """The scheduler's keys once they are a subset of ``keys`` (releases arrive asynchronously),
    or after 10 s."""
    deadline = time.monotonic() + 10
    while not (now := _scheduler_keys(client)) <= keys and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def test_shared_values_are_released_after_the_run(dask_client) -> None:
    before = _scheduler_keys(dask_client)
    ex = dask_client.get_executor()
    map_ordered(_weighted, [0, 1], executor=ex, shared={"weights": np.ones(3)})
    assert _wait_for_keys(dask_client, before) <= before


_started: list[int] = []


def _slow(item: int) -> int:
    _started.append(item)
    time.sleep(0.05)
    return item


def _interrupt(done: int, total: int) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_cancels_the_pending_tasks_locally_and_on_threads() -> None:
    _started.clear()
    with pytest.raises(KeyboardInterrupt):
        map_ordered(_slow, list(range(10)), executor=None, progress=_interrupt)
    assert _started == [0]
    _started.clear()
    with ThreadPoolExecutor(1) as pool, pytest.raises(KeyboardInterrupt):
        map_ordered(_slow, list(range(10)), executor=pool, progress=_interrupt)
    assert len(_started) <= 2  # the first result, and at most the one running when it arrived


def test_ctrl_c_cancels_the_pending_tasks_on_dask(dask_client) -> None:
    before = _scheduler_keys(dask_client)
    with pytest.raises(KeyboardInterrupt):
        map_ordered(
            _slow, list(range(40)), executor=dask_client.get_executor(), progress=_interrupt
        )
    assert _wait_for_keys(dask_client, before) <= before  # nothing left queued or running


def _hooked_copy(item: object, *, model: object) -> object:
    import copy

    model.register_forward_hook(lambda *args: None)  # type: ignore[attr-defined]
    return copy.deepcopy(model)


def test_torch_modules_travel_to_and_from_dask_whole(dask_client) -> None:
    # Dask's own serializer rebuilds a module's OrderedDicts as dicts: hooks then fail with
    # "cannot create weak reference to 'dict' object" on the worker and back here
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    out = map_ordered(
        _hooked_copy, [0, 1], executor=dask_client.get_executor(), shared={"model": model}
    )
    for copy_ in out:
        copy_.register_forward_hook(lambda *args: None)
        assert all(
            torch.equal(a, b)
            for a, b in zip(copy_.state_dict().values(), model.state_dict().values(), strict=True)
        )
