"""sekron on an executor: the same results as the local run, on threads and on a real Dask
LocalCluster of two worker processes (the ``dask_client`` fixture in conftest.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sekron.data.digits_cnn import WEIGHTS_PATH
from sekron.search import search
from sekron.search._api import run_greedy


@pytest.fixture(scope="module")
def weight() -> np.ndarray:
    """A trained (32, 16, 3, 3) conv weight: its bounds prune and its trees are given up."""
    with np.load(WEIGHTS_PATH.with_suffix(".npz"), allow_pickle=False) as data:
        return data["features.2.weight"].astype(np.float64)


#: run_greedy's options as search() checks them by default
GREEDY: dict[str, Any] = dict(
    max_factors=3,
    forms=("nested", "chain"),
    max_configs=None,
    svd="auto",
    random_state=0,
    exhaustive=False,
    progress=False,
)


def _signature(res: Any) -> tuple[Any, ...]:
    """Everything a search reports, to the bit."""
    return (
        [(c.shapes, c.form, c.ranks, c.n_params, c.rel_error) for c in res.all],
        [(c.shapes, c.form, c.ranks, c.rel_error) for c in res.front],
        [(c.shapes, c.form, c.ranks, c.rel_error, c.source) for c in res.refined],
        (res.n_configs, res.n_pruned, res.bound, res.n_open, res.certified, res.timed_out),
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_search_on_a_dask_cluster_equals_the_local_search(weight, dask_client, threads) -> None:
    kw: dict[str, Any] = dict(
        compression=4, progress=False, threads=threads, refine=2, random_state=0
    )
    local = search(weight, **kw)
    seen: list[tuple[int, int]] = []
    on_dask = search(
        weight,
        executor=dask_client.get_executor(),
        **{**kw, "progress": seen.append and (lambda d, n: seen.append((d, n)))},
    )
    assert _signature(on_dask) == _signature(local)
    assert local.n_pruned > 0 and len(local.refined) > 0
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_search_on_threads_is_independent_of_the_number_of_workers(weight) -> None:
    kw: dict[str, Any] = dict(compression=8, progress=False, threads=1, refine=0)
    local = _signature(search(weight, **kw))
    for n in (1, 3):
        with ThreadPoolExecutor(n) as pool:
            assert _signature(search(weight, executor=pool, **kw)) == local


def test_multi_budget_greedy_run_on_an_executor_equals_the_local_run(weight) -> None:
    # compare's shared run: several budgets, so the tasks' live budgets (and trees' caps) can
    # differ from the local run's; such jobs are evaluated again locally
    budgets = [weight.size // c for c in (2, 4, 8, 16)]
    kw: dict[str, Any] = {**GREEDY, "threads": 2}
    local = run_greedy(weight, budgets, **kw)
    with ThreadPoolExecutor(2) as pool:
        remote = run_greedy(weight, budgets, executor=pool, **kw)
    assert [_signature(r) for r in remote] == [_signature(r) for r in local]


def test_ctrl_c_during_a_search_on_an_executor_returns_the_best_so_far(weight) -> None:
    full = search(weight, compression=4, progress=False, refine=0)
    totals = []

    def stop_in_the_deep_phase(done: int, total: int) -> None:
        totals.append(total)
        if done > total // 2:  # past the spectra and the 2-factor configurations
            raise KeyboardInterrupt

    with ThreadPoolExecutor(1) as pool:
        res = search(
            weight, compression=4, progress=stop_in_the_deep_phase, refine=0, executor=pool
        )
    assert res.interrupted and 0 < len(res.all) < len(full.all)
    assert res.best.rel_error >= full.best.rel_error
    assert res.bound <= full.best.rel_error * (1 + 1e-12)  # what was left is certified
    assert res.n_open > 0


def test_search_time_limit_on_an_executor_keeps_a_valid_certificate(weight) -> None:
    with ThreadPoolExecutor(1) as pool:
        res = search(
            weight, compression=4, progress=False, refine=0, max_seconds=1e-9, executor=pool
        )
    full = search(weight, compression=4, progress=False, refine=0)
    assert res.timed_out and not res.certified
    assert res.bound <= full.best.rel_error * (1 + 1e-12)


def test_search_executor_must_be_an_executor(weight) -> None:
    with pytest.raises(TypeError, match=r"^executor must be None \(run locally\) or a "):
        search(weight, compression=4, executor="dask")


def test_replay_decides_what_tasks_that_prune_nothing_evaluated(weight, monkeypatch) -> None:
    # tasks that knew no best error evaluate every job at every budget: the replay must still
    # prune, give up and record exactly as the local run (re-evaluating where caps differ)
    import importlib

    remote = importlib.import_module("sekron.search._remote")
    evaluate_group, run_job = remote.evaluate_group, remote.run_job
    here = []

    def knows_nothing(group, **shared):
        return evaluate_group(group, **{**shared, "best2": (np.inf,) * len(shared["best2"])})

    def counting(job, *args):
        if threading.current_thread() is threading.main_thread():
            here.append(job.form)  # the replay evaluates this job itself
        return run_job(job, *args)

    monkeypatch.setattr(remote, "evaluate_group", knows_nothing)
    monkeypatch.setattr(remote, "run_job", counting)
    budgets = [weight.size // c for c in (2, 8)]
    kw: dict[str, Any] = {**GREEDY, "threads": 1}
    local = run_greedy(weight, budgets, **kw)
    with ThreadPoolExecutor(2) as pool:
        remote_run = run_greedy(weight, budgets, executor=pool, **kw)
    assert [_signature(r) for r in remote_run] == [_signature(r) for r in local]
    assert 0 < len(here) < sum(len(r.all) + r.n_pruned for r in local)


def _table(table: Any) -> tuple[Any, ...]:
    return (
        [{k: v for k, v in r.items() if k != "seconds"} for r in table.to_records()],
        [None if s is None else _signature(s) for s in table.searches],
        table.interrupted,
    )


def test_compare_on_a_dask_cluster_equals_the_local_compare(weight, dask_client) -> None:
    from sekron.compare import compare

    kw: dict[str, Any] = dict(compression=(4, 8), progress=False, refine=3, threads=1)
    local = compare(weight, **kw)
    steps: list[int] = []
    on_dask = compare(
        weight,
        executor=dask_client.get_executor(),
        **{**kw, "progress": lambda done, total: steps.append(done)},
    )
    assert _table(on_dask) == _table(local)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 12  # 5 families + searches


def _cli_rows(tmp_path, name: str, extra: list[str]) -> list[dict[str, Any]]:
    import json

    from sekron.cli import main

    path, js = tmp_path / "w.npy", tmp_path / f"{name}.json"
    if not path.exists():
        np.save(path, np.random.default_rng(0).standard_normal((8, 4, 3, 3)))
    argv = ["compare", str(path), "--compression", "2", "4", "--refine", "2"]
    assert main([*argv, "--json", str(js), "--no-progress", *extra]) == 0
    rows = json.loads(js.read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_cli_compare_on_a_scheduler_and_on_local_workers(tmp_path, dask_client, capsys) -> None:
    local = _cli_rows(tmp_path, "local", [])
    assert _cli_rows(tmp_path, "scheduler", ["--scheduler", dask_client.scheduler.address]) == local
    assert _cli_rows(tmp_path, "workers", ["--workers", "1"]) == local


def test_cli_cluster_options_are_checked(tmp_path, capsys) -> None:
    from sekron.cli import main

    assert main(["compare", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers" in err[0]
    assert main(["compare", "--workers", "2", "--scheduler", "tcp://x:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not allowed with argument" in err[0]
