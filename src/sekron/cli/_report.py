"""What ``sekron compare`` reports: the per-layer results, the summary table of a checkpoint and
the JSON document with its provenance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LayerResult", "document", "summary_table"]

#: Width the printed summary table fits in.
WIDTH = 100

_SHORT = {
    "sekron": "SeKron",
    "gkpd": "GKPD",
    "tt": "TT",
    "tr": "TR",
    "cp": "CP",
    "tucker": "Tucker",
    "tucker2": "Tucker-2",
}


@dataclass
class LayerResult:
    """The comparison of one tensor: one :class:`~sekron.CompareTable` per group of families
    fitted together (``sekron`` and ``gkpd`` share one search), with the seconds each took."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    parts: list[tuple[tuple[str, ...], Any, float]] = field(default_factory=list)

    @property
    def families(self) -> list[str]:
        return [f for fams, _, _ in self.parts for f in fams]

    def table(self) -> Any:
        """All finished rows as one CompareTable."""
        from ..compare import CompareTable

        if len(self.parts) == 1:
            return self.parts[0][1]
        rows = [r for _, t, _ in self.parts for r in t.rows]
        searches: Sequence[Any] = next((t.searches for _, t, _ in self.parts if t.searches), [])
        comps = self.parts[0][1].compressions
        return CompareTable(
            rows, tensor_shape=self.shape, compressions=comps, searches=searches, name=self.name
        )

    def plot(self, path: Path) -> None:
        """The table's plot, titled with the layer's name, written to ``path``."""
        self.table().plot(path)


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _search_record(c: float, s: Any) -> dict[str, Any]:
    return {
        "compression": c,
        "budget": s.budget,
        "max_macs": s.max_macs,
        "n_configs": s.n_configs,
        "n_evaluated": len(s.all),
        "n_pruned": s.n_pruned,
        "certified": bool(s.certified),
        "bound": _finite(s.bound),
        "n_open": s.n_open,
        "interrupted": bool(s.interrupted),
        "timed_out": bool(s.timed_out),
        "seconds": s.seconds,
    }


def _layer_document(layer: LayerResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    table = layer.table()
    searches = {
        c: _search_record(c, s)
        for c, s in zip(table.compressions, table.searches, strict=False)
        if s is not None
    }
    rows = []
    for rec in table.to_records():
        rec = {"layer": layer.name, **rec}
        cert = searches.get(rec["compression"])
        if rec["family"] == "sekron" and cert is not None:
            rec.update({k: cert[k] for k in ("certified", "bound", "n_open")})
        rows.append(rec)
    meta = {
        "key": layer.name,
        "shape": list(layer.shape),
        "dtype": layer.dtype,
        "families": layer.families,
        "seconds": _seconds_by_family(table, layer),
        "searches": list(searches.values()),
        "effort": table.effort(),
    }
    return meta, rows


def _seconds_by_family(table: Any, layer: LayerResult) -> dict[str, float]:
    """Wall time of each family's fits (the SeKron searches for sekron and gkpd, which share
    them), and of the whole comparison of the layer."""
    out: dict[str, float] = {}
    for r in table.rows:
        key = "sekron+gkpd" if r.family in ("sekron", "gkpd") else r.family
        if r.seconds is not None and not (r.family == "gkpd" and "sekron" in table.families):
            out[key] = round(out.get(key, 0.0) + r.seconds, 4)
    out["total"] = round(sum(sec for _, _, sec in layer.parts), 4)
    return out


def document(
    layers: Sequence[LayerResult],
    *,
    source: dict[str, Any],
    options: dict[str, Any],
    partial: bool,
    version: str,
) -> dict[str, Any]:
    """The JSON document of a run: provenance, per-layer metadata and every row of every layer.

    ``rows`` holds every row (each with its ``layer``); SeKron rows carry the search's
    certificate (``certified``, ``bound``, ``n_open``). ``layers[i].seconds`` is the wall time
    of each group of families (``"sekron+gkpd"`` share one search). ``partial`` is true when
    the run was interrupted and holds only the families and layers that finished.
    """
    metas, rows = [], []
    for layer in layers:
        meta, layer_rows = _layer_document(layer)
        metas.append(meta)
        rows.extend(layer_rows)
    doc: dict[str, Any] = {
        "sekron_version": version,
        "command": "sekron compare",
        "input": source,
        "options": options,
        "partial": partial,
        "layers": metas,
    }
    if len(layers) == 1:
        doc["tensor_shape"] = list(layers[0].shape)
    doc["rows"] = rows
    return doc


def _best_cells(layer: LayerResult, comps: Sequence[float]) -> list[str]:
    table = layer.table()
    cells = []
    for c in comps:
        fitted = [r for r in table.rows if r.compression == c and r.rel_error is not None]
        best = min(fitted, key=lambda r: (r.rel_error, r.n_params), default=None)
        cells.append(
            "—" if best is None else f"{_SHORT.get(best.family, best.family)} {best.rel_error:.4f}"
        )
    return cells


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def summary_table(layers: Sequence[LayerResult], comps: Sequence[float]) -> str:
    """Per layer, the best family and its relative error at each compression ratio.

    Fits in :data:`WIDTH` columns: long layer names are cut from the left, and ratios that do
    not fit side by side go into further blocks below.
    """
    shapes = ["x".join(map(str, layer.shape)) for layer in layers]
    cells = [_best_cells(layer, comps) for layer in layers]
    cell_w = max([len(c) for row in cells for c in row] + [len(f"{c:g}x") for c in comps])
    shape_w = max(len(s) for s in [*shapes, "shape"])
    per_block = max(1, (WIDTH - shape_w - 2 - 16) // (cell_w + 2))
    out = [
        f"best family per layer and its relative error at equal parameter budgets ({len(layers)})"
    ]
    for start in range(0, len(comps), per_block):
        block = range(start, min(start + per_block, len(comps)))
        name_w = WIDTH - shape_w - 2 - len(block) * (cell_w + 2)
        name_w = min(name_w, max(len(n) for n in [*(x.name for x in layers), "layer"]))
        head = ["layer".ljust(name_w), "shape".ljust(shape_w)]
        head += [f"{comps[i]:g}x".ljust(cell_w) for i in block]
        out.append("  ".join(head).rstrip())
        out.append("  ".join("-" * len(h) for h in head))
        for layer, shape, row in zip(layers, shapes, cells, strict=True):
            line = [_fit(layer.name, name_w).ljust(name_w), shape.ljust(shape_w)]
            line += [row[i].ljust(cell_w) for i in block]
            out.append("  ".join(line).rstrip())
    return "\n".join(out)
