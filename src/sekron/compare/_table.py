"""The result of :func:`sekron.compare.compare`: rows, a text table within 100 columns, a plot."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._typing import Ranks, Shapes
from .._validation import _type_name

if TYPE_CHECKING:
    from ..search import SearchResult

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

#: Width of ``str(table)``.
WIDTH = 100


@dataclass(frozen=True)
class Row:
    """One cell of the table: a family at one compression ratio.

    ``rel_error`` is None (and ``reason`` says why) when the family cannot meet the budget.
    ``shapes``/``ranks``/``form`` describe the family's exact SeKron embedding; ``n_params`` is
    the family's own parameter count (the parameters it actually uses, at most ``budget``),
    ``own_ranks`` its ranks in its own notation and ``notation`` both as text (``rank 186`` for
    CP, one rank per mode for Tucker). ``cut_short`` says that ``max_seconds`` stopped the
    family's iterations early; ``seconds`` is the wall time of the row's fit. For the SeKron
    row, ``refined`` says that ``rel_error`` is a joint (ALS) fit's measured error, and
    ``greedy_error`` is the greedy search's best error at that ratio.

    ``macs`` (a 4-way conv weight ``(F, C, kh, kw)`` only; None otherwise) is the MACs per
    output position of the factorized plan that :func:`sekron.torch.conv2d` runs for the
    row's SeKron embedding, as :func:`sekron.torch.sekron_conv_macs` counts them with
    ``in_hw=None``; for two families, of an equally exact embedding that costs less: Tucker-2
    as the chain (F)(H, W)(C) (its 1x1 -> kh x kw -> 1x1 plan), CP in the factor order
    (F)(kh)(kw)(C) or whichever costs least (``R (F + C + kh + kw)``). The dense conv costs
    ``F*C*kh*kw``. ``over_mac_budget`` says that ``macs`` exceeds the
    table's ``max_macs`` (a family fitted by parameters alone, reported as it comes).
    """

    family: str
    compression: float
    budget: int
    n_params: int | None
    rel_error: float | None
    shapes: Shapes | None
    ranks: Ranks | None
    form: str | None
    reason: str | None = None
    own_ranks: Ranks | None = None
    notation: str | None = None
    cut_short: bool = False
    seconds: float | None = None
    refined: bool = False
    greedy_error: float | None = None
    macs: int | None = None
    over_mac_budget: bool = False

    def describe(self) -> str:
        """The structure in the family's own notation, or why there is none."""
        if self.rel_error is None:
            return f"— ({self.reason})"
        if self.notation is not None:
            return self.notation
        return f"ranks ({', '.join(map(str, self.ranks or ()))})"


def _best(rows: Sequence[Row]) -> float | None:
    errs = [r.rel_error for r in rows if r.rel_error is not None]
    return min(errs) if errs else None


@dataclass(frozen=True, repr=False, eq=False)
class CompareTable:
    """Result of :func:`compare`: rows = families, columns = compression ratios (immutable).

    ``str(table)`` prints it (within 100 columns: errors with the best per ratio marked, then
    each family's structure in its own notation and the parameters it uses); :meth:`to_json`,
    :meth:`to_records`, :meth:`plot` export it; ``table["tt", 4]`` gives one :class:`Row`.
    ``searches`` holds the SeKron search of each ratio (None where none ran), ``name`` the
    tensor's name (a layer), shown in the header and the plot's title. ``sweeps`` is the effort
    every fit was given (ALS sweeps or iterations, see :func:`sekron.compare.compare`).
    ``interrupted`` says that Ctrl-C stopped the run: the rows not finished say so.
    ``max_macs`` is the MAC budget per output position the search ran within (None: none);
    rows above it are marked ``!`` in the text and ``over_mac_budget`` in the rows.
    """

    rows: Sequence[Row]
    _: KW_ONLY
    tensor_shape: Sequence[int]
    compressions: Sequence[float]
    searches: Sequence[SearchResult | None] = ()
    name: str | None = None
    sweeps: int = 0
    interrupted: bool = False
    max_macs: int | None = None
    families: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:  # any sequences in, tuples stored
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "tensor_shape", tuple(self.tensor_shape))
        object.__setattr__(self, "compressions", tuple(self.compressions))
        object.__setattr__(self, "searches", tuple(self.searches))
        object.__setattr__(self, "families", tuple(dict.fromkeys(r.family for r in self.rows)))

    def __getitem__(self, key: tuple[str, float]) -> Row:
        if not isinstance(key, tuple) or len(key) != 2:
            raise TypeError(f"key must be a pair (family, compression); got {key!r}.")
        family, c = key
        for r in self.rows:
            if r.family == family and r.compression == float(c):
                return r
        raise KeyError(f"no row for family {family!r} at compression {c!r}.")

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows: every field of :class:`Row`, tuples as lists."""
        out = []
        for r in self.rows:
            d = asdict(r)
            for key in ("shapes", "ranks", "own_ranks"):
                v = getattr(r, key)
                d[key] = None if v is None else [list(s) if isinstance(s, tuple) else s for s in v]
            out.append(d)
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """The rows as JSON, ``{"tensor_shape": .., "rows": [..]}``; also written to ``path``."""
        text = json.dumps(
            {
                "tensor_shape": list(self.tensor_shape),
                "effort": self.effort(),
                "max_macs": self.max_macs,
                "rows": self.to_records(),
            },
            indent=1,
        )
        if path is not None:
            _check_path(path, "path").write_text(text + "\n")
        return text

    def __str__(self) -> str:
        shape = "x".join(map(str, self.tensor_shape))
        what = f"{self.name}, tensor {shape}" if self.name else f"tensor {shape}"
        size = f"{prod(self.tensor_shape):,} entries"
        head = f"relative error at equal parameter budgets: {what} ({size})"
        notes: dict[str, int] = {}
        lines = textwrap.wrap(head, WIDTH)
        lines += textwrap.wrap("effort: " + self.effort(), WIDTH)
        lines += self._error_lines(notes)
        lines += self._structure_lines(notes)
        if notes:
            lines.append("notes:")
            for text, i in notes.items():
                lines += textwrap.wrap(
                    text,
                    WIDTH,
                    initial_indent=f"  [{i}] ",
                    subsequent_indent="      ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def effort(self) -> str:
        """What every fit was given, as text (also the JSON's ``effort``)."""
        n, fams = self.sweeps, set(self.families)
        parts = []
        if "sekron" in fams:
            parts.append(
                f"SeKron: greedy search, then {n} ALS sweeps of joint fits"
                if n
                else "SeKron: greedy search only (one pass of SVDs)"
            )
        if "gkpd" in fams:
            parts.append("GKPD: exact (SVD)")
        if "tt" in fams:
            parts.append(f"TT: TT-SVD, then {n} ALS sweeps" if n else "TT: TT-SVD")
        if "cp" in fams:
            parts.append(f"CP: {n} iterations of CP-ALS" if n else "CP: CP-ALS (its default)")
        hooi = [f for f in ("tucker", "tucker2") if f in fams]
        if hooi:
            names = "/".join(_LABELS[f] for f in hooi)
            parts.append(f"{names}: {n} iterations of HOOI" if n else f"{names}: HOOI")
        if "tr" in fams:
            parts.append("TR: TR-SVD (no iterations)")
        return "; ".join(parts)

    def _cell(self, r: Row, best: float | None, notes: dict[str, int]) -> str:
        if r.rel_error is None:
            i = notes.setdefault(str(r.reason), len(notes) + 1)
            return f"—  [{i}]"
        mark = " *" if best is not None and r.rel_error <= best else ""
        over = " !" if r.over_mac_budget else ""
        return f"{r.rel_error:.4f}{mark}{' +' if r.cut_short else ''}{over}"

    def _error_lines(self, notes: dict[str, int]) -> list[str]:
        label_w = max(len(_LABELS.get(f, f)) for f in self.families)
        best = {c: _best([self[f, c] for f in self.families]) for c in self.compressions}
        cells = {
            (f, c): self._cell(self[f, c], best[c], notes)
            for f in self.families
            for c in self.compressions
        }
        col_w = max(10, *(len(v) for v in cells.values()))
        per_block = max(1, (WIDTH - label_w) // (col_w + 2))
        out: list[str] = []
        for i in range(0, len(self.compressions), per_block):
            block = self.compressions[i : i + per_block]
            out.append("")
            out.append(
                "  ".join(
                    ["family".ljust(label_w), *(f"{c:g}x".ljust(col_w) for c in block)]
                ).rstrip()
            )
            out.append("  ".join(["-" * label_w, *("-" * col_w for _ in block)]))
            for f in self.families:
                row = [_LABELS.get(f, f).ljust(label_w), *(cells[f, c].ljust(col_w) for c in block)]
                out.append("  ".join(row).rstrip())
        legend = "* best at that ratio"
        if any(r.cut_short for r in self.rows):
            legend += "   + iterations cut short by max_seconds"
        if any(r.over_mac_budget for r in self.rows):
            legend += f"   ! plan above the MAC budget ({self.max_macs:,} per position)"
        if notes:
            legend += "   [n] no fit: see the notes"
        out += textwrap.wrap(legend, WIDTH, break_long_words=False, break_on_hyphens=False)
        return out

    def _structure_lines(self, notes: dict[str, int]) -> list[str]:
        label_w = max(len(_LABELS.get(f, f)) for f in self.families)
        conv = len(self.tensor_shape) == 4  # a conv weight: its plans' MACs beside the params
        text_w = WIDTH - label_w - 4 - 11 - (15 if conv else 0)
        head = "structures, in each family's own notation, and the parameters they use"
        if conv:
            head = (
                "structures, in each family's own notation, the parameters they use and the "
                "MACs per output position of their factorized plan (the dense conv: "
                f"{prod(self.tensor_shape):,})"
            )
        out = ["", *textwrap.wrap(head + ":", WIDTH)]
        for c in self.compressions:
            budget = self[self.families[0], c].budget
            mac = "" if self.max_macs is None else f", {self.max_macs:,} MACs per position"
            out.append(f"{c:g}x (budget {budget:,} parameters{mac})")
            if conv:
                out.append(f"  {'':{label_w + text_w}}  {'params':>11}{'MACs':>15}".rstrip())
            for f in self.families:
                r = self[f, c]
                if r.rel_error is None:
                    text, used = f"no fit: see note [{notes[str(r.reason)]}]", ""
                else:
                    text, used = r.describe(), f"{r.n_params:,}".rjust(11)
                    if conv:
                        over = " !" if r.over_mac_budget else ""
                        used += f"{r.macs:,}{over}".rjust(15) if r.macs is not None else ""
                wrapped = textwrap.wrap(
                    text, text_w, break_long_words=False, break_on_hyphens=False
                )
                for j, part in enumerate(wrapped or [""]):
                    label = _LABELS.get(f, f) if j == 0 else ""
                    tail = used if j == 0 else ""
                    out.append(f"  {label.ljust(label_w)}  {part.ljust(text_w)}{tail}".rstrip())
        return out

    def plot(self, path: str | Path | None = None, *, title: str | None = None) -> Any:
        """Error against compression, one line per family (matplotlib, Agg; no display).

        Every family has its own marker and line style (and markers shrink down the legend),
        so lines that coincide (GKPD on SeKron, Tucker-2 on Tucker) stay visible.

        Parameters
        ----------
        path : str or Path, optional
            Where to write the figure, in the format its extension names (PNG without one);
            written to exactly this path.
        title : str, optional
            The figure's title; by default the table's ``name`` (a layer) and tensor shape.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        TypeError, ValueError
            A ``path`` that is not a str or Path, or whose extension matplotlib cannot write
            (checked before drawing); a ``title`` that is not a str.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if title is not None and not isinstance(title, str):
            raise TypeError(f"title must be a str or None; got {_type_name(title)}.")
        fig = Figure(figsize=(6.4, 4.2), dpi=120)
        canvas = FigureCanvasAgg(fig)
        fmt = None
        if path is not None:
            fmt = _check_path(path, "path").suffix[1:].lower() or "png"
            if fmt not in canvas.get_supported_filetypes():
                raise ValueError(
                    f"path {str(path)!r} has the extension {fmt!r}; plot writes "
                    f"{sorted(canvas.get_supported_filetypes())} (no extension: png)."
                )
        ax = fig.add_subplot(1, 1, 1)
        for i, fam in enumerate(self.families):
            pts = [(c, self[fam, c].rel_error) for c in self.compressions]
            pts = [(c, e) for c, e in pts if e is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_STYLES[i % len(_STYLES)],
                    markersize=10 - i,
                    markerfacecolor="none" if i % 2 else None,
                    label=_LABELS.get(fam, fam),
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(self.compressions))
        ax.set_xticklabels([f"{c:g}x" for c in self.compressions])
        ax.set_xlabel("compression (numel / parameters)")
        ax.set_ylabel("relative Frobenius error")
        shape = "x".join(map(str, self.tensor_shape))
        default = f"{self.name}: tensor {shape}" if self.name else f"tensor {shape}"
        ax.set_title(default if title is None else title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(str(path), format=fmt)
        return fig


def _check_path(path: object, name: str) -> Path:
    if not isinstance(path, str | Path):
        raise TypeError(f"{name} must be a str or pathlib.Path; got {_type_name(path)}.")
    return Path(path)


_MARKERS = ("o", "s", "D", "^", "v", "P", "X")
_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 2)))
