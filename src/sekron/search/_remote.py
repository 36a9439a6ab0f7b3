"""The deeper configurations of a search on an executor (``search(..., executor=...)``).

Once the level-1 spectra are known, the configurations sharing a first factor run as one task
(:func:`evaluate_group`); the tensor and the spectra are shipped to the workers once. A task
prunes against the best error known when it was sent (the 2-factor configurations') and its
own finds, so it evaluates every job the local run evaluates, and more.

The tasks' outcomes are then replayed in the local run's order against the running best
(:func:`replay`): each job is pruned, given up part-way or recorded exactly as the local run
would, from the task's errors and per-chunk bounds. Where a task's outcome does not decide
the local one (several budgets whose live set changed the tree's caps), that job is evaluated
here. The result is the local run's, whatever the number of workers or the order in which
tasks complete.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from contextlib import closing
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np

from .._backend import backend_name_of, get_backend
from .._executor import iter_completed
from .._typing import SVDMethod
from ._kernels import Kernels, Level1, Spectrum, level2_grams, on_device
from ._parallel import workers
from ._phases import (
    _SLACK,
    Job,
    Outcome,
    Progress,
    Tally,
    apply_outcome,
    live_budgets,
    run_job,
)

__all__ = ["evaluate_deep_on", "evaluate_group", "replay"]


@dataclass
class Group:
    """The jobs sharing a first factor, in the local order, and that factor's kept vectors."""

    jobs: list[Job]
    vecs: tuple[bool, Any, np.ndarray] | None
    index: int


def evaluate_group(
    group: Group,
    *,
    tensor: Any,
    spectra: dict[tuple[int, ...], Spectrum],
    norm2: float,
    need: dict[tuple[int, ...], int],
    svd: SVDMethod,
    seed: int,
    budgets: tuple[int, ...],
    best2: tuple[float, ...],
    exhaustive: bool,
    threads: int,
    max_macs: int | None = None,
) -> list[Outcome | None]:
    """One task: the outcome of every job of ``group`` (None for a job pruned by its bound),
    pruning against ``best2`` and the group's own finds. Work is split as ``threads`` threads
    would split it, in one thread (the same numbers as the local run)."""
    backend = backend_name_of(tensor)
    assert backend is not None
    rng = np.random.default_rng([seed, group.index])  # svd="randomized" only
    tallies = [Tally(b, max_macs, best2=b2) for b, b2 in zip(budgets, best2, strict=True)]
    outs: list[Outcome | None] = []
    with workers(threads, backend, in_order=True) as pool:
        kern = Kernels(get_backend(backend), svd, rng, pool, on_device(tensor))
        level1 = Level1(tensor, kern, need, set(), norm2)
        head = group.jobs[0].shapes[0]
        level1.restore(spectra, {} if group.vecs is None else {head: group.vecs})
        grams = None
        for k, job in enumerate(group.jobs):
            if k and job.shapes != group.jobs[k - 1].shapes:
                grams = None  # a configuration's chain takes its nested job's Grams only
            live = live_budgets(job, [tally.best2 for tally in tallies], exhaustive)
            if not live:
                outs.append(None)
                grams = None
                continue
            out = run_job(job, level1, live, tallies, exhaustive, grams)
            grams, out.grams = out.grams, None  # the Grams stay here
            for i, (_, err2) in out.found.items():
                tallies[i].best2 = min(tallies[i].best2, err2)
            outs.append(out)
    return outs


def _replayed(
    job: Job, out: Outcome | None, live: list[int], tallies: list[Tally], level1: Level1
) -> tuple[Outcome, Any] | None:
    """The local run's outcome of ``job`` at ``live`` from the task's ``out`` and, for a
    nested job, what its Grams would be (see :func:`replay`); None when ``out`` does not
    decide it."""
    if out is None or not set(live) <= set(out.live):
        return None
    found = {i: out.found[i] for i in live if i in out.found}
    if job.form == "chain":
        return Outcome(tuple(live), (), found, None, grams_in=out.grams_in), None
    caps = tuple(max(job.caps[i][k] for i in live) for k in range(len(job.d) - 1))
    if caps != out.caps:
        return None
    M1 = min(caps[0], level1.spectra[job.shapes[0]].cap)
    formed = len(job.d) == 3 and job.d[1] > job.d[2] and level1.kern.svd in ("auto", "gram")
    ends = _chunk_ends(M1)
    for c, bounds in enumerate(out.chunk_bounds or ()):  # it gives up at the first chunk it can
        if all(bounds[i] >= tallies[i].best2 * _SLACK for i in live):
            given_up = Outcome(tuple(live), caps, {}, {i: bounds[i] for i in live})
            return given_up, ((ends[c], M1) if formed else None)
    if out.bounds is not None:  # given up by the task where this run would not have
        return None
    return Outcome(tuple(live), caps, found, None), ((M1, M1) if formed else None)


def _chunk_ends(M1: int) -> list[int]:
    """Level-2 branches done after each chunk of a nested tree given up part-way."""
    ends, done, step = [], 0, 8
    while done < M1:
        done = min(M1, done + step)
        ends.append(done)
        step *= 2
    return ends


def _grams(state: Any, job: Job, level1: Level1) -> Any:
    """The Grams a nested job left in ``state``: None, an array, or (rows, M1) to recompute."""
    if state is None or isinstance(state, np.ndarray):
        return state
    rows, M1 = state
    return level2_grams(level1, job.shapes, job.d, M1, rows)


def replay(
    jobs: Sequence[Job],
    outs: Sequence[Outcome | None],
    level1: Level1,
    tallies: list[Tally],
    t: Any,
    exhaustive: bool,
) -> None:
    """Record ``jobs`` in the tallies as the local run would have, from the tasks' outcomes.

    A chain takes the Grams of its configuration's nested job; where the local run's nested
    job would have left other Grams than the task's did (it was pruned, or given up at
    another chunk), the chain is evaluated here with the local ones.
    """
    state: Any = None  # the Grams the local run's last nested job left
    for k, (job, out) in enumerate(zip(jobs, outs, strict=True)):
        if k and job.shapes != jobs[k - 1].shapes:
            state = None
        live = live_budgets(job, [tally.best2 for tally in tallies], exhaustive)
        for i, (tally, caps) in enumerate(zip(tallies, job.caps, strict=True)):
            if caps and i not in live:
                tally.skip(job.lower2[i])
        if not live:
            state = None
            continue
        decided = _replayed(job, out, live, tallies, level1)
        if decided is not None and job.form == "chain":
            rows = (
                None if state is None else (state.shape[0] if hasattr(state, "shape") else state[0])
            )
            decided = decided if rows == decided[0].grams_in else None
        if decided is None:
            col_grams = _grams(state, job, level1) if job.form == "chain" else None
            local = run_job(job, level1, live, tallies, exhaustive, col_grams)
            state = local.grams
        else:
            local, state = decided
        apply_outcome(local, job, tallies, level1, t)


def evaluate_deep_on(
    executor: Executor,
    pending: deque[Job],
    level1: Level1,
    tallies: list[Tally],
    t: Any,
    *,
    exhaustive: bool,
    deadline: float | None,
    progress: Progress,
    threads: int,
) -> bool:
    """:func:`sekron.search._phases.evaluate_deep` with one task per first factor on
    ``executor``. Jobs of tasks not done by the deadline (or at Ctrl-C) stay pending; True if
    the deadline passed first."""
    jobs = list(pending)
    groups = [list(g) for _, g in groupby(jobs, key=lambda j: j.shapes[0])]
    kern = level1.kern
    seed = int(kern.rng.integers(2**31)) if kern.svd == "randomized" else 0
    items = [Group(g, level1.kept_vectors(g[0].shapes[0]), i) for i, g in enumerate(groups)]
    shared = {
        "tensor": level1.t,
        "spectra": level1.spectra,
        "norm2": level1.norm2,
        "need": level1.need,
        "svd": kern.svd,
        "seed": seed,
        "budgets": tuple(tally.budget for tally in tallies),
        "best2": tuple(tally.best2 for tally in tallies),
        "exhaustive": exhaustive,
        "threads": threads,
        "max_macs": tallies[0].max_macs,
    }
    labels = [f"configurations with first factor {g[0].shapes[0]}" for g in groups]
    timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
    done: dict[int, list[Outcome | None]] = {}

    def finish() -> None:
        pending.clear()
        for i, group in enumerate(groups):
            if i in done:
                replay(group, done[i], level1, tallies, t, exhaustive)
            else:
                pending.extend(group)

    tasks = iter_completed(
        evaluate_group, items, executor=executor, shared=shared, labels=labels, timeout=timeout
    )
    try:
        with closing(tasks):
            for i, outs in tasks:
                done[i] = outs
                progress.update(len(groups[i]))
    except KeyboardInterrupt:
        finish()
        raise
    finish()
    return len(done) < len(groups)
