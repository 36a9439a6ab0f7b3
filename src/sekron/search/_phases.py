"""One search run, phase by phase, at one or more budgets sharing every SVD.

1. :func:`plan_jobs`: enumerate configurations, keep those the budgets fit, most balanced first;
   one job per configuration and form, with its rank caps per budget.
2. :func:`spectra_needed`: the level-1 spectra the jobs need (first factors, prefixes).
3. ``Level1.compute``: those spectra, shared by every configuration.
4. :func:`score_two_factor`: 2-factor configurations are exact from the spectra alone.
5. :func:`bound_and_order`: certified lower bounds of the deeper jobs; most promising first.
6. :func:`evaluate_deep`: nested and chain of one configuration in one call (the chain sums
   the nested level's column Grams), skipping jobs whose bound cannot beat the best so far.
7. :func:`finish`: a :class:`SearchResult` per budget, certified by the pending jobs' bounds.

The jobs not yet evaluated stay in one ``pending`` queue: a job's lower bound is 0 until
phase 5 computes it, so a run stopped at any point (``max_seconds``, Ctrl-C) is certified by
what is left in the queue.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, cast

import numpy as np

from .. import _ranks, _tree
from .._plan import chain_params, factor_sizes, nested_params
from .._tree import chain_caps, choose_chain_budget, choose_nested, nested_caps
from .._typing import Form, Ranks, Shapes
from . import _bounds
from ._configs import balance_score, enumerate_configs, max_factors_of, min_params, prefix
from ._kernels import Level1, chain_error2, nested_values
from ._macs import conv_macs, mac_fits
from ._results import Candidate, SearchResult

__all__ = [
    "Job",
    "Outcome",
    "Progress",
    "Tally",
    "apply_outcome",
    "bound_and_order",
    "evaluate_deep",
    "finish",
    "live_budgets",
    "plan_jobs",
    "relative",
    "run_job",
    "score_two_factor",
    "spectra_needed",
]

_SLACK = 1 - 1e-12  # a bound must beat the best by more than rounding to keep a job alive


@dataclass(eq=False)
class Job:
    """One configuration in one form."""

    shapes: Shapes
    form: Form
    d: tuple[int, ...]
    caps: tuple[Ranks, ...]  # per budget; () where the configuration does not fit it
    lower2: tuple[float, ...]  # per budget: certified lower bound on err² (0 until bounded)


@dataclass
class Tally:
    """What one budget's search found so far."""

    budget: int
    max_macs: int | None = None  # MACs per output position (4-way conv weights), or None
    n_configs: int = 0
    found: list[Candidate] = field(default_factory=list)
    best2: float = np.inf
    n_pruned: int = 0
    skipped2: float = np.inf  # lowest lower bound among the jobs not evaluated
    n_open: int = 0  # jobs left unevaluated whose bound is below the best found

    def fits(self, job: Job) -> _tree.Fits | None:
        """The MAC budget as a mask over ``job``'s ranks (None without one)."""
        return None if self.max_macs is None else mac_fits(job.shapes, job.form, self.max_macs)

    def skip(self, lower2: float) -> None:
        self.n_pruned += 1
        self.skipped2 = min(self.skipped2, lower2)


class Progress:
    """Progress on stderr (tqdm if installed, else a text line), or a ``(done, total)`` callback."""

    def __init__(self, total: int, enabled: bool | Callable[[int, int], Any] | None) -> None:
        self.total, self.done = total, 0
        self.callback = enabled if callable(enabled) else None
        show = enabled if isinstance(enabled, bool) else (enabled is None and sys.stderr.isatty())
        self.bar = None
        self.text = False
        self.last = 0.0
        if show and self.callback is None:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="sekron search", unit="cfg", file=sys.stderr)
            except ImportError:
                self.text = True

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.bar is not None:
            self.bar.update(n)
        elif self.text:
            now = time.monotonic()
            if now - self.last > 0.2 or self.done == self.total:
                self.last = now
                sys.stderr.write(f"\rsekron search: {self.done}/{self.total} configurations")
                sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.text:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ----------------------------------------------------------------------------------------------
# 1-2. planning (no arrays)
# ----------------------------------------------------------------------------------------------
def plan_jobs(
    shape: tuple[int, ...],
    budgets: tuple[int, ...],
    max_factors: int,
    forms: tuple[str, ...],
    max_configs: int | None,
    max_macs: int | None = None,
    max_deep_configs: int | None = None,
) -> list[Job]:
    """Configurations with 2..max_factors factors within the largest budget, most balanced
    first (at most ``max_configs``), one job per form (one for S = 2: the forms coincide).
    With ``max_macs``, only the configurations whose ranks 1 fit it (in some form); with
    ``max_deep_configs``, every 2-factor configuration and at most that many deeper ones."""
    top = max(budgets)
    sizes = range(2, min(max_factors, max_factors_of(shape)) + 1)
    configs = [c for S in sizes for c in enumerate_configs(shape, S) if min_params(c) <= top]
    if max_macs is not None:
        configs = [c for c in configs if _ones_fit_macs(c, forms, max_macs)]
        if not configs:
            raise ValueError(
                f"no SeKron structure of a tensor of shape {shape} fits both the budget of "
                f"{top:,} parameters and max_macs={max_macs:,} MACs per output position."
            )
    if not configs:
        every = (c for S in sizes for c in enumerate_configs(shape, S))
        smallest = min((min_params(c) for c in every), default=None)
        if smallest is None:
            raise ValueError(
                f"tensor of shape {shape} has no SeKron configuration with 2..{max_factors} "
                "factors: every mode size is prime or 1 and there is at most one mode > 1 to "
                "split. Give a tensor with a composite mode or more modes."
            )
        raise ValueError(
            f"the budget of {top:,} parameters is below the smallest SeKron structure of a tensor "
            f"of shape {shape} with 2..{max_factors} factors ({smallest:,} parameters at ranks 1)."
        )
    configs.sort(key=lambda c: (balance_score(c), len(c), c))
    if max_configs is not None:
        configs = configs[:max_configs]
    if max_deep_configs is not None:
        deep = [c for c in configs if len(c) > 2][:max_deep_configs]
        configs = [c for c in configs if len(c) == 2] + deep
    jobs = []
    for c in configs:
        d = factor_sizes(c)
        fits = min_params(c)
        for form in ("nested" if "nested" in forms else "chain",) if len(c) == 2 else forms:
            capf = nested_caps if form == "nested" else chain_caps
            caps = tuple(capf(d, c, b) if fits <= b else () for b in budgets)
            jobs.append(Job(c, cast(Form, form), d, caps, (0.0,) * len(budgets)))
    return jobs


def _ones_fit_macs(c: Shapes, forms: tuple[str, ...], max_macs: int) -> bool:
    """Whether configuration ``c`` at ranks 1 costs at most ``max_macs`` in one of ``forms``."""
    ones = (1,) * (len(c) - 1)
    kinds = ("nested",) if len(c) == 2 else forms
    return any(conv_macs(c, ones, f) <= max_macs for f in kinds)


def spectra_needed(jobs: Iterable[Job], budgets: tuple[int, ...]) -> dict[tuple[int, ...], int]:
    """``{a: rank}``: the level-1 spectra of ``(a | w / a)`` the jobs need, to which rank.

    Every job needs its first factor's; a chain every prefix ``a1 ∘ .. ∘ ak``; a deeper nested
    job the prefix ``a1 ∘ .. ∘ a_{S-1}`` (for its lower bound).
    """
    need: dict[tuple[int, ...], int] = {}

    def want(a: tuple[int, ...], cap: int) -> None:
        need[a] = max(need.get(a, 0), cap)

    for job in jobs:
        S = len(job.d)
        for caps, b in zip(job.caps, budgets, strict=True):
            if not caps:
                continue
            want(job.shapes[0], caps[0])
            if job.form == "chain":
                for k in range(1, S - 1):
                    want(prefix(job.shapes, k + 1), caps[k])
            elif S > 2:
                last = max(1, (b - sum(job.d[:-2])) // (job.d[-2] + job.d[-1]))
                want(prefix(job.shapes, S - 1), last)
    return need


# ----------------------------------------------------------------------------------------------
# 4-6. scoring
# ----------------------------------------------------------------------------------------------
def _record(tally: Tally, job: Job, ranks: Ranks, err2: float, level1: Level1, t: Any) -> None:
    n = nested_params(job.d, ranks) if job.form == "nested" else chain_params(job.d, ranks)
    rel = relative(err2, level1.norm2)
    tally.found.append(Candidate(job.shapes, job.form, ranks, n, rel, _tensor=t))
    tally.best2 = min(tally.best2, err2)


def score_two_factor(
    pending: deque[Job], level1: Level1, tallies: list[Tally], t: Any, progress: Progress
) -> None:
    """Best ranks of the 2-factor jobs at the head of ``pending`` within each budget, from
    their spectra alone; each is popped once done."""
    while pending and len(pending[0].d) == 2:
        job = pending[0]
        sp = level1.spectra[job.shapes[0]]
        for tally, caps in zip(tallies, job.caps, strict=True):
            if not caps:
                continue
            M = min(caps[0], sp.cap)
            E = sp.tail(M)
            P = _ranks.params_table(job.d, (M,), "nested")
            fits = tally.fits(job)
            if fits is not None:
                P = np.where(fits(_ranks.grids((M,))), P, tally.budget + 1)
            ranks = _ranks.select_from_tables(E, P, tol2=None, budget=tally.budget)
            if ranks is not None:
                _record(tally, job, ranks, float(E[ranks[0] - 1]), level1, t)
        pending.popleft()
        progress.update()


def bound_and_order(jobs: list[Job], level1: Level1, budgets: tuple[int, ...]) -> list[Job]:
    """Set each deeper job's certified lower bounds; order the jobs so shared work is done once
    and the most promising come first.

    Jobs are grouped by first factor (its level-1 remainders ``Uᵀ X`` are computed once per
    group) and then by configuration (nested before chain: for S = 3 the chain reuses the
    nested level's Grams); groups and configurations with the lowest bound come first, so
    that pruning against the best error found so far bites early.
    """
    sp = level1.spectra
    for job in jobs:
        first, last = sp[job.shapes[0]], sp[prefix(job.shapes, len(job.d) - 1)]
        job.lower2 = tuple(
            _bounds.lower2(first, last, job.form, job.d, caps, b) if caps else np.inf
            for caps, b in zip(job.caps, budgets, strict=True)
        )
    cfg: dict[Shapes, float] = {}
    for j in jobs:
        cfg[j.shapes] = min(cfg.get(j.shapes, np.inf), min(j.lower2))
    head: dict[tuple[int, ...], float] = {}
    for c, v in cfg.items():
        head[c[0]] = min(head.get(c[0], np.inf), v)

    def key(j: Job) -> tuple[Any, ...]:
        return (head[j.shapes[0]], j.shapes[0], cfg[j.shapes], j.shapes, j.form != "nested")

    return sorted(jobs, key=key)


def evaluate_deep(
    pending: deque[Job],
    level1: Level1,
    tallies: list[Tally],
    t: Any,
    *,
    exhaustive: bool,
    deadline: float | None,
    progress: Progress,
) -> bool:
    """Evaluate the pending deeper jobs in order, one configuration (nested and chain) per
    call of :func:`_evaluate_config`; each job is popped once done. True if the deadline
    passed first."""
    for _, group in groupby(list(pending), key=lambda j: j.shapes):
        args = (pending, level1, tallies, t, exhaustive, deadline, progress)
        if _evaluate_config(list(group), *args):
            return True
    return False


def _evaluate_config(
    jobs: list[Job],
    pending: deque[Job],
    level1: Level1,
    tallies: list[Tally],
    t: Any,
    exhaustive: bool,
    deadline: float | None,
    progress: Progress,
) -> bool:
    """The jobs of one configuration, nested first: the level-2 column Grams its tree forms
    (S = 3, Gram kernels) are handed to the chain, whose second unfolding's Gram is their sum
    over the first R_1 branches. True if the deadline passed before a job."""
    col_grams: np.ndarray | None = None
    for job in jobs:
        if deadline is not None and time.perf_counter() > deadline:
            return True
        col_grams = _evaluate_job(job, level1, tallies, t, exhaustive, col_grams)
        pending.popleft()
        progress.update()
    return False


@dataclass
class Outcome:
    """One job evaluated at some of the run's budgets (indices into them)."""

    live: tuple[int, ...]  # the budgets it was evaluated at
    caps: Ranks  # nested: the caps of its tree (the elementwise largest of the live budgets')
    found: dict[int, tuple[Ranks, float]]  # budget -> best ranks and squared error, where any fit
    bounds: dict[int, float] | None  # a nested tree given up part-way: its bound per budget
    # S = 3 nested with give-up: the bound per live budget after each chunk but the last
    chunk_bounds: list[dict[int, float]] | None = None
    grams: np.ndarray | None = None  # nested: the level-2 column Grams, for the chain
    grams_in: int | None = None  # chain: the rows of the nested job's Grams it was given


def live_budgets(job: Job, best2: Sequence[float], exhaustive: bool) -> list[int]:
    """The budgets at which ``job`` has caps and its bound can still beat the best (all of
    them when ``exhaustive``)."""
    return [
        i
        for i, (caps, low) in enumerate(zip(job.caps, job.lower2, strict=True))
        if caps and (exhaustive or low < best2[i] * _SLACK)
    ]


def _evaluate_job(
    job: Job,
    level1: Level1,
    tallies: list[Tally],
    t: Any,
    exhaustive: bool,
    col_grams: np.ndarray | None,
) -> np.ndarray | None:
    """Evaluate ``job`` at the budgets where its bound can still beat the best (all of them
    when ``exhaustive``). A nested job returns its level-2 column Grams (or None); a chain
    job takes those of its configuration's nested job as ``col_grams``."""
    live = live_budgets(job, [tally.best2 for tally in tallies], exhaustive)
    for i, (tally, caps) in enumerate(zip(tallies, job.caps, strict=True)):
        if caps and i not in live:
            tally.skip(job.lower2[i])
    if not live:
        return None
    out = run_job(job, level1, live, tallies, exhaustive, col_grams)
    apply_outcome(out, job, tallies, level1, t)
    return out.grams


def apply_outcome(out: Outcome, job: Job, tallies: list[Tally], level1: Level1, t: Any) -> None:
    """Record ``out``'s candidates in the tallies, or its bounds as pruned."""
    if out.bounds is not None:
        for i, low in out.bounds.items():
            tallies[i].skip(low)
        return
    for i, (ranks, err2) in out.found.items():
        _record(tallies[i], job, ranks, err2, level1, t)


def run_job(
    job: Job,
    level1: Level1,
    live: list[int],
    tallies: Sequence[Tally],
    exhaustive: bool,
    col_grams: np.ndarray | None,
) -> Outcome:
    """Evaluate ``job`` at the ``live`` budgets (tallies' best errors as they stand)."""
    found: dict[int, tuple[Ranks, float]] = {}
    if job.form == "chain":
        for i in live:
            caps, tally = job.caps[i], tallies[i]
            tails = [level1.spectra[prefix(job.shapes, k + 1)].tail(c) for k, c in enumerate(caps)]
            ranks = choose_chain_budget(tails, job.d, tally.budget, tally.fits(job))
            if ranks is not None:
                found[i] = ranks, chain_error2(level1, job.shapes, job.d, ranks, col_grams)
        rows = None if col_grams is None else int(col_grams.shape[0])
        return Outcome(tuple(live), (), found, None, grams_in=rows)
    # one tree at the elementwise-largest caps serves every budget
    caps = tuple(max(job.caps[i][k] for i in live) for k in range(len(job.d) - 1))
    chunks: list[dict[int, float]] = []

    def give_up(tail1: np.ndarray, sv2: np.ndarray) -> bool:
        b = {i: _bounds.partial_nested_bound2(tail1, sv2, job.d, tallies[i].budget) for i in live}
        chunks.append(b)
        return all(b[i] >= tallies[i].best2 * _SLACK for i in live)

    use_give_up = not exhaustive and len(job.d) == 3
    tree, grams = nested_values(level1, job.shapes, job.d, caps, give_up if use_give_up else None)
    out = Outcome(tuple(live), caps, found, None, chunks if use_give_up else None, grams)
    if tree is None:  # given up part-way: pruned by a tighter bound
        out.bounds = chunks[-1]
        return out
    for i in live:
        ranks = choose_nested(tree, job.d, None, tallies[i].budget, tallies[i].fits(job))
        if ranks is not None:
            found[i] = ranks, _ranks.nested_error2(tree.sig2, tree.rest2, ranks)
    return out


# ----------------------------------------------------------------------------------------------
# 7. results
# ----------------------------------------------------------------------------------------------
def relative(err2: float, norm2: float) -> float:
    """``sqrt(err2 / norm2)`` (inf for an infinite bound, 0 for a zero tensor)."""
    if not np.isfinite(err2):
        return float("inf")
    return 0.0 if norm2 == 0.0 else float(np.sqrt(max(err2, 0.0) / norm2))


def finish(
    tallies: list[Tally],
    pending: Iterable[Job],
    level1: Level1,
    shape: tuple[int, ...],
    *,
    interrupted: bool,
    timed_out: bool,
    seconds: float,
) -> list[SearchResult | None]:
    """One SearchResult per budget (None where no configuration fits it); the jobs left pending
    certify what was not evaluated."""
    for job in pending:
        for tally, caps, low in zip(tallies, job.caps, job.lower2, strict=True):
            if caps:
                tally.skipped2 = min(tally.skipped2, low)
                tally.n_open += low < tally.best2 * _SLACK
    results: list[SearchResult | None] = []
    for tally in tallies:
        if not tally.found:
            results.append(None)
            continue
        results.append(
            SearchResult(
                tuple(_bounds.pareto_front(tally.found)),
                tuple(tally.found),
                budget=tally.budget,
                tensor_shape=shape,
                n_configs=tally.n_configs,
                n_pruned=tally.n_pruned,
                interrupted=interrupted,
                seconds=seconds,
                timed_out=timed_out,
                bound=relative(tally.skipped2, level1.norm2),
                n_open=tally.n_open,
                kernel_seconds=level1.kern.seconds,
                max_macs=tally.max_macs,
            )
        )
    return results
