"""The work of one :func:`sekron.compare.compare` run: the time budget, progress, the rows."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .._typing import Form
from ..search import Candidate, SearchResult, search
from ..structures import BudgetTooSmall, get_structure
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


class Clock:
    """The time budget of a whole run, shared out: the searches first, then the family fits.

    With ``max_seconds`` the searches together get half of it when family fits follow (all of
    it otherwise), and each step gets an equal share of what is left for its phase.
    """

    def __init__(self, max_seconds: float | None, n_searches: int, n_fits: int) -> None:
        self.start = time.perf_counter()
        self.total = max_seconds
        self.search_share = 1.0 if n_fits == 0 else 0.5
        self.left = {"search": n_searches, "fit": n_fits}

    def share(self, phase: str) -> float | None:
        """Seconds for the next step of ``phase`` (None: unbounded); counts the step."""
        self.left[phase] -= 1
        if self.total is None:
            return None
        end = self.total * (self.search_share if phase == "search" else 1.0)
        left = end - (time.perf_counter() - self.start)
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


def _candidate_row(family: str, c: float, budget: int, cand: Candidate, seconds: float) -> Row:
    shapes = " ⊗ ".join("(" + ",".join(map(str, s)) + ")" for s in cand.shapes)
    if family == "gkpd":
        notation = f"{shapes}, rank {cand.ranks[0]}"
    else:
        notation = f"{shapes} {cand.form}, ranks ({', '.join(map(str, cand.ranks))})"
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
    )


def search_rows(
    t: Any, opts: Options, clock: Clock, bar: Progress
) -> tuple[list[SearchResult | None], dict[str, list[Row]]]:
    """One search per ratio (so each ratio's certificate is the search's own for that ratio),
    and the SeKron and GKPD rows from it."""
    searches: list[SearchResult | None] = []
    rows: dict[str, list[Row]] = {"sekron": [], "gkpd": []}
    for c, b in zip(opts.compressions, opts.budgets, strict=True):
        bar.begin(f"SeKron search at {c:g}x")
        start = time.perf_counter()
        try:
            res: SearchResult | None = search(
                t,
                max_params=b,
                max_factors=opts.max_factors,
                forms=opts.forms,
                max_configs=opts.max_configs,
                max_seconds=clock.share("search"),
                progress=bar.search_callback,
                threads=opts.threads,
            )
        except ValueError:  # the budget is below every configuration's smallest structure
            res = None
        seconds = time.perf_counter() - start
        searches.append(res)
        if res is None:
            rows["sekron"].append(_no_row("sekron", c, b, "no SeKron structure fits", seconds))
            rows["gkpd"].append(_no_row("gkpd", c, b, "no SeKron structure fits", seconds))
        else:
            rows["sekron"].append(_candidate_row("sekron", c, b, res.best, seconds))
            two = [x for x in res.all if x.n_factors == 2]
            best = min(two, key=lambda x: (x.rel_error, x.n_params), default=None)
            if best is None:
                rows["gkpd"].append(_no_row("gkpd", c, b, "no 2-factor split fits", seconds))
            else:
                rows["gkpd"].append(_candidate_row("gkpd", c, b, best, seconds))
        bar.step()
    return searches, rows


def fit_row(name: str, t: Any, c: float, budget: int, opts: Options, clock: Clock) -> Row:
    """A family's own fit at one budget, or a row that says why there is none."""
    shape = tuple(int(s) for s in t.shape)
    seconds = clock.share("fit")
    if name == "tucker2" and len(shape) != 4:
        return _no_row(name, c, budget, f"{_LABELS[name]} needs a 4-way tensor")
    s = get_structure(name)
    if len(shape) < s.min_modes:
        return _no_row(name, c, budget, f"{_LABELS[name]} needs >= {s.min_modes} modes")
    try:
        fit = s._fit_checked(t, budget=budget, random_state=opts.random_state, max_seconds=seconds)
    except BudgetTooSmall as e:
        why = f"{_LABELS[name]} needs {e.smallest:,} parameters at its smallest ranks"
        return _no_row(name, c, budget, why)
    st = fit.embedding
    return Row(
        name,
        c,
        budget,
        fit.n_params,
        fit.rel_error,
        st.shapes,
        st.ranks,
        st.form,
        own_ranks=fit.ranks,
        notation=fit.describe_ranks(),
        cut_short=fit.cut_short,
        seconds=fit.seconds,
    )


def run(t: Any, opts: Options) -> CompareTable:
    """The searches, then every other family's fit at every ratio, as one table."""
    searching = "sekron" in opts.families or "gkpd" in opts.families
    fitted = [f for f in opts.families if f not in ("sekron", "gkpd")]
    n_search = len(opts.compressions) if searching else 0
    n_fits = len(fitted) * len(opts.compressions)
    clock = Clock(opts.max_seconds, n_search, n_fits)
    bar = Progress(n_search + n_fits, opts.progress)
    searches: list[SearchResult | None] = []
    by_family: dict[str, list[Row]] = {}
    try:
        if searching:
            searches, by_family = search_rows(t, opts, clock, bar)
        for fam in fitted:
            by_family[fam] = []
            for c, b in zip(opts.compressions, opts.budgets, strict=True):
                bar.begin(f"{_LABELS[fam]} at {c:g}x")
                by_family[fam].append(fit_row(fam, t, c, b, opts, clock))
                bar.step()
    finally:
        bar.close()
    return CompareTable(
        tuple(r for fam in opts.families for r in by_family[fam]),
        tensor_shape=tuple(int(s) for s in t.shape),
        compressions=opts.compressions,
        searches=tuple(searches),
        name=opts.name,
    )
