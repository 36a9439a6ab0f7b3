"""The work of one :func:`sekron.compare.compare` run: the time budget, progress, the rows."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import closing
from dataclasses import fields, is_dataclass, replace
from typing import Any, NamedTuple

from .._embeddings import tucker2_chain
from .._executor import iter_completed
from .._typing import Form
from ..random import check_random_state
from ..refinement import refine
from ..search import Candidate, SearchResult, search
from ..search._api import run_greedy, with_joint_fits
from ..search._joint import cheapest_cp
from ..search._macs import conv_macs
from ..structures import BudgetTooSmall, get_structure
from ..tensor import SeKronTensor
from ._table import _LABELS, CompareTable, Row

ProgressArg = bool | Callable[[int, int], Any] | None


class Options(NamedTuple):
    """compare's checked options."""

    compressions: tuple[float, ...]
    budgets: tuple[int, ...]
    families: tuple[str, ...]
    max_factors: int
    forms: tuple[Form, ...]
    max_configs: int | None
    max_seconds: float | None
    random_state: Any
    threads: int
    name: str | None
    progress: ProgressArg
    sweeps: int
    executor: Executor | None = None
    max_macs: int | None = None  # the MAC budget per output position of a 4-way tensor

    @property
    def search_macs(self) -> int | None:
        """The MAC budget of the search: None when only GKPD (reported as it comes) runs."""
        return self.max_macs if "sekron" in self.families else None


class Clock:
    """The time budget of a whole run, shared out: the family fits first, then the searches.

    With ``max_seconds`` the family fits together get half of it when searches follow (all of
    it otherwise), and each step gets an equal share of what is left for its phase.
    """

    def __init__(self, max_seconds: float | None, n_searches: int, n_fits: int) -> None:
        self.start = time.perf_counter()
        self.total = max_seconds
        fit_share = 1.0 if n_searches == 0 else 0.5 if n_fits else 0.0
        self.end = {"fit": fit_share, "search": 1.0}
        self.left = {"search": n_searches, "fit": n_fits}

    def share(self, phase: str) -> float | None:
        """Seconds for the next step of ``phase`` (None: unbounded); counts the step."""
        self.left[phase] -= 1
        if self.total is None:
            return None
        left = self.total * self.end[phase] - (time.perf_counter() - self.start)
        return max(1e-9, left / (self.left[phase] + 1))


class Progress:
    """Progress of the whole run on stderr (or a callback): a step per search and per fit.

    ``progress`` is :func:`compare`'s argument: a callable receives ``(done, total)`` steps;
    True shows progress, False nothing, None shows it when stderr is a terminal. On a terminal
    one line is redrawn in place; otherwise (a log file) each step gets a line of its own, with
    no carriage returns.
    """

    def __init__(self, total: int, progress: ProgressArg) -> None:
        self.total, self.done, self.label = total, 0, ""
        self.callback = progress if callable(progress) else None
        tty = sys.stderr.isatty()
        show = progress if isinstance(progress, bool) else progress is None and tty
        self.stream = sys.stderr if show and self.callback is None else None
        self.tty = tty
        self.start = time.perf_counter()
        self.last = 0.0

    def begin(self, label: str) -> None:
        self.label = label
        if self.stream is not None and not self.tty:
            elapsed = time.perf_counter() - self.start
            self.stream.write(
                f"sekron compare {self.done}/{self.total}: {label} ({elapsed:.0f} s)\n"
            )
            self.stream.flush()
        self.draw(0.0, force=True)

    def draw(self, fraction: float, force: bool = False) -> None:
        """Redraw the terminal line, at most every 0.2 s unless forced."""
        now = time.perf_counter()
        if self.stream is None or not self.tty or (not force and now - self.last < 0.2):
            return
        self.last = now
        pos = min(self.total, self.done + fraction)
        filled = int(20 * pos / max(self.total, 1))
        bar = "#" * filled + "." * (20 - filled)
        text = f"sekron compare [{bar}] {self.done}/{self.total} {self.label}"
        self.stream.write(f"\r{text[:70]:<70} {now - self.start:5.0f} s")
        self.stream.flush()

    def search_callback(self, done: int, total: int) -> None:
        self.draw(done / max(total, 1))

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
        self.draw(0.0, force=True)

    def close(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _no_row(family: str, c: float, budget: int, reason: str, seconds: float = 0.0) -> Row:
    return Row(family, c, budget, None, None, None, None, None, reason, seconds=seconds)


def _candidate_row(
    family: str, c: float, budget: int, cand: Candidate, seconds: float, greedy: float
) -> Row:
    shapes = " ⊗ ".join("(" + ",".join(map(str, s)) + ")" for s in cand.shapes)
    if family == "gkpd":
        notation = f"{shapes}, rank {cand.ranks[0]}"
    else:
        notation = f"{shapes} {cand.form}, ranks ({', '.join(map(str, cand.ranks))})"
    if cand.refined:
        notation += f", joint fit from {cand.source}"
    return Row(
        family,
        c,
        budget,
        cand.n_params,
        cand.rel_error,
        cand.shapes,
        cand.ranks,
        cand.form,
        own_ranks=cand.ranks,
        notation=notation,
        seconds=seconds,
        refined=cand.refined,
        greedy_error=greedy,
        macs=cand.macs,
    )


def search_rows(
    t: Any,
    opts: Options,
    clock: Clock,
    bar: Progress,
    warm: dict[float, list[SeKronTensor]],
    done: dict[tuple[str, float], Row],
    searches: list[SearchResult | None],
) -> None:
    """The SeKron search of every ratio, with the family fits of that ratio as warm starts of
    its joint stage; the SeKron and GKPD rows go into ``done`` and the searches into
    ``searches`` as they finish.

    Without ``max_seconds`` the greedy stage runs once for every ratio (it shares every SVD;
    each ratio's search is complete, so its certificate holds); with it, one search per ratio,
    so each stopped search's certificate is the one :func:`sekron.search` gives for that ratio
    alone.
    """
    pairs = list(zip(opts.compressions, opts.budgets, strict=True))
    sweeps = opts.sweeps if "sekron" in opts.families else 0
    if opts.max_seconds is None:
        bar.begin("SeKron greedy search, every ratio")
        greedy = _shared_greedy(t, opts, bar)
        for (c, b), res in zip(pairs, greedy, strict=True):
            bar.begin(f"SeKron joint fits at {c:g}x")
            start = time.perf_counter()
            shared = res.seconds / len(pairs) if res is not None else 0.0
            if res is not None:
                res = with_joint_fits(
                    t,
                    t,
                    res,
                    sweeps=sweeps,
                    warm_starts=_starts(opts, warm, c),
                    rng=check_random_state(opts.random_state),
                    deadline=None,
                    threads=opts.threads,
                )
            _record(
                done, searches, c, b, res, time.perf_counter() - start + shared, opts.search_macs
            )
            bar.step()
        return _gkpd_as_it_comes(t, opts, bar, done)
    for c, b in pairs:
        bar.begin(f"SeKron search at {c:g}x")
        start = time.perf_counter()
        try:
            one: SearchResult | None = search(
                t,
                max_params=b,
                max_factors=opts.max_factors,
                forms=opts.forms,
                max_configs=opts.max_configs,
                max_seconds=clock.share("search"),
                progress=bar.search_callback,
                threads=opts.threads,
                refine=sweeps,
                warm_starts=_starts(opts, warm, c),
                max_macs=opts.search_macs,
                executor=opts.executor,
            )
        except ValueError:  # the budgets are below every configuration's smallest structure
            one = None
        _record(done, searches, c, b, one, time.perf_counter() - start, opts.search_macs)
        bar.step()
    _gkpd_as_it_comes(t, opts, bar, done)


def _gkpd_as_it_comes(
    t: Any, opts: Options, bar: Progress, done: dict[tuple[str, float], Row]
) -> None:
    """With a MAC budget on the search, the GKPD rows are the best 2-factor splits within the
    parameter budgets alone (a family reported as it comes): their own greedy stage, whose
    2-factor errors are exact from the level-1 spectra. Nothing to do without a MAC budget
    (the search's 2-factor candidates are those already)."""
    if opts.search_macs is None or "gkpd" not in opts.families:
        return
    bar.begin("GKPD without the MAC budget")
    start = time.perf_counter()
    two = opts._replace(max_factors=2, max_macs=None)
    found = _shared_greedy(t, two, bar)
    seconds = (time.perf_counter() - start) / len(opts.budgets)
    for c, b, res in zip(opts.compressions, opts.budgets, found, strict=True):
        if res is None:
            done["gkpd", c] = _no_row("gkpd", c, b, "no 2-factor split fits", seconds)
        else:
            done["gkpd", c] = _candidate_row("gkpd", c, b, res.best, seconds, res.best.rel_error)


def _starts(
    opts: Options, warm: dict[float, list[SeKronTensor]], c: float
) -> list[SeKronTensor] | None:
    """The warm starts of ratio ``c``: the compared families' fits, or None (the search then
    fits its own CP, TT and Tucker-2) when none of those families is compared."""
    return warm[c] if {"tt", "cp", "tucker2"} & set(opts.families) else None


def _shared_greedy(t: Any, opts: Options, bar: Progress) -> list[SearchResult | None]:
    """The greedy stage at every budget at once (None for a budget no structure fits)."""
    try:
        out = run_greedy(
            t,
            opts.budgets,
            max_factors=opts.max_factors,
            forms=opts.forms,
            max_configs=opts.max_configs,
            svd="auto",
            random_state=check_random_state(opts.random_state),
            exhaustive=False,
            progress=bar.search_callback,
            threads=opts.threads,
            max_macs=opts.search_macs,
            executor=opts.executor,
        )
    except ValueError:  # no configuration fits even the largest budget
        return [None] * len(opts.budgets)
    if any(r is not None and r.interrupted for r in out):
        raise KeyboardInterrupt
    return out


def _record(
    done: dict[tuple[str, float], Row],
    searches: list[SearchResult | None],
    c: float,
    b: int,
    res: SearchResult | None,
    seconds: float,
    macs: int | None,
) -> None:
    """The SeKron and GKPD rows of one ratio's search; within a MAC budget ``macs``, the
    SeKron row only (GKPD's come from :func:`_gkpd_as_it_comes`)."""
    if res is not None and res.interrupted:  # Ctrl-C in the search: stop the whole run
        raise KeyboardInterrupt
    searches.append(res)
    if res is None:
        why = "no SeKron structure fits" + (" both budgets" if macs is not None else "")
        done["sekron", c] = _no_row("sekron", c, b, why, seconds)
        if macs is None:
            done["gkpd", c] = _no_row("gkpd", c, b, why, seconds)
        return
    greedy = res.greedy_best.rel_error
    done["sekron", c] = _candidate_row("sekron", c, b, res.best, seconds, greedy)
    if macs is not None:
        return
    two = [x for x in res.all if x.n_factors == 2]  # greedy S = 2 is optimal
    best = min(two, key=lambda x: (x.rel_error, x.n_params), default=None)
    if best is None:
        done["gkpd", c] = _no_row("gkpd", c, b, "no 2-factor split fits", seconds)
    else:
        done["gkpd", c] = _candidate_row("gkpd", c, b, best, seconds, best.rel_error)


def fit_row(
    name: str,
    t: Any,
    c: float,
    budget: int,
    sweeps: int,
    random_state: Any,
    seconds: float | None,
) -> tuple[Row, SeKronTensor | None]:
    """A family's own fit at one budget, or a row that says why there is none; and the fit as
    a warm start of the search's joint stage when it embeds at its own parameter count (TT,
    CP, Tucker-2 as a chain).

    Effort: CP, Tucker and Tucker-2 run ``sweeps`` iterations of their own algorithm
    (their defaults with ``sweeps=0``); TT is TT-SVD followed by ``sweeps`` ALS sweeps;
    TR is TR-SVD, which does not iterate. ``seconds`` bounds the fit (None: unbounded).

    For a conv weight the row's ``macs`` are those of the family's cheapest exact SeKron plan:
    Tucker-2 as its chain, CP in the factor order that costs least
    (:func:`sekron.search._joint.cheapest_cp`), the others their embedding.
    """
    shape = tuple(int(s) for s in t.shape)
    if name == "tucker2" and len(shape) != 4:
        return _no_row(name, c, budget, f"{_LABELS[name]} needs a 4-way tensor"), None
    s = get_structure(name)
    if len(shape) < s.min_modes:
        return _no_row(name, c, budget, f"{_LABELS[name]} needs >= {s.min_modes} modes"), None
    if sweeps and is_dataclass(s) and "n_iter_max" in {f.name for f in fields(s)}:
        s = replace(s, n_iter_max=sweeps)
    try:
        fit = s._fit_checked(t, budget=budget, random_state=random_state, max_seconds=seconds)
    except BudgetTooSmall as e:
        why = f"{_LABELS[name]} needs {e.smallest:,} parameters at its smallest ranks"
        return _no_row(name, c, budget, why), None
    st, err = fit.embedding, fit.rel_error
    if name == "tt" and sweeps:
        st = refine(t, st, sweeps=sweeps)
        err = float(st.rel_error or 0.0)
    row = Row(
        name,
        c,
        budget,
        fit.n_params,
        err,
        st.shapes,
        st.ranks,
        st.form,
        own_ranks=fit.ranks,
        notation=fit.describe_ranks(),
        cut_short=fit.cut_short,
        seconds=fit.seconds,
    )
    plan = tucker2_chain(st) if name == "tucker2" else st  # Tucker-2: 1x1, kh x kw, 1x1
    if len(shape) == 4:
        cheap = (cheapest_cp(st) if name == "cp" else None) or plan
        row = replace(row, macs=int(conv_macs(cheap.shapes, cheap.ranks, cheap.form)))
    return row, plan if name in ("tt", "cp", "tucker2") else None


def _fit_task(
    item: tuple[str, float, int, float | None], *, tensor: Any, sweeps: int, random_state: Any
) -> tuple[Row, SeKronTensor | None]:
    """One family's fit at one ratio, as a task on an executor."""
    name, c, budget, seconds = item
    return fit_row(name, tensor, c, budget, sweeps, random_state, seconds)


def family_fits(
    t: Any,
    opts: Options,
    clock: Clock,
    bar: Progress,
    fitted: list[str],
    done: dict[tuple[str, float], Row],
    warm: dict[float, list[SeKronTensor]],
) -> None:
    """Every fitted family at every ratio into ``done``, and the warm starts into ``warm``
    (in family order). On an executor, one task per family and ratio (the tensor shipped
    once), each given an equal share of the fits' time."""
    pairs = [
        (f, c, b) for f in fitted for c, b in zip(opts.compressions, opts.budgets, strict=True)
    ]
    if opts.executor is None:
        for fam, c, b in pairs:
            bar.begin(f"{_LABELS[fam]} at {c:g}x")
            fit = fit_row(fam, t, c, b, opts.sweeps, opts.random_state, clock.share("fit"))
            _keep(fam, c, b, fit, done, warm)
            bar.step()
        return
    items = [(f, c, b, clock.share("fit")) for f, c, b in pairs]
    bar.begin(f"{len(items)} family fits on the executor")
    fits: dict[int, tuple[Row, SeKronTensor | None]] = {}
    tasks = iter_completed(
        _fit_task,
        items,
        executor=opts.executor,
        shared={"tensor": t, "sweeps": opts.sweeps, "random_state": opts.random_state},
        labels=[f"{_LABELS[f]} at {c:g}x" for f, c, _ in pairs],
    )
    try:
        with closing(tasks):
            for i, fit in tasks:
                fits[i] = fit
                bar.step()
    finally:  # what finished, in the local order (also at Ctrl-C)
        for i in sorted(fits):
            _keep(*pairs[i], fits[i], done, warm)


def _keep(
    fam: str,
    c: float,
    b: int,
    fit: tuple[Row, SeKronTensor | None],
    done: dict[tuple[str, float], Row],
    warm: dict[float, list[SeKronTensor]],
) -> None:
    done[fam, c], start = fit
    if start is not None and start.n_params <= b:
        warm[c].append(start)


def run(t: Any, opts: Options) -> CompareTable:
    """Every family's fit at every ratio, then the searches (warm-started from those fits),
    as one table. A Ctrl-C stops the run: the table then holds what finished (the other rows
    say "interrupted") and ``interrupted`` is set."""
    searching = "sekron" in opts.families or "gkpd" in opts.families
    fitted = [f for f in opts.families if f not in ("sekron", "gkpd")]
    n_search = len(opts.compressions) if searching else 0
    n_fits = len(fitted) * len(opts.compressions)
    clock = Clock(opts.max_seconds, n_search, n_fits)
    bar = Progress(n_search + n_fits, opts.progress)
    searches: list[SearchResult | None] = []
    done: dict[tuple[str, float], Row] = {}
    warm: dict[float, list[SeKronTensor]] = {c: [] for c in opts.compressions}
    interrupted = False
    try:
        family_fits(t, opts, clock, bar, fitted, done, warm)
        if searching:
            search_rows(t, opts, clock, bar, warm, done, searches)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    rows = [
        done.get((fam, c)) or _no_row(fam, c, b, "interrupted")
        for fam in opts.families
        for c, b in zip(opts.compressions, opts.budgets, strict=True)
    ]
    if opts.max_macs is not None:
        over = opts.max_macs
        rows = [replace(r, over_mac_budget=r.macs is not None and r.macs > over) for r in rows]
    return CompareTable(
        rows,
        tensor_shape=tuple(int(s) for s in t.shape),
        compressions=opts.compressions,
        searches=tuple(searches) + (None,) * (n_search - len(searches)),
        name=opts.name,
        sweeps=opts.sweeps,
        interrupted=interrupted,
        max_macs=opts.max_macs,
    )
