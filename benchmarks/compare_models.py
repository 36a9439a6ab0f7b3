"""Which structure wins, layer by layer: ``sekron.compare`` on every bundled trained conv weight.

Run:  python benchmarks/compare_models.py [--quick] [--max-seconds S]

For every conv layer of the two bundled trained models (the digits CNN's four layers, from
``sekron.data``, and the wide CNN's 512x512x3x3 layer, ``benchmarks/data/wide_digits_cnn.npz``),
and for the embedded example at 2, 4, 8 and 16x, this runs ``sekron.compare`` with its defaults
(the refined search, every family) and records, per layer and ratio, each family's relative error
and parameters; and per family its time and its peak of traced memory (``tracemalloc``: numpy
and Python allocations), from a ``compare`` of that family alone (the SeKron search alone then
fits its own CP, TT and Tucker-2 warm starts). It also times the whole default
``sekron compare`` command in a subprocess with its peak resident memory (``ru_maxrss``).

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


def layers(quick: bool) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    out = [("digits/" + k, example_weight(k), (4.0, 8.0)) for k in example_keys()]
    out.append(("example (digits/features.8)", example_weight(), (2.0, 4.0, 8.0, 16.0)))
    if not quick:
        with np.load(WIDE, allow_pickle=False) as z:
            out.append(("wide/conv512", z["features.11.weight"].astype(np.float32), (4.0, 8.0)))
    return out


def per_family(W: np.ndarray, ratios: tuple[float, ...], max_seconds: float | None) -> Any:
    """The rows of one full compare (every family: the search's warm starts come from the
    family fits), and each family's time and traced peak from a compare of that family alone."""
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
    return table.to_records(), costs


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
    parser.add_argument("--max-seconds", type=float, default=None, help="per compare call")
    args = parser.parse_args()
    report: dict[str, Any] = {
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
    for name, W, ratios in layers(args.quick):
        rows, costs = per_family(W, ratios, args.max_seconds)
        report["layers"].append(
            {"layer": name, "shape": list(W.shape), "rows": rows, "costs": costs}
        )
        print(f"{name} {W.shape}: {costs}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare_models.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "compare_models.md").write_text(markdown(report))
    print(f"wrote {RESULTS / 'compare_models.md'}")


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Which structure wins, layer by layer", ""]
    cmd = report["command"]
    lines += [
        f"Whole default `sekron compare` command: {cmd['seconds']:.1f} s, "
        f"peak resident memory {cmd['peak_rss_mb']:.0f} MB.",
        "",
    ]
    for layer in report["layers"]:
        lines += [f"## {layer['layer']} {tuple(layer['shape'])}", ""]
        fams = list(layer["costs"])
        ratios = sorted({r["compression"] for r in layer["rows"]})
        lines.append(
            "| family | " + " | ".join(f"{c:g}x" for c in ratios) + " | time (s) | peak MB |"
        )
        lines.append("|---" * (len(ratios) + 3) + "|")
        best = {
            c: min(
                (
                    r["rel_error"]
                    for r in layer["rows"]
                    if r["compression"] == c and r["rel_error"] is not None
                ),
                default=None,
            )
            for c in ratios
        }
        for fam in fams:
            cells = []
            for c in ratios:
                rec = [r for r in layer["rows"] if r["family"] == fam and r["compression"] == c]
                e = rec[0]["rel_error"] if rec else None
                cell = "—" if e is None else f"{e:.4f}"
                if e is not None and e == best[c]:
                    cell = f"**{cell}**"
                cells.append(cell)
            cost = layer["costs"][fam]
            lines.append(
                f"| {fam} | "
                + " | ".join(cells)
                + f" | {cost['seconds']:.1f} | {cost['peak_traced_mb']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
