"""The result of :func:`sekron.torch.compress`: one immutable row per conv layer and the
whole model's totals, printable as a table and exportable as dicts or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, overload

__all__ = ["CompressionReport", "LayerReport"]


@dataclass(frozen=True)
class LayerReport:
    """One row of a :class:`CompressionReport`: a conv layer, replaced or skipped.

    ``skipped`` is None for a replaced layer and the reason otherwise (then the "after"
    numbers equal the "before" ones and ``structure``, ``form``, ``shapes``, ``ranks`` and
    ``rel_error`` are None). MACs are None when they were not counted; they are per output
    position when the report's ``macs_per_position`` is true. ``cut_short`` is True when the
    layer's search stopped at ``max_seconds`` (or was interrupted) before every configuration
    was evaluated or pruned; ``search_note`` then says what its certificate says (shown in the
    table's note column).
    """

    name: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    structure: str | None = None
    form: str | None = None
    shapes: tuple[tuple[int, ...], ...] | None = None
    ranks: tuple[int, ...] | None = None
    rel_error: float | None = None
    skipped: str | None = None
    cut_short: bool = False
    search_note: str | None = None

    @property
    def replaced(self) -> bool:
        return self.skipped is None

    @property
    def compression(self) -> float:
        """``params_before / params_after`` (bias included on both sides)."""
        return self.params_before / self.params_after


@dataclass(frozen=True, repr=False)
class CompressionReport(Sequence[LayerReport]):
    """The per-layer rows of :func:`compress`, with whole-model totals.

    A sequence of :class:`LayerReport` in model order. ``str(report)`` is a table;
    :meth:`to_dicts` and :meth:`to_json` export it.

    Immutable, like its rows.

    Attributes
    ----------
    rows : tuple of LayerReport
    params_before, params_after : int
        Parameters of the whole model (every layer, not only the convolutions).
    macs_before, macs_after : int or None
        MACs of the whole model (conv, linear and SeKron layers) for the recorded input;
        None without ``input_shape``/``example_input``.
    input_shape : tuple of int or None
    macs_per_position : bool
        True when the rows' MACs are per output position (no input was given).
    """

    rows: tuple[LayerReport, ...]
    params_before: int = field(kw_only=True)
    params_after: int = field(kw_only=True)
    macs_before: int | None = field(default=None, kw_only=True)
    macs_after: int | None = field(default=None, kw_only=True)
    input_shape: tuple[int, ...] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))

    @overload
    def __getitem__(self, index: int) -> LayerReport: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[LayerReport]: ...

    def __getitem__(self, index: int | slice) -> LayerReport | Sequence[LayerReport]:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self.rows)

    @property
    def replaced(self) -> list[str]:
        """Names of the layers that were replaced."""
        return [r.name for r in self.rows if r.replaced]

    @property
    def skipped(self) -> dict[str, str]:
        """``{name: reason}`` of the layers left dense."""
        return {r.name: r.skipped for r in self.rows if r.skipped is not None}

    @property
    def macs_per_position(self) -> bool:
        """True when the rows' MACs are per output position (no input was given)."""
        return self.input_shape is None

    def to_dicts(self) -> list[dict[str, Any]]:
        """One plain dict per row (tuples become lists only in :meth:`to_json`)."""
        return [asdict(r) for r in self.rows]

    def to_json(self, **kwargs: Any) -> str:
        """The rows and totals as JSON (``kwargs`` go to ``json.dumps``)."""
        data = {
            "layers": self.to_dicts(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "input_shape": self.input_shape,
            "macs_per_position": self.macs_per_position,
        }
        return json.dumps(data, **kwargs)

    def __repr__(self) -> str:
        return (
            f"CompressionReport({len(self.replaced)} of {len(self)} conv layers replaced, "
            f"params {self.params_before:,} -> {self.params_after:,})"
        )

    def __str__(self) -> str:
        macs_head = "MACs/position" if self.macs_per_position else "MACs"
        head = ["layer", "shape", "structure", "ranks", "params", macs_head, "rel.err", "note"]
        lines = [head]
        for r in self.rows:
            lines.append(
                [
                    r.name,
                    "x".join(map(str, r.shape)),
                    "" if r.structure is None else _structure_text(r),
                    "" if r.ranks is None else ",".join(map(str, r.ranks)),
                    _arrow(r.params_before, r.params_after),
                    _arrow(r.macs_before, r.macs_after),
                    "" if r.rel_error is None else f"{r.rel_error:.3g}",
                    _note(r),
                ]
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
        out = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        total = f"model params {_arrow(self.params_before, self.params_after)}"
        if self.params_after:
            total += f" ({self.params_before / self.params_after:.2f}x)"
        if self.macs_before is not None and self.macs_after is not None:
            total += f"; MACs {_arrow(self.macs_before, self.macs_after)}"
            total += f" ({self.macs_before / max(self.macs_after, 1):.2f}x)"
            total += f" for input {self.input_shape}"
        out.append(total)
        return "\n".join(out)


def _note(r: LayerReport) -> str:
    if r.skipped is not None:
        return f"skipped: {r.skipped}"
    if r.cut_short:
        return f"search {r.search_note}" if r.search_note else "search cut short"
    return ""


def _arrow(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return ""
    return f"{before:,} -> {after:,}" if before != after else f"{before:,}"


def _structure_text(r: LayerReport) -> str:
    shapes = " ".join("(" + ",".join(map(str, s)) + ")" for s in (r.shapes or ()))
    return f"{r.structure}: {r.form} {shapes}"
