"""Benchmark: convolution with SeKron kernels (sekron.torch.conv2d) against the dense conv.

CPU, 2 threads, batch 32, float32. For each ResNet-style layer and each structure it times,
interleaved (round-robin over implementations in every repetition) and reports medians:

- dense ``F.conv2d`` with the full kernel;
- sekron ``method="reconstructed"`` (build the kernel, one dense conv);
- sekron ``method="factorized"`` (the stage plan, never building the kernel);
- sekron ``method="auto"`` (its measured, cached choice; the first call is excluded);
- TensorLy-Torch ``FactorizedConv`` (cp, tucker, tt; both its implementations) at the same
  parameter ratio, when ``tensorly-torch`` is installed.

Usage::

    python benchmarks/conv_projection.py            # full run (~5-10 minutes)
    python benchmarks/conv_projection.py --quick    # smoke run, one small layer (< 15 s)

Results go to ``benchmarks/results/conv_projection.{md,json}`` (``--quick`` writes nowhere
unless ``--out`` is given). Weights are random: only timing is measured here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from math import prod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import sekron
from sekron import random_sekron
from sekron.torch import conv2d
from sekron.torch._conv_plan import conv_plan, dense_macs, normalize_padding

RESULTS = Path(__file__).parent / "results"
TL_RATIO = 0.1  # parameter ratio for the equal-parameter comparisons (CP, Tucker-2, TT)

# (name, C_in = C_out, spatial size, kernel, stride)
LAYERS = [
    ("conv3x3 64@56", 64, 56, 3, 1),
    ("conv3x3 128@28", 128, 28, 3, 1),
    ("conv3x3 256@14", 256, 14, 3, 1),
    ("conv3x3 512@7", 512, 7, 3, 1),
    ("conv3x3 s2 128@56", 128, 56, 3, 2),
    ("conv1x1 256@14", 256, 14, 1, 1),
]


def sekron_structures(ch: int, k: int) -> list[tuple[str, list[tuple[int, ...]], list[int], str]]:
    """(label, shapes, ranks, form): 2- and 3-factor SeKron at several ranks."""
    out: list[tuple[str, list[tuple[int, ...]], list[int], str]] = []
    for a, ranks in ((2, (1, 2)), (8, (1, 4))):
        shapes = [(a, a, k, k), (ch // a, ch // a, 1, 1)]
        for r in ranks:
            out.append((f"S=2 {shapes[0][:2]}x{shapes[1][:2]} R={r}", shapes, [r], "nested"))
    if k == 3:
        shapes3 = [(2, 2, 3, 1), (2, 2, 1, 3), (ch // 4, ch // 4, 1, 1)]
        for r in ((2, 2),):
            out.append((f"S=3 (2,2,3,1)(2,2,1,3)(C/4) R={r}", shapes3, list(r), "nested"))
    else:
        shapes3 = [(4, 4, 1, 1), (4, 4, 1, 1), (ch // 16, ch // 16, 1, 1)]
        out.append(("S=3 (4,4)(4,4)(C/16) R=(2,2)", shapes3, [2, 2], "nested"))
    return out


def embedded_structures(ch: int, k: int, budget: int) -> list[tuple[str, Any, Any, str]]:
    """CP, Tucker-2 and TT as SeKron (SPEC §4 embeddings), at about ``budget`` parameters."""
    cp_rank = max(1, budget // (2 * ch + 2 * k + 1))
    cp = ([(ch, 1, 1, 1), (1, ch, 1, 1), (1, 1, k, 1), (1, 1, 1, k)], [cp_rank, 1, 1], "nested")
    # Tucker-2 as a chain ordered (F, window, C): U_F, core, U_C, with no duplicated factor
    r = 1
    while 2 * ch * (r + 1) + (r + 1) ** 2 * k * k <= budget:
        r += 1
    tucker2 = ([(ch, 1, 1, 1), (1, 1, k, k), (1, ch, 1, 1)], [r, r], "chain")
    # TT over (F, Kh, Kw, C) with ranks (t, m, t), m = Kh (the spatial bond), like
    # TensorLy-Torch's choice for conv kernels
    m = k
    t = 1
    while (t + 1) * (2 * ch + 2 * k * m) <= budget:
        t += 1
    tt = ([(ch, 1, 1, 1), (1, 1, k, 1), (1, 1, 1, k), (1, ch, 1, 1)], [t, m, t], "chain")
    return [
        (f"CP R={cp_rank}", *cp),
        (f"Tucker-2 R=({r},{r})", *tucker2),
        (f"TT R=({t},{m},{t})", *tt),
    ]


def time_round_robin(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median milliseconds of each function, interleaved in rotating order, after one warm-up
    call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        # rotate the order every repetition: each implementation follows each other one
        # equally often (a memory-hungry one leaves page faults to whichever runs next)
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(v) for name, v in times.items()}


def peak_activation_elems(
    st: Any, in_shape: tuple[int, int, int, int], stride: int, pad: int
) -> tuple[int, int]:
    """(factorized, dense) peak live activation elements, counted from the plans.

    Factorized: the largest over stages of (stage input after its permuting copy + stage
    output), plus the padded copy of the input for the first stage. Dense: padded input plus
    output. Weights are not counted (they are tiny next to the activations here).
    """
    pad4 = normalize_padding(pad, st.shape[2:], (1, 1))
    plan = conv_plan(st.shapes, st.ranks, st.form, in_shape, (stride, stride), pad4, (1, 1))
    peak = 0
    for s in plan.stages:
        peak = max(peak, prod(s.in_shape) + prod(s.out_sizes))
    n, c, h, w = in_shape
    padded = n * c * (h + pad4[0] + pad4[1]) * (w + pad4[2] + pad4[3])
    dense = padded + prod(plan.out_shape)
    return peak, dense


def tltorch_layers(ch: int, k: int, stride: int, pad: int) -> dict[str, Any]:
    try:
        import tltorch
    except ImportError:
        return {}
    out = {}
    for fact in ("cp", "tucker", "tt"):
        for impl in ("factorized", "reconstructed"):
            layer = tltorch.FactorizedConv(
                ch, ch, k, order=2, stride=stride, padding=pad, factorization=fact,
                rank=TL_RATIO, implementation=impl,
            )
            layer.weight.normal_(0, 0.02)
            out[f"tltorch {fact} {impl}"] = layer.eval()
    return out


def run(layers: list[tuple[str, int, int, int, int]], batch: int, reps: int) -> list[dict]:
    rows: list[dict] = []
    for name, ch, size, k, stride in layers:
        rows += run_layer(name, ch, size, k, stride, batch, reps)
    return rows


def run_layer(name: str, ch: int, size: int, k: int, stride: int, batch: int,
              reps: int) -> list[dict]:
    rows = []
    pad = k // 2
    x = torch.randn(batch, ch, size, size)
    in_shape = tuple(x.shape)
    pad4 = normalize_padding(pad, (k, k), (1, 1))
    dense_params = ch * ch * k * k
    dmacs = dense_macs(((ch, ch, k, k), (1, 1, 1, 1)), in_shape, (stride, stride), pad4)
    budget = int(TL_RATIO * dense_params)
    structs = sekron_structures(ch, k) + embedded_structures(ch, k, budget)
    tl_layers = tltorch_layers(ch, k, stride, pad)
    with torch.no_grad():
        W_dense = torch.randn(ch, ch, k, k) / (ch * k)
        tl_ms = time_round_robin(
            {"dense": lambda: F.conv2d(x, W_dense, None, stride, pad)}
            | {n: (lambda m=m: m(x)) for n, m in tl_layers.items()},
            reps,
        )
        tl_params = {n: sum(p.numel() for p in m.parameters()) for n, m in tl_layers.items()}
        for label, shapes, ranks, form in structs:
            st = random_sekron(shapes, ranks, form=form, backend="pytorch", dtype="float32",
                               random_state=0)
            fmacs = conv_plan(
                st.shapes, st.ranks, form, in_shape, (stride, stride), pad4, (1, 1)
            ).macs
            conv2d(x, st, None, stride, pad, method="auto")  # first call: measure, cache
            choice = [v for key, v in sekron.torch._auto.cached_choices().items()
                      if key[:4] == (st.shapes, st.ranks, form, in_shape)]
            fns = {
                "dense": lambda: F.conv2d(x, W_dense, None, stride, pad),
                "reconstructed": lambda st=st: conv2d(
                    x, st, None, stride, pad, method="reconstructed"),
                "factorized": lambda st=st: conv2d(
                    x, st, None, stride, pad, method="factorized"),
                "auto": lambda st=st: conv2d(x, st, None, stride, pad, method="auto"),
            }
            ms = time_round_robin(fns, reps)
            peak_f, peak_d = peak_activation_elems(st, in_shape, stride, pad)
            row = {
                "layer": name, "structure": label, "shapes": shapes, "ranks": ranks,
                "form": form, "params": st.n_params, "param_ratio": dense_params / st.n_params,
                "mac_ratio": dmacs / fmacs, "dense_ms": ms["dense"],
                "reconstructed_ms": ms["reconstructed"], "factorized_ms": ms["factorized"],
                "auto_ms": ms["auto"], "auto_choice": choice[0][0] if choice else "?",
                "auto_vs_dense": ms["dense"] / ms["auto"],
                "factorized_speedup": ms["dense"] / ms["factorized"],
                "peak_act_ratio": peak_f / peak_d,
            }
            rows.append(row)
            print(
                f"{name:18s} {label:38s} p×{row['param_ratio']:5.1f} "
                f"mac×{row['mac_ratio']:5.1f}"
                f" dense {ms['dense']:7.1f} rec {ms['reconstructed']:7.1f}"
                f" fac {ms['factorized']:7.1f} auto {ms['auto']:7.1f} ({row['auto_choice']})",
                flush=True,
            )
        for n, v in tl_ms.items():
            if n == "dense":
                continue
            rows.append({
                "layer": name, "structure": n, "params": tl_params[n],
                "param_ratio": dense_params / tl_params[n], "dense_ms": tl_ms["dense"],
                "tltorch_ms": v,
            })
            print(f"{name:18s} {n:38s} p×{dense_params / tl_params[n]:5.1f} "
                  f"dense {tl_ms['dense']:7.1f} ms {v:7.1f}", flush=True)
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Convolution projection benchmark",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; "
        f"batch {meta['batch']}; float32; {meta['reps']} interleaved repetitions, medians; "
        f"wall time {meta['wall_s']:.0f} s.",
        "",
        "Columns: `p×` parameter ratio (dense / SeKron), `mac×` MAC ratio (dense / factorized "
        "plan), times in ms; `auto/dense` is dense time over auto time (>= 0.95 is the target); "
        "`fac speedup` dense over factorized; `act` peak activation elements of the factorized "
        "plan over the dense conv's (counted from the plan: largest stage input + output vs "
        "padded input + output).",
        "",
        "| layer | structure | p× | mac× | dense | reconstructed | factorized | auto (choice) "
        "| auto/dense | fac speedup | act |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "tltorch_ms" in r:
            continue
        lines.append(
            f"| {r['layer']} | {r['structure']} | {r['param_ratio']:.1f} | {r['mac_ratio']:.1f} "
            f"| {r['dense_ms']:.1f} | {r['reconstructed_ms']:.1f} | {r['factorized_ms']:.1f} "
            f"| {r['auto_ms']:.1f} ({r['auto_choice'][:4]}) | {r['auto_vs_dense']:.2f} "
            f"| {r['factorized_speedup']:.2f} | {r['peak_act_ratio']:.2f} |"
        )
    lines += [
        "",
        f"## TensorLy-Torch FactorizedConv at parameter ratio {1 / TL_RATIO:.0f}",
        "",
        "| layer | implementation | p× | dense (same round) | ms |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "tltorch_ms" in r:
            lines.append(
                f"| {r['layer']} | {r['structure']} | {r['param_ratio']:.1f} "
                f"| {r['dense_ms']:.1f} | {r['tltorch_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small layer, few repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.quick:
        layers, batch, reps = [("conv3x3 64@8", 64, 8, 3, 1)], 4, args.reps or 2
    else:
        layers, batch, reps = LAYERS, 32, args.reps or 7
    t0 = time.perf_counter()
    rows = run(layers, batch, reps)
    meta = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": batch,
        "reps": reps, "wall_s": time.perf_counter() - t0, "python": sys.version.split()[0],
    }
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "conv_projection.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                             indent=1))
        (out / "conv_projection.md").write_text(to_markdown(rows, meta))
    print(f"done in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
