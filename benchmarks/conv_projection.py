"""Benchmark: convolution with SeKron kernels (sekron.torch.conv2d) against the dense conv.

CPU, 2 threads, batch 32, float32. For each ResNet-style layer and each structure it times,
interleaved (round-robin over implementations in every repetition) and reports medians, and
the ratios that matter (auto vs dense, TensorLy-Torch vs auto) as medians of per-repetition
ratios of runs made back to back:

- dense ``F.conv2d`` with the full kernel;
- sekron ``method="reconstructed"`` (build the kernel, one dense conv);
- sekron ``method="factorized"`` (the stage plan, never building the kernel);
- sekron ``method="auto"`` (its measured, cached choice; the first call is excluded);
- TensorLy-Torch ``FactorizedConv`` (cp, tucker, tt; both its implementations) at the same
  parameter ratio, when ``tensorly-torch`` is installed, in the same round-robin as the
  CP, Tucker-2 and TT rows.

Usage::

    python benchmarks/conv_projection.py            # full run (a few minutes)
    python benchmarks/conv_projection.py --quick    # smoke run, one small layer (< 15 s)

Results go to ``benchmarks/results/conv_projection.{md,json}`` (``--quick`` writes nowhere
unless ``--out`` is given). Weights are random: only timing is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
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
from sekron._backend import _thread_backend
from sekron._conv_macs import dense_macs
from sekron._conv_plan import conv_plan, normalize_padding
from sekron.torch import conv2d

sys.path.insert(0, str(Path(__file__).parent))
from conv_regimes import choice_label, jax_times, regimes_markdown, torch_regimes  # noqa: E402
from machine import describe  # noqa: E402


def _import_tltorch() -> Any:
    """``tltorch``, or None. Importing it sets TensorLy's backend to pytorch, process-wide and
    for this thread; both are put back as they were (TensorLy's ``set_backend`` cannot: it
    writes the process-wide default too), so a caller's TensorLy code (this project's test
    suite runs this script in-process) keeps its own."""
    from tensorly.backend import BackendManager

    local = BackendManager._THREAD_LOCAL_DATA.__dict__
    saved = dict(local), BackendManager._default_backend, BackendManager._backend
    try:
        import tltorch
    except ImportError:
        return None
    finally:
        local.clear()
        local.update(saved[0])
        BackendManager._default_backend, BackendManager._backend = saved[1], saved[2]
    return tltorch


tltorch = _import_tltorch()

RESULTS = Path(__file__).parent / "results"
# layers whose rows are also run on sekron.jax (jit compiles every row: keep the run short)
JAX_LAYERS = ("conv3x3 64@8", "conv3x3 128@28", "conv3x3 256@14")
# the cap on repetitions of short layers: 20 until #16's per-call overhead work, where the
# 1x1 layer's auto/dense (a 7 ms conv, 20 repetitions) moved by +-2 % from run to run
MAX_REPS = 60
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


# the rows of issue #16 (structures only SeKron has), at the layers they were measured on
ISSUE_ROWS = {
    "conv3x3 128@28": [
        ("S=3 (4,4,3,1)(4,4,1,3)(8,8) R=(2,2)", [(4, 4, 3, 1), (4, 4, 1, 3), (8, 8, 1, 1)], [2, 2]),
        ("S=2 (8,4,3,3)x(16,32) R=4", [(8, 4, 3, 3), (16, 32, 1, 1)], [4]),
    ],
    "conv3x3 256@14": [
        ("S=2 (16,4,3,3)x(16,64) R=4", [(16, 4, 3, 3), (16, 64, 1, 1)], [4]),
        ("S=2 (64,4,3,3)x(4,64) R=2", [(64, 4, 3, 3), (4, 64, 1, 1)], [2]),
    ],
}


def issue_structures(name: str) -> list[tuple[str, list[tuple[int, ...]], list[int], str]]:
    return [(label, shapes, ranks, "nested") for label, shapes, ranks in ISSUE_ROWS.get(name, [])]


def embedded_structures(
    ch: int, k: int, budget: int, tl_ranks: dict[str, Any] | None = None
) -> list[tuple[str, Any, Any, str]]:
    """CP, Tucker-2 and TT as SeKron (structures docs embeddings), at about ``budget`` parameters.

    ``tl_ranks`` (``{"cp": R, "tt": (t1, m, t2)}``, from the TensorLy-Torch layers) makes CP
    and TT use exactly the ranks, hence the parameter count, of the layer they are compared
    with (TensorLy-Torch's TT is over (C, Kh, Kw, F), ours over (F, Kh, Kw, C): with C = F
    the same ranks give the same count). TensorLy-Torch's "tucker" keeps spatial ranks 1, a
    different structure; the Tucker-2 row (full 3x3 core) matches its budget instead.
    """
    tl_ranks = tl_ranks or {}
    cp_rank = tl_ranks.get("cp") or max(1, round(budget / (2 * ch + 2 * k)))
    cp = ([(ch, 1, 1, 1), (1, ch, 1, 1), (1, 1, k, 1), (1, 1, 1, k)], [cp_rank, 1, 1], "nested")
    # Tucker-2 as a chain ordered (F, window, C): U_F, core, U_C, with no duplicated factor
    r = 1
    while 2 * ch * (r + 1) + (r + 1) ** 2 * k * k <= budget:
        r += 1
    tucker2 = ([(ch, 1, 1, 1), (1, 1, k, k), (1, ch, 1, 1)], [r, r], "chain")
    # TT over (F, Kh, Kw, C) with ranks (t, m, t), m = Kh (the spatial bond), like
    # TensorLy-Torch's choice for conv kernels
    if "tt" in tl_ranks:
        tt_ranks = list(tl_ranks["tt"])
    else:
        t = 1
        while (t + 1) * (2 * ch + 2 * k * k) <= budget:
            t += 1
        tt_ranks = [t, k, t]
    tt = ([(ch, 1, 1, 1), (1, 1, k, 1), (1, 1, 1, k), (1, ch, 1, 1)], tt_ranks, "chain")
    return [
        (f"CP R={cp_rank}", *cp),
        (f"Tucker-2 R=({r},{r})", *tucker2),
        (f"TT R=({tt_ranks[0]},{tt_ranks[1]},{tt_ranks[2]})", *tt),
    ]


def time_round_robin(
    fns: dict[str, Callable[[], Any]], reps: int, block: tuple[str, ...] = ()
) -> dict[str, list[float]]:
    """Milliseconds of every call of each function, interleaved, after one warm-up call each.

    Every repetition runs each function once. The names in ``block`` run back to back (in an
    order rotating with the repetition), so that their per-repetition ratios compare runs a
    few milliseconds apart; the block and the other functions rotate their order too (a
    memory-hungry implementation leaves page faults to whichever runs next).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    units: list[tuple[str, ...]] = [tuple(block)] if block else []
    units += [(n,) for n in fns if n not in block]
    for rep in range(reps):
        i = rep % len(units)
        for unit in units[i:] + units[:i]:
            j = rep % len(unit)
            for name in unit[j:] + unit[:j]:
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]`` (runs of the same repetition)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def reps_for(dense_ms: float, reps: int, max_reps: int) -> int:
    """At least ``reps``; more for short layers (about 0.6 s of dense conv), at most
    ``max_reps``."""
    return max(reps, min(max_reps, int(600 / max(dense_ms, 1e-3))))


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
    """TensorLy-Torch's factorized convs (none without it), built and run under TensorLy's
    pytorch backend for this thread only (:func:`run`)."""
    if tltorch is None:
        return {}
    out = {}
    for fact in ("cp", "tucker", "tt"):
        for impl in ("factorized", "reconstructed"):
            layer = tltorch.FactorizedConv(
                ch,
                ch,
                k,
                order=2,
                stride=stride,
                padding=pad,
                factorization=fact,
                rank=TL_RATIO,
                implementation=impl,
            )
            layer.weight.normal_(0, 0.02)
            out[f"tltorch {fact} {impl}"] = layer.eval()
    return out


def tltorch_ranks(tl_layers: dict[str, Any]) -> dict[str, Any]:
    """CP rank and the inner TT ranks of the TensorLy-Torch layers (to match them exactly)."""
    out: dict[str, Any] = {}
    if "tltorch cp factorized" in tl_layers:
        out["cp"] = int(tl_layers["tltorch cp factorized"].weight.rank)
    if "tltorch tt factorized" in tl_layers:
        out["tt"] = tuple(int(r) for r in tl_layers["tltorch tt factorized"].weight.rank[1:-1])
    return out


# which TensorLy-Torch factorization each embedded structure is compared with
TL_MATCH = {"CP": "cp", "Tucker-2": "tucker", "TT": "tt"}


def run(
    layers: list[tuple[str, int, int, int, int]],
    batch: int,
    reps: int,
    max_reps: int,
    regime_reps: int = 0,
    skip: frozenset[tuple[str, str]] = frozenset(),
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every row of ``layers`` but the (layer, structure) pairs in ``skip``; ``on_row`` is
    called with each row as soon as it is measured (to save partial results)."""
    rows: list[dict] = []
    for name, ch, size, k, stride in layers:
        # TensorLy-Torch's layers need TensorLy's pytorch backend: set for this thread only
        with _thread_backend("pytorch"):
            rows += run_layer(
                name, ch, size, k, stride, batch, reps, max_reps, regime_reps, skip, on_row
            )
    return rows


def run_layer(
    name: str,
    ch: int,
    size: int,
    k: int,
    stride: int,
    batch: int,
    reps: int,
    max_reps: int,
    regime_reps: int = 0,
    skip: frozenset[tuple[str, str]] = frozenset(),
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    rows = []
    pad = k // 2
    x = torch.randn(batch, ch, size, size)
    in_shape = tuple(x.shape)
    pad4 = normalize_padding(pad, (k, k), (1, 1))
    dense_params = ch * ch * k * k
    dmacs = dense_macs(((ch, ch, k, k), (1, 1, 1, 1)), in_shape, (stride, stride), pad4)
    budget = int(TL_RATIO * dense_params)
    tl_layers = tltorch_layers(ch, k, stride, pad)
    structs = (
        sekron_structures(ch, k)
        + issue_structures(name)
        + embedded_structures(ch, k, budget, tltorch_ranks(tl_layers))
    )
    with torch.no_grad():
        W_dense = torch.randn(ch, ch, k, k) / (ch * k)
        for label, shapes, ranks, form in structs:
            if (name, label) in skip:
                continue
            st = random_sekron(
                shapes, ranks, form=form, backend="pytorch", dtype="float32", random_state=0
            )
            fmacs = conv_plan(
                st.shapes, st.ranks, form, in_shape, (stride, stride), pad4, (1, 1)
            ).macs
            conv2d(x, st, None, stride, pad, method="auto")  # first call: measure, cache
            choice = [
                choice_label(v)
                for key, v in sekron.torch._auto.cached_choices().items()
                if key[0][:4] == (st.shapes, st.ranks, form, in_shape) and key[1] == "inference"
            ]
            fns = {
                "dense": lambda: F.conv2d(x, W_dense, None, stride, pad),
                "reconstructed": lambda st=st: conv2d(
                    x, st, None, stride, pad, method="reconstructed"
                ),
                "factorized": lambda st=st: conv2d(x, st, None, stride, pad, method="factorized"),
                "auto": lambda st=st: conv2d(x, st, None, stride, pad, method="auto"),
            }
            fact = TL_MATCH.get(label.split()[0])
            tl_names = [n for n in tl_layers if fact is not None and n.split()[1] == fact]
            fns |= {n: (lambda m=tl_layers[n]: m(x)) for n in tl_names}
            block = ("dense", "auto", *(n for n in tl_names if n.endswith("factorized")))
            dense_once = statistics.median(time_round_robin({"d": fns["dense"]}, 3)["d"])
            times = time_round_robin(fns, reps_for(dense_once, reps, max_reps), block)
            ms = {n: statistics.median(v) for n, v in times.items()}
            fac_layout = [
                v
                for key, v in sekron.torch._auto._LAYOUTS.copy().items()
                if key[0][:4] == (st.shapes, st.ranks, form, in_shape) and key[1] == "inference"
            ]
            peak_f, peak_d = peak_activation_elems(st, in_shape, stride, pad)
            row = {
                "layer": name,
                "structure": label,
                "shapes": shapes,
                "ranks": ranks,
                "form": form,
                "params": st.n_params,
                "param_ratio": dense_params / st.n_params,
                "mac_ratio": dmacs / fmacs,
                "reps": len(times["dense"]),
                "dense_ms": ms["dense"],
                "reconstructed_ms": ms["reconstructed"],
                "factorized_ms": ms["factorized"],
                "factorized_layout": fac_layout[0] if fac_layout else "?",
                "auto_ms": ms["auto"],
                "auto_choice": choice[0] if choice else "?",
                "auto_vs_dense": median_ratio(times["dense"], times["auto"]),
                "factorized_speedup": ms["dense"] / ms["factorized"],
                "peak_act_ratio": peak_f / peak_d,
            }
            if tl_names:
                best = min(tl_names, key=ms.__getitem__)
                row |= {
                    "tltorch": fact,
                    "tltorch_params": sum(p.numel() for p in tl_layers[best].parameters()),
                    "tltorch_ms": {n.split()[-1]: ms[n] for n in tl_names},
                    "tltorch_best": best.split()[-1],
                    "tltorch_vs_auto": median_ratio(times[best], times["auto"]),
                }
                row["tltorch_param_ratio"] = dense_params / row["tltorch_params"]
            if regime_reps:
                # more repetitions for short layers (about 0.15 s of dense conv per regime):
                # with 4, a 2 ms layer's paired ratios moved by +-10 % from run to run
                rr = max(regime_reps, min(max_reps, int(150 / max(ms["dense"], 1e-3))))
                row["regime_reps"] = rr
                row |= regime_columns(
                    st, x, shapes, ranks, form, stride, pad, rr, name in JAX_LAYERS
                )
            rows.append(row)
            if on_row is not None:
                on_row(row)
            print(
                f"{name:18s} {label:38s} p×{row['param_ratio']:5.1f} "
                f"mac×{row['mac_ratio']:5.1f}"
                f" dense {ms['dense']:7.1f} rec {ms['reconstructed']:7.1f}"
                f" fac {ms['factorized']:7.1f} auto {ms['auto']:7.1f} ({row['auto_choice']})"
                f" a/d {row['auto_vs_dense']:.2f}"
                + (f" tl {ms[best]:7.1f} tl/auto {row['tltorch_vs_auto']:.2f}" if tl_names else ""),
                flush=True,
            )
    return rows


def regime_columns(
    st: Any,
    x: torch.Tensor,
    shapes: Any,
    ranks: Any,
    form: str,
    stride: int,
    pad: int,
    reps: int,
    jax: bool,
) -> dict[str, Any]:
    """The forward-with-autograd and fine-tuning-step regimes and JAX inference of one row."""
    out: dict[str, Any] = {"regimes": torch_regimes(st, x, stride, pad, reps)}
    jx = jax_times(shapes, ranks, form, x.numpy(), stride, pad, reps) if jax else None
    if jx is not None:
        out["jax"] = jx
    r = out["regimes"]
    fw, tr = r["forward"], r["training"]
    print(
        f"    forward a/d {fw['auto_vs_dense']:.2f} f/d {fw['fac_vs_dense']:.2f}"
        f" | step a/d {tr['auto_vs_dense']:.2f} f/d {tr['fac_vs_dense']:.2f}"
        f" ({', '.join(f'{k}: {v}' for k, v in r['choices'].items())})"
        + (
            f" | jax a/d {jx['auto_vs_dense']:.2f} f/d {jx['fac_vs_dense']:.2f}"
            if jx is not None
            else ""
        ),
        flush=True,
    )
    return out


def call_overhead(calls: int = 2000, rounds: int = 7) -> dict[str, float]:
    """Per-call time (µs) of F.conv2d and of sekron's reconstructed and auto paths on a tiny
    input (1x256x2x2, 1x1 kernel), where the conv itself is negligible: the difference is
    sekron's per-call Python overhead (validation, cache keys, kernel cache lookup)."""
    st = random_sekron(
        [(2, 2, 1, 1), (128, 128, 1, 1)], 2, backend="pytorch", dtype="float32", random_state=0
    )
    x = torch.randn(1, 256, 2, 2)
    W = st.to_tensor().contiguous()
    fns = {
        "dense": lambda: F.conv2d(x, W, None, 1, 0),
        "reconstructed": lambda: conv2d(x, st, None, 1, 0, method="reconstructed"),
        "auto": lambda: conv2d(x, st, None, 1, 0, method="auto"),
    }
    with torch.no_grad():
        return warm_us(fns, calls, rounds, warmup=100)


def warm_us(
    fns: dict[str, Callable[[], Any]], calls: int, rounds: int = 5, warmup: int = 20
) -> dict[str, float]:
    """Median per-call µs of each function in a tight loop (``rounds`` rounds of ``calls``
    calls each, after ``warmup`` calls)."""
    out: dict[str, list[float]] = {n: [] for n in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out[name].append(1e6 * (time.perf_counter() - t0) / calls)
    return {n: statistics.median(v) for n, v in out.items()}


def to_markdown(rows: list[dict], meta: dict) -> str:
    ratios = [r["auto_vs_dense"] for r in rows]
    low = [r for r in rows if r["auto_vs_dense"] < 0.95]
    fac = [r for r in rows if r["mac_ratio"] >= 4]
    fac_ok = [r for r in fac if r["factorized_speedup"] >= 0.5 * r["mac_ratio"]]
    tl_rows = [r for r in rows if "tltorch_vs_auto" in r]
    tl_ok = [r for r in tl_rows if r["tltorch_vs_auto"] >= 1.0]
    lines = [
        "# Convolution projection benchmark",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; "
        f"batch {meta['batch']}; float32; at least {meta['reps']} interleaved repetitions per "
        f"row (more for short layers, up to {_caps(meta)}: column `reps`), medians; "
        f"at least {meta.get('regime_reps', 0)} repetitions per regime row (more for short "
        f"layers, about 0.15 s of dense conv, up to {_caps(meta)}); jax {meta.get('jax')}; "
        f"wall time {meta['wall_s']:.0f} s."
        + _load_line(meta.get("load_average"), meta["threads"]),
        "",
        "Columns: `p×` parameter ratio (dense / SeKron), `mac×` MAC ratio (dense / factorized "
        "plan), times in ms (medians); `factorized (layout)` gives the layout "
        '`method="factorized"` measured faster on its first call; `auto (choice)` the '
        "method and layout auto cached; `auto/dense` is the median over repetitions of "
        "dense time / auto time, the two run back to back in each repetition (>= 0.95 is "
        "the target); `fac speedup` dense over factorized (medians); `act` peak activation "
        "elements of the factorized plan over the dense conv's (counted from the plan: "
        "largest stage input + output vs padded input + output).",
        "",
        f"Summary: auto/dense min {min(ratios):.2f}, median {statistics.median(ratios):.2f}; "
        f"{len(low)} of {len(rows)} rows below 0.95"
        + (
            " ("
            + "; ".join(f"{r['layer']} {r['structure']}: {r['auto_vs_dense']:.2f}" for r in low)
            + ")"
            if low
            else ""
        )
        + f". Factorized speedup >= 0.5 x MAC ratio on {len(fac_ok)} of {len(fac)} rows with "
        f"MAC ratio >= 4. Auto at least as fast as the best TensorLy-Torch implementation on "
        f"{len(tl_ok)} of {len(tl_rows)} CP/Tucker-2/TT rows.",
        "",
        _overhead_line(meta.get("overhead")),
        "",
        "| layer | structure | p× | mac× | reps | dense | reconstructed | factorized "
        "| auto (choice) | auto/dense | fac speedup | act |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['structure']} | {r['param_ratio']:.1f} | {r['mac_ratio']:.1f} "
            f"| {r['reps']} | {r['dense_ms']:.2f} | {r['reconstructed_ms']:.2f} "
            f"| {r['factorized_ms']:.2f} ({r.get('factorized_layout', 'nhwc')}) "
            f"| {r['auto_ms']:.2f} ({r['auto_choice']}) "
            f"| {r['auto_vs_dense']:.2f} | {r['factorized_speedup']:.2f} "
            f"| {r['peak_act_ratio']:.2f} |"
        )
    lines += [
        "",
        f"## Against TensorLy-Torch FactorizedConv at parameter ratio {1 / TL_RATIO:.0f}",
        "",
        "Each CP / Tucker-2 / TT row above was timed in the same round-robin as both "
        "TensorLy-Torch implementations of the same factorization; `tltorch/auto` is the "
        "median over repetitions of the best TensorLy-Torch implementation's time over "
        "sekron auto's, the two run back to back (>= 1: sekron at least as fast). CP and TT "
        "use TensorLy-Torch's own ranks (equal parameter counts); TensorLy-Torch's "
        '"tucker" keeps spatial ranks 1, so Tucker-2 (full spatial core) is matched on '
        "the parameter budget instead.",
        "",
        "| layer | structure | sekron p× | tltorch p× | sekron auto | tltorch factorized "
        "| tltorch reconstructed | tltorch/auto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tl_rows:
        t = r["tltorch_ms"]
        lines.append(
            f"| {r['layer']} | {r['structure']} | {r['param_ratio']:.1f} "
            f"| {r['tltorch_param_ratio']:.1f} | {r['auto_ms']:.2f} "
            f"| {t.get('factorized', float('nan')):.2f} "
            f"| {t.get('reconstructed', float('nan')):.2f} | {r['tltorch_vs_auto']:.2f} |"
        )
    return "\n".join(lines + _shortfall(fac, fac_ok) + regimes_markdown(rows)) + "\n"


def _caps(meta: dict) -> str:
    """The repetition cap of each run that made the file ("20 / 60" when a resumed run
    changed it; files from before the cap was recorded had 20)."""
    caps = list(dict.fromkeys(meta.get("max_reps", [20])))
    return " / ".join(str(c) for c in caps) + (" (runs differ)" if len(caps) > 1 else "")


def _load_line(loads: list[float] | None, threads: int) -> str:
    """The machine's 5-minute load averages at the start of each (resumed) run: above the
    thread count, other processes took cores and small multi-threaded ops wait for them."""
    if not loads:
        return ""
    verdict = (
        "above the thread count: other processes took cores, and timings of small "
        "multi-threaded ops are unreliable"
        if max(loads) > threads
        else "at most the thread count: a quiet machine"
    )
    return (
        f" Load average (5 min) at the start of each run: {', '.join(map(str, loads))} on "
        f"{os.cpu_count()} cores ({verdict})."
    )


def _overhead_line(overhead: dict | None) -> str:
    if not overhead:
        return "Per-call overhead: not measured yet (a partial run)."
    return (
        "Per-call overhead (tiny 1x256x2x2 input, 1x1 kernel, medians of "
        f"{overhead['rounds']} rounds): F.conv2d {overhead['dense']:.1f} µs, sekron "
        f"reconstructed {overhead['reconstructed']:.1f} µs, sekron auto "
        f"{overhead['auto']:.1f} µs."
    )


def _shortfall(fac: list[dict], fac_ok: list[dict]) -> list[str]:
    """Why ``factorized`` falls short of 0.5 x MAC ratio, by kind of row (issue #4 asks)."""
    miss = [r for r in fac if r not in fac_ok]
    splits = [r for r in miss if r["structure"].startswith("S=")]
    small = [r for r in miss if not r["structure"].startswith("S=")]

    def span(rs: list[dict]) -> str:
        q = [r["factorized_speedup"] / r["mac_ratio"] for r in rs]
        return f"{min(q):.2f}-{max(q):.2f}" if q else "-"

    issue = [
        r for r in fac if any(r["structure"] == lab for v in ISSUE_ROWS.values() for lab, *_ in v)
    ]
    return [
        "",
        "## Why `factorized` falls short of 0.5 x MAC ratio",
        "",
        "The rows of issue #16 (factorized speedup / MAC ratio; target 0.5): "
        + "; ".join(
            f"{r['layer']} {r['structure']}: {r['factorized_speedup']:.2f}x at MAC ratio "
            f"{r['mac_ratio']:.1f} ({r['factorized_speedup'] / r['mac_ratio']:.2f})"
            for r in issue
        )
        + ".",
        "",
        f"{len(miss)} of {len(fac)} rows with MAC ratio >= 4 miss (speedup / MAC ratio given).",
        "",
        f"- {len(splits)} S = 2 / S = 3 splits ({span(splits)}). The stage with the 3x3 window "
        "has a few channels per image (c_1 = 2 or 8, times the rank) over a batch folded with "
        "the other factor's C/2 to C/8 channels; oneDNN runs such convolutions far below peak, "
        "and the rank-R intermediate is R times the input. Folding that batch into conv groups "
        "instead was 5x faster for 1-2 channels per group but slower from 4, so it was not "
        "adopted; so were a block-diagonal first stage (no permuting copy between the two "
        "stages, at c_0 times its multiply-adds: 0.5-1.0x the batch-fold plan in a first "
        "measurement) and merging adjacent factors (fewer stages, more multiply-adds), which "
        "`auto` has among its candidates. `auto` runs the reconstructed kernel on these rows "
        "where that is faster. Also measured and not adopted (conv docs): running the plan "
        "on batch chunks small enough for the intermediates to stay in cache, `torch.compile` "
        "of the plan, and a hand-written backward for the kernel build.",
        f"- {len(small)} CP / Tucker-2 / TT rows ({span(small)}): at 64@56 and on the 1x1 layer "
        "the stages are memory bound (ranks of 13-28 over 3136 or 196 positions per image: the "
        "depthwise stages do 3 multiply-adds per element they read, the pointwise ones a few "
        "per byte). Rows near 0.5 pass or miss from run to run.",
        "",
    ]


def _save(out: Path, rows: list[dict], meta: dict) -> None:
    order = {name: i for i, (name, *_) in enumerate(LAYERS)}
    rows = sorted(rows, key=lambda r: order.get(r["layer"], len(order)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv_projection.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "conv_projection.md").write_text(to_markdown(rows, meta))


def _jax_version() -> str | None:
    try:
        import jax
    except ImportError:
        return None
    return f"{jax.__version__} ({jax.default_backend()})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small layer, few repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--regime-reps", type=int, default=None, help="0: inference only")
    parser.add_argument("--layers", default=None, help="comma-separated substrings of names")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out and measure only the missing ones (each row is "
        "saved as soon as it is measured)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.quick:
        layers, batch, reps, max_reps = [("conv3x3 64@8", 64, 8, 3, 1)], 4, args.reps or 2, 0
    else:
        layers, batch, reps, max_reps = LAYERS, 32, args.reps or 7, MAX_REPS
    if args.layers:
        layers = [lay for lay in layers if any(s in lay[0] for s in args.layers.split(","))]
    regime_reps = args.regime_reps if args.regime_reps is not None else (2 if args.quick else 4)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    old: dict = {"rows": [], "meta": {"wall_s": 0.0}}
    if out is not None and args.resume and (out / "conv_projection.json").exists():
        old = json.loads((out / "conv_projection.json").read_text())
    done = frozenset(
        (r["layer"], r["structure"]) for r in old["rows"] if "regimes" in r or not regime_reps
    )
    rows = [r for r in old["rows"] if (r["layer"], r["structure"]) in done]
    t0 = time.perf_counter()
    meta = {
        "machine": describe(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "reps": reps,
        "regime_reps": regime_reps,
        "jax": _jax_version(),
        "wall_s": old["meta"]["wall_s"],
        "python": sys.version.split()[0],
        "load_average": [*old["meta"].get("load_average", []), round(os.getloadavg()[1], 1)],
        "overhead": old["meta"].get("overhead"),
        "max_reps": [*old["meta"].get("max_reps", [20] if rows else []), max_reps],
    }

    def on_row(row: dict) -> None:
        rows.append(row)
        if out is not None:
            _save(out, rows, meta | {"wall_s": meta["wall_s"] + time.perf_counter() - t0})

    run(layers, batch, reps, max_reps, regime_reps, done, on_row)
    overhead = call_overhead(calls=200 if args.quick else 2000) | {"rounds": 7}
    print("per-call µs: " + ", ".join(f"{k} {v:.1f}" for k, v in overhead.items()))
    meta |= {"overhead": overhead, "wall_s": meta["wall_s"] + time.perf_counter() - t0}
    if out is not None:
        _save(out, rows, meta)
    print(f"done in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
