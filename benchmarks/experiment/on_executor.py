"""The experiment's jobs on an executor (``run(..., executor=...)``, ``--scheduler``/``--workers``).

For each task, first its (family, ratio) compressions run as tasks, then its (family, ratio,
seed) fine-tunings; the task (model, data) is shipped to each worker once. Every job runs with
the caller's torch thread count and deterministic-algorithms setting, so the numbers are those
of the local run (timings aside). A row is kept once its compression and every seed are done,
in the local order; at Ctrl-C the finished rows stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

import torch
from torch import nn

from sekron._executor import iter_completed

from .harness import Config, Progress, Task, compressed_row, finish_row, seed_run

__all__ = ["rows_on"]


@contextlib.contextmanager
def _torch_as(threads: int, deterministic: bool) -> Iterator[None]:
    """torch's thread count and deterministic mode as the caller's, for the job's duration."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def _compress_job(
    item: tuple[str, float],
    *,
    task: Task,
    model: nn.Module,
    cfg: Config,
    threads: int,
    deterministic: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    with _torch_as(threads, deterministic):
        return compressed_row(task, model, item[0], item[1], cfg)


def _seed_job(
    item: tuple[nn.Module, int],
    *,
    task: Task,
    model: nn.Module,
    cfg: Config,
    threads: int,
    deterministic: bool,
) -> dict[str, Any]:
    with _torch_as(threads, deterministic):
        return seed_run(task, item[0], item[1], cfg)


def rows_on(
    executor: Executor,
    task: Task,
    model: nn.Module,
    cfg: Config,
    bar: Progress,
    rows: list[dict[str, Any]],
) -> None:
    """Append ``task``'s rows to ``rows``, in the local order, computed on ``executor``."""
    pairs = [(f, r) for f in cfg.families for r in cfg.ratios]
    shared = {
        "task": task,
        "model": model,
        "cfg": cfg,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    tags = [f"{task.name} {f} {r:g}x" for f, r in pairs]
    small: dict[int, tuple[nn.Module, dict[str, Any]]] = {}
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    try:
        bar.show(f"{task.name}: {len(pairs)} compressions on the executor")
        jobs = iter_completed(_compress_job, pairs, executor=executor, shared=shared, labels=tags)
        with contextlib.closing(jobs):
            for i, out in jobs:
                small[i] = out
                bar.advance(f"{tags[i]}: compressed in {out[1]['compress_s']:.1f} s")
        keys = [(i, seed) for i in range(len(pairs)) for seed in cfg.seeds]
        items = [(small[i][0], seed) for i, seed in keys]
        labels = [f"{tags[i]} seed {seed}" for i, seed in keys]
        jobs = iter_completed(_seed_job, items, executor=executor, shared=shared, labels=labels)
        with contextlib.closing(jobs):
            for k, run in jobs:
                runs[keys[k]] = run
                bar.advance(f"{labels[k]} done")
    finally:
        for i in sorted(small):
            if all((i, seed) in runs for seed in cfg.seeds):
                rows.append(finish_row(small[i][1], [runs[i, seed] for seed in cfg.seeds]))
