"""Which structure wins, layer by layer: ``sekron.compare`` on every bundled trained conv weight.

Run:  python benchmarks/compare_models.py [--quick] [--only PREFIX ...] [--max-seconds S]

For every conv layer of the two bundled trained models (the digits CNN's four layers, from
``sekron.data``, and the wide CNN's four, ``benchmarks/data/wide_digits_cnn.npz``, the 512x512x3x3
``features.11`` among them) at 4 and 8x, and for the embedded example at 2, 4, 8 and 16x, this
runs ``sekron.compare`` with its defaults (the refined search, every family) and records, per
layer and ratio, each family's relative error, parameters and MACs per output position of its
factorized plan; and per family its time and its peak of traced memory (``tracemalloc``: numpy
and Python allocations), from a ``compare`` of that family alone (the SeKron search alone then
fits its own CP, TT and Tucker-2 warm starts). It also times the whole default
``sekron compare`` command in a subprocess with its peak resident memory (``ru_maxrss``).

The wide model's two large layers (512x128x3x3 and 512x512x3x3) would need two more complete
searches each for that, and CP-ALS alone took 439 s on the 512x128x3x3 layer: there the costs
come from one full compare, run under ``tracemalloc`` (each family's time is its rows'
``seconds``, the peak the whole compare's). Each layer's ``cost_method`` says how its costs
were measured (the 512x128x3x3 layer's run had the search's from the full compare and each
other family alone).

``--only PREFIX ...`` measures only the layers whose names start with a prefix (``wide/``) and
keeps every other layer of the existing results file (and its whole-command timing); the
results are written after each layer.

Writes ``benchmarks/results/compare_models.json`` and ``compare_models.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

import sekron
from sekron.data import example_keys, example_weight

RESULTS = Path(__file__).parent / "results"
WIDE = Path(__file__).parent / "data" / "wide_digits_cnn.npz"


#: Layers above this many entries: the search's cost is measured in the full compare.
LARGE = 1 << 19


def layers(quick: bool) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    out = [("digits/" + k, example_weight(k), (4.0, 8.0)) for k in example_keys()]
    out.append(("example (digits/features.8)", example_weight(), (2.0, 4.0, 8.0, 16.0)))
    if not quick:
        with np.load(WIDE, allow_pickle=False) as z:
            for k in sorted((k for k in z.files if z[k].ndim == 4), key=lambda k: z[k].size):
                out.append(("wide/" + k, z[k].astype(np.float32), (4.0, 8.0)))
    return out


def per_family(W: np.ndarray, ratios: tuple[float, ...], max_seconds: float | None) -> Any:
    """The rows of one full compare (every family: the search's warm starts come from the
    family fits), each family's time and traced peak, and how they were measured: from a
    compare of that family alone, or for a large layer the search's from the full compare."""
    if W.size > LARGE:
        return _per_family_large(W, ratios, max_seconds)
    table = sekron.compare(W, compression=ratios, progress=False, max_seconds=max_seconds)
    costs = {}
    for family in _families():
        kw = {"compression": ratios, "families": (family,), "progress": False}
        t0 = time.perf_counter()
        sekron.compare(W, max_seconds=max_seconds, **kw)
        seconds = time.perf_counter() - t0  # timed without tracemalloc, which slows Python
        tracemalloc.start()
        sekron.compare(W, max_seconds=max_seconds, **kw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        costs[family] = {"seconds": seconds, "peak_traced_mb": peak / 2**20}
    return table.to_records(), costs, "each family alone, timed, then again under tracemalloc"


def _per_family_large(W: np.ndarray, ratios: tuple[float, ...], max_seconds: float | None) -> Any:
    """One full compare, under tracemalloc: each family's time is the sum of its rows'
    ``seconds`` (SeKron's is the shared search, GKPD's the same), the peak the whole run's."""
    tracemalloc.start()
    t0 = time.perf_counter()
    table = sekron.compare(W, compression=ratios, progress=False, max_seconds=max_seconds)
    whole = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    costs = {}
    for family in _families():
        src = "sekron" if family == "gkpd" else family  # one search gives both
        seconds = sum(table[src, c].seconds or 0.0 for c in ratios)
        costs[family] = {"seconds": seconds, "peak_traced_mb": peak / 2**20}
    how = (
        f"one full compare ({whole:.0f} s) under tracemalloc: each family's time is its fits' "
        f"own (the search's for SeKron and GKPD), the peak is the whole compare's"
    )
    return table.to_records(), costs, how


def _families() -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(sekron.compare).parameters["families"].default)


def whole_command() -> dict[str, float]:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from sekron.cli import main; raise SystemExit(main(['compare']))"],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the digits layers only")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PREFIX",
        help="measure only the layers whose names start with one of these (e.g. wide/); keep "
        "the other layers of the existing results file",
    )
    parser.add_argument("--max-seconds", type=float, default=None, help="per compare call")
    args = parser.parse_args()
    out = RESULTS / "compare_models.json"
    if args.only:
        report = json.loads(out.read_text())
    else:
        report = {
            "meta": {
                "sekron": sekron.__version__,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "max_seconds": args.max_seconds,
            },
            "command": whole_command(),
            "layers": [],
        }
        print(f"sekron compare (whole command): {report['command']}", flush=True)
    chosen = [x for x in layers(args.quick) if not args.only or x[0].startswith(tuple(args.only))]
    order = [name for name, _, _ in layers(args.quick)]
    for name, W, ratios in chosen:
        load = os.getloadavg()[0]
        rows, costs, how = per_family(W, ratios, args.max_seconds)
        entry = {
            "layer": name,
            "shape": list(W.shape),
            "rows": rows,
            "costs": costs,
            "cost_method": how,
            "sekron": sekron.__version__,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_1min_at_start": load,
            "max_seconds": args.max_seconds,
        }
        kept = [x for x in report["layers"] if x["layer"] != name] + [entry]
        known = {n: i for i, n in enumerate(order)}
        report["layers"] = sorted(kept, key=lambda x: known.get(x["layer"], len(order)))
        RESULTS.mkdir(exist_ok=True)  # written after each layer: a stopped run keeps them
        out.write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / "compare_models.md").write_text(markdown(report))
        print(f"{name} {W.shape}: {costs}", flush=True)
    print(f"wrote {RESULTS / 'compare_models.md'}")


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Which structure wins, layer by layer", ""]
    cmd = report["command"]
    lines += [
        f"Whole default `sekron compare` command: {cmd['seconds']:.1f} s, "
        f"peak resident memory {cmd['peak_rss_mb']:.0f} MB.",
        "",
    ]
    if report.get("notes"):  # findings written with a run, kept in the JSON
        lines += ["## Findings", ""]
        for note in report["notes"]:
            lines += [f"- {note}"]
        lines.append("")
    for layer in report["layers"]:
        lines += [f"## {layer['layer']} {tuple(layer['shape'])}", ""]
        lines += _error_table(layer)
        lines += _macs_table(layer)
        lines += _verdict(layer)
        if "cost_method" in layer:
            limit = layer.get("max_seconds")
            lines += [
                f"Measured {layer['measured']} (sekron {layer['sekron']}, load average "
                f"{layer['load_average_1min_at_start']:.1f} at the start). Time and peak: "
                f"{layer['cost_method']}."
                + (
                    f" Run with compare's `max_seconds={limit:g}` (`+`: iterations cut short)."
                    if limit
                    else ""
                ),
                "",
            ]
    return "\n".join(lines) + "\n"


def _rows(layer: dict[str, Any], fam: str, c: float) -> dict[str, Any] | None:
    rec = [r for r in layer["rows"] if r["family"] == fam and r["compression"] == c]
    return rec[0] if rec else None


def _error_table(layer: dict[str, Any]) -> list[str]:
    fams = list(layer["costs"])
    ratios = sorted({r["compression"] for r in layer["rows"]})
    lines = ["| family | " + " | ".join(f"{c:g}x" for c in ratios) + " | time (s) | peak MB |"]
    lines.append("|---" * (len(ratios) + 3) + "|")
    best = {c: _best(layer, c) for c in ratios}
    for fam in fams:
        cells = []
        for c in ratios:
            rec = _rows(layer, fam, c)
            e = rec["rel_error"] if rec else None
            cell = "—" if e is None else f"{e:.4f}"
            if e is not None and e == best[c]:
                cell = f"**{cell}**"
            if rec and rec.get("cut_short"):
                cell += " +"
            cells.append(cell)
        cost = layer["costs"][fam]
        lines.append(
            f"| {fam} | "
            + " | ".join(cells)
            + f" | {cost['seconds']:.1f} | {cost['peak_traced_mb']:.0f} |"
        )
    return [*lines, ""]


def _best(layer: dict[str, Any], c: float) -> float | None:
    errs = [
        r["rel_error"]
        for r in layer["rows"]
        if r["compression"] == c and r["rel_error"] is not None
    ]
    return min(errs, default=None)


def _macs_table(layer: dict[str, Any]) -> list[str]:
    """Parameters / MACs per output position of each row (runs that recorded MACs)."""
    if not any(r.get("macs") is not None for r in layer["rows"]):
        return []
    ratios = sorted({r["compression"] for r in layer["rows"]})
    dense = int(np.prod(layer["shape"]))
    lines = [
        f"Parameters / MACs per output position of the factorized plan (the dense conv: "
        f"{dense:,} / {dense:,}):",
        "",
        "| family | " + " | ".join(f"{c:g}x" for c in ratios) + " |",
        "|---" * (len(ratios) + 1) + "|",
    ]
    for fam in layer["costs"]:
        cells = []
        for c in ratios:
            rec = _rows(layer, fam, c)
            if rec is None or rec["rel_error"] is None:
                cells.append("—")
            else:
                cells.append(f"{rec['n_params']:,} / {rec['macs']:,}")
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _verdict(layer: dict[str, Any]) -> list[str]:
    """Whether SeKron (searched) has the lowest error at every ratio; where not, who beats it."""
    ratios = sorted({r["compression"] for r in layer["rows"]})
    below = []
    for c in ratios:
        mine = _rows(layer, "sekron", c)
        if mine is None or mine["rel_error"] is None:
            continue
        for r in layer["rows"]:
            if r["compression"] == c and r["rel_error"] is not None:
                if r["rel_error"] < mine["rel_error"] - 1e-12:
                    below.append(
                        f"{r['family']} at {c:g}x ({r['rel_error']:.4f} against "
                        f"{mine['rel_error']:.4f})"
                    )
    if not below:
        return ["SeKron (searched) has the lowest error at every ratio.", ""]
    return ["Below SeKron (searched): " + "; ".join(below) + ".", ""]


if __name__ == "__main__":
    main()
