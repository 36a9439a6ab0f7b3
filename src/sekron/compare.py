"""compare(): at each compression ratio, the best error of every factorization family.

Families: the searched SeKron structure, TT, TR, CP, Tucker, Tucker-2 (4-way tensors) and GKPD
(the best 2-factor SeKron). Each family uses its best ranks under the same parameter budget,
``numel / compression``, counted by its *own* parameter count (SPEC §4).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import to_numpy
from ._validation import _type_name, check_tensor, is_int
from .search import (
    Candidate,
    SearchResult,
    _check_forms,
    _run,
    check_max_seconds,
    check_threads,
)

__all__ = ["CompareTable", "Row", "compare", "FAMILIES"]

#: Every family, in table order.
FAMILIES: tuple[str, ...] = ("sekron", "gkpd", "tt", "tr", "cp", "tucker", "tucker2")

_LABELS = {
    "sekron": "SeKron (searched)",
    "gkpd": "GKPD (S=2)",
    "tt": "TT",
    "tr": "TR",
    "cp": "CP",
    "tucker": "Tucker",
    "tucker2": "Tucker-2",
}


@dataclass(frozen=True)
class Row:
    """One cell of the table: a family at one compression ratio.

    ``rel_error`` is None (and ``reason`` says why) when the family cannot meet the budget.
    ``shapes``/``ranks``/``form`` describe the family's exact SeKron embedding; ``n_params`` is
    the family's own parameter count.
    """

    family: str
    compression: float
    budget: int
    n_params: int | None
    rel_error: float | None
    shapes: tuple[tuple[int, ...], ...] | None
    ranks: tuple[int, ...] | None
    form: str | None
    reason: str | None = None

    def describe(self) -> str:
        if self.rel_error is None:
            return f"— ({self.reason})"
        assert self.shapes is not None and self.ranks is not None
        if self.family in ("sekron", "gkpd"):
            shapes = "⊗".join("(" + ",".join(map(str, s)) + ")" for s in self.shapes)
            return f"{shapes} {self.form} r={','.join(map(str, self.ranks))}"
        return f"r={','.join(map(str, self.ranks))}"


class CompareTable:
    """Result of :func:`compare`: rows = families, columns = compression ratios.

    ``str(table)`` prints it; :meth:`to_json`, :meth:`rows`, :meth:`plot` export it;
    ``table["tt", 4]`` gives one :class:`Row`.
    """

    def __init__(
        self,
        rows: Sequence[Row],
        *,
        tensor_shape: tuple[int, ...],
        compressions: tuple[float, ...],
        searches: Sequence[SearchResult | None],
    ) -> None:
        self._rows = tuple(rows)
        self.tensor_shape = tensor_shape
        self.compressions = compressions
        self.searches = tuple(searches)
        self.families = tuple(dict.fromkeys(r.family for r in self._rows))

    @property
    def rows(self) -> tuple[Row, ...]:
        return self._rows

    def __getitem__(self, key: tuple[str, float]) -> Row:
        family, c = key
        for r in self._rows:
            if r.family == family and r.compression == float(c):
                return r
        raise KeyError(f"no row for family {family!r} at compression {c!r}.")

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows: family, compression, budget, n_params, rel_error, shapes, ranks, form,
        reason."""
        out = []
        for r in self._rows:
            d = asdict(r)
            d["shapes"] = None if r.shapes is None else [list(s) for s in r.shapes]
            d["ranks"] = None if r.ranks is None else list(r.ranks)
            out.append(d)
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """The rows as JSON, ``{"tensor_shape": .., "rows": [..]}``; also written to ``path``."""
        text = json.dumps(
            {"tensor_shape": list(self.tensor_shape), "rows": self.to_records()}, indent=1
        )
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def __str__(self) -> str:
        head = ["family"] + [f"{c:g}x" for c in self.compressions]
        lines_err: list[list[str]] = []
        lines_str: list[list[str]] = []
        for fam in self.families:
            errs, strs = [_LABELS.get(fam, fam)], [""]
            for c in self.compressions:
                r = self[fam, c]
                if r.rel_error is None:
                    errs.append("—")
                    strs.append(str(r.reason))
                else:
                    errs.append(f"{r.rel_error:.4f}")
                    strs.append(r.describe())
            lines_err.append(errs)
            lines_str.append(strs)
        widths = [max(len(x[i]) for x in [head, *lines_err, *lines_str]) for i in range(len(head))]

        def fmt(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        shape = "x".join(map(str, self.tensor_shape))
        out = [
            f"relative error at equal parameter budgets, tensor {shape} "
            f"({prod(self.tensor_shape):,} entries)",
            fmt(head),
            fmt(["-" * w for w in widths]),
        ]
        for e, s in zip(lines_err, lines_str, strict=True):
            out.append(fmt(e))
            out.append(fmt(s))
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def plot(self, path: str | Path | None = None) -> Any:
        """Error against compression, one line per family (matplotlib, Agg; no display).

        Returns the matplotlib Figure; writes it to ``path`` (PNG by extension) if given.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.2), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        markers = "osD^v<>"
        for i, fam in enumerate(self.families):
            pts = [
                (c, self[fam, c].rel_error)
                for c in self.compressions
                if self[fam, c].rel_error is not None
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=markers[i % len(markers)], label=_LABELS.get(fam, fam))
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(self.compressions))
        ax.set_xticklabels([f"{c:g}x" for c in self.compressions])
        ax.set_xlabel("compression (numel / parameters)")
        ax.set_ylabel("relative Frobenius error")
        ax.set_title(f"tensor {'x'.join(map(str, self.tensor_shape))}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(str(path))
        return fig


def _check_compressions(compression: Any) -> tuple[float, ...]:
    items = [compression] if isinstance(compression, int | float) else compression
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not items:
        raise TypeError(
            "compression must be a number > 1 or a non-empty sequence of them; got "
            f"{_type_name(compression)}."
        )
    out = []
    for i, c in enumerate(items):
        if isinstance(c, bool) or not isinstance(c, int | float | np.number):
            raise TypeError(f"compression[{i}] must be a number > 1; got {_type_name(c)}.")
        if not float(c) > 1.0 or not np.isfinite(float(c)):
            raise ValueError(f"compression[{i}] must be a finite number > 1; got {c!r}.")
        out.append(float(c))
    return tuple(sorted(set(out)))


def _own_params(name: str, structure: Any, shape: tuple[int, ...], st: Any, budget: int) -> int:
    """The family's own parameter count of a fitted embedding (SPEC §4)."""
    if name == "cp":
        return int(st.ranks[0]) * sum(shape)
    if name == "tucker2":
        return int(structure.n_params(shape, st.ranks))
    if name == "tucker":
        # the last factor absorbs the core: its rank over (t_1..t_{N-1}) is t_N
        last = np.asarray(to_numpy(st.factors[-1]), dtype=np.float64).reshape(prod(st.ranks), -1)
        t_last = int(np.linalg.matrix_rank(last)) or 1
        return int(structure.n_params(shape, (*st.ranks, t_last)))
    if name == "tr":
        return int(structure.n_params(shape, structure._budget_rank(shape, budget)))
    return int(st.n_params)  # TT: the chain embedding is the train itself


def _fit_family(
    name: str, t: Any, shape: tuple[int, ...], c: float, budget: int, random_state: Any
) -> Row:
    from . import structures

    if name == "tucker2" and len(shape) != 4:
        return Row(name, c, budget, None, None, None, None, None, "needs a 4-way tensor")
    if name != "tucker2" and len(shape) < 2:
        return Row(name, c, budget, None, None, None, None, None, "needs >= 2 modes")
    s = structures.get_structure(name)
    try:
        st = s.fit(t, max_params=budget, random_state=random_state)
    except ValueError as e:
        reason = str(e).split(";")[0].split(":")[0]
        return Row(name, c, budget, None, None, None, None, None, reason[:60])
    return Row(
        name,
        c,
        budget,
        _own_params(name, s, shape, st, budget),
        float(st.rel_error or 0.0),
        tuple(st.shapes),
        tuple(st.ranks),
        st.form,
    )


def _candidate_row(family: str, c: float, budget: int, cand: Candidate | None, why: str) -> Row:
    if cand is None:
        return Row(family, c, budget, None, None, None, None, None, why)
    return Row(family, c, budget, cand.n_params, cand.rel_error, cand.shapes, cand.ranks, cand.form)


def compare(
    tensor: Any,
    *,
    compression: float | Sequence[float] = (2, 4, 8, 16),
    max_factors: int = 3,
    families: Sequence[str] = FAMILIES,
    forms: Sequence[str] = ("nested", "chain"),
    max_configs: int | None = None,
    max_seconds: float | None = None,
    random_state: Any = 0,
    progress: bool | Callable[[int, int], Any] | None = None,
    threads: int | None = None,
) -> CompareTable:
    """Best relative error of each factorization family at each compression ratio.

    Parameters
    ----------
    tensor : array
        numpy, torch or jax array with at least one mode (TT/TR/CP/Tucker need >= 2 modes,
        Tucker-2 exactly 4).
    compression : float or sequence of floats > 1
        Compression ratios; the budget of each is ``floor(numel / compression)`` parameters.
    max_factors : int >= 2
        Largest number of Kronecker factors the SeKron search considers.
    families : sequence of str
        Subset of :data:`FAMILIES` (``"sekron", "gkpd", "tt", "tr", "cp", "tucker",
        "tucker2"``).
    forms, max_configs, max_seconds, threads
        Passed to :func:`sekron.search` (``max_seconds`` bounds the one shared search; each
        SeKron row's search result in ``table.searches`` says whether its best is certified).
    random_state : None, int or Generator
        Seed for the iterative fits (CP, TR, Tucker); the table is deterministic by default.
    progress : bool or callable, optional
        Progress of the SeKron search (see :func:`sekron.search`).

    Returns
    -------
    CompareTable
        ``str(table)`` prints rows = families, columns = compression ratios; ``table.to_json()``
        exports the rows; ``table.plot(path)`` draws error against compression.

    Notes
    -----
    The SeKron search runs once for all budgets (the SVDs are shared). GKPD is the best
    2-factor SeKron configuration, which the search evaluates exhaustively. A family that cannot
    meet a budget gets a row with ``rel_error=None`` and a ``reason``, not an exception.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.compare import compare
    >>> W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    >>> table = compare(W, compression=(2, 4), families=("sekron", "tt", "cp"), progress=False)
    >>> table["sekron", 4].n_params <= W.size // 4
    True
    >>> sorted(table.to_records()[0])  # doctest: +NORMALIZE_WHITESPACE
    ['budget', 'compression', 'family', 'form', 'n_params', 'ranks', 'reason',
     'rel_error', 'shapes']
    """
    comps = _check_compressions(compression)
    if not is_int(max_factors) or int(max_factors) < 2:
        raise ValueError(f"max_factors must be an int >= 2; got {max_factors!r}.")
    fams = tuple(dict.fromkeys(str(f).lower() for f in families))
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown or not fams:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}; got {families!r}.")
    form_t = _check_forms(forms)
    max_seconds = check_max_seconds(max_seconds)
    n_threads = check_threads(threads)
    t, _ = check_tensor(tensor)
    shape = tuple(int(s) for s in t.shape)
    numel = prod(shape)
    budgets = [max(1, int(numel / c)) for c in comps]

    searches: list[SearchResult | None] = []
    if "sekron" in fams or "gkpd" in fams:
        searches = _search_all(
            t, budgets, max_factors, form_t, max_configs, max_seconds, n_threads, progress
        )
    rows: list[Row] = []
    for fam in fams:
        for i, (c, b) in enumerate(zip(comps, budgets, strict=True)):
            if fam in ("sekron", "gkpd"):
                res = searches[i] if searches else None
                if res is None:
                    why = "no SeKron configuration fits"
                    rows.append(_candidate_row(fam, c, b, None, why))
                    continue
                if fam == "sekron":
                    rows.append(_candidate_row(fam, c, b, res.best, ""))
                else:
                    two = [x for x in res.all if x.n_factors == 2]
                    best = min(two, key=lambda x: (x.rel_error, x.n_params), default=None)
                    rows.append(_candidate_row(fam, c, b, best, "no 2-factor split fits"))
            else:
                rows.append(_fit_family(fam, t, shape, c, b, random_state))
    return CompareTable(rows, tensor_shape=shape, compressions=comps, searches=searches)


def _search_all(
    t: Any,
    budgets: list[int],
    max_factors: int,
    forms: tuple[str, ...],
    max_configs: int | None,
    max_seconds: float | None,
    threads: int,
    progress: Any,
) -> list[SearchResult | None]:
    """One shared search for every budget that some configuration fits; None for the others."""
    out: list[SearchResult | None] = [None] * len(budgets)
    ok = [i for i, b in enumerate(budgets) if b >= 2]
    try:
        results = _run(
            t,
            [budgets[i] for i in ok],
            max_factors=int(max_factors),
            forms=forms,
            max_configs=max_configs,
            svd="auto",
            random_state=None,
            exhaustive=False,
            progress=progress,
            max_seconds=max_seconds,
            threads=threads,
        )
        for i, r in zip(ok, results, strict=True):
            out[i] = r
    except ValueError:
        # some budget is below every structure: search the budgets one at a time
        for i in ok:
            try:
                out[i] = _run(
                    t,
                    [budgets[i]],
                    max_factors=int(max_factors),
                    forms=forms,
                    max_configs=max_configs,
                    svd="auto",
                    random_state=None,
                    exhaustive=False,
                    progress=progress,
                    max_seconds=max_seconds,
                    threads=threads,
                )[0]
            except ValueError:
                out[i] = None
    return out
