"""What ``method="auto"``'s per-call work costs next to a real convolution (issue #16).

On a layer where ``auto`` runs the dense conv (the 1x1 (8, 8)x(32, 32) rank-4 split of a
256-channel layer, 32x256x14x14 input, 2 threads, float32, ``no_grad``), times side by side,
in an order rotating with the repetition:

- ``dense``: ``F.conv2d`` on a dense weight;
- ``floor``: the one check ``auto`` cannot skip (its kept kernel's factors compared with the
  current ones, ``torch.equal`` per factor), then ``F.conv2d`` on that kernel;
- ``busy 40 µs`` / ``busy 150 µs``: a pure-Python wait of that length, then the dense conv (what
  Python time alone costs there);
- ``checks``: the argument and input checks of ``conv2d``, then ``floor``;
- ``lookup``: the plan key, regime and cached-choice lookup, then ``floor``;
- ``auto``: ``sekron.torch.conv2d`` (the whole call);
- ``nn.Conv2d`` and ``SeKronConv2d``: the two modules in eval mode.

A second table times the "forward" regime (autograd recording, no backward: an eval-mode layer
run without ``no_grad``; the factors and the dense weight require grad, the input does not):

- ``dense``: ``F.conv2d`` on a dense weight that requires grad;
- ``reused``: the factor check, then ``F.conv2d`` on the kept kernel put into the graph by the
  function ``auto`` uses there (``_auto._Reused``: its backward, if one follows, rebuilds the
  kernel);
- ``nn.Conv2d`` and ``SeKronConv2d``: the two modules in eval mode.

Each row gives the median time and the median over repetitions of ``dense / variant`` (the
modules: ``nn.Conv2d / SeKronConv2d``), and the same pieces' warm per-call time in a tight loop
on a tiny input (1x256x2x2), where the conv costs next to nothing. Results:
``results/conv_call_overhead.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sekron import random_sekron
from sekron.torch import SeKronConv2d, _auto, _functional, conv2d
from sekron.torch._checks import check_bias, check_conv_args, check_st, check_x

sys.path.insert(0, str(Path(__file__).parent))
from conv_projection import median_ratio, time_round_robin, warm_us  # noqa: E402
from machine import describe  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHAPES, RANK = [(8, 8, 1, 1), (32, 32, 1, 1)], 4


def _busy(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def _kept(st: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The factor copies and the kernel ``auto`` keeps for ``st`` (and reuses while the factors
    equal the copies) when it runs the dense conv."""
    kept = _auto._kept(st)
    ptrs = tuple(f.data_ptr() for f in st.factors)
    return next(v for k, v in _auto._KERNELS.items() if k[-1] == ptrs)[0], kept


def variants(x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The timed calls on input ``x`` (see the module notes); ``auto`` has measured and kept
    its kernel when this returns."""
    st = random_sekron(SHAPES, RANK, backend="pytorch", dtype="float32", random_state=0)
    weight = torch.randn(st.shape) / st.shape[1]
    conv2d(x, st)  # measures, caches the choice and keeps the kernel
    factors = st.factors
    copies, kept = _kept(st)
    args = check_conv_args(1, 0, 1, 1, "auto", st.shape[2:])

    def floor() -> torch.Tensor:
        if not all(torch.equal(a, b) for a, b in zip(copies, factors, strict=True)):
            raise RuntimeError("the kept kernel's factors changed")
        return F.conv2d(x, kept)

    def checks() -> torch.Tensor:
        s = check_st(st, 2, "conv2d")
        a = check_conv_args(1, 0, 1, 1, "auto", s.shape[2:])
        check_x(x, s, a, 2, "conv2d")
        check_bias(None, s)
        return floor()

    def lookup() -> torch.Tensor:
        k = _functional._key(x, st, args)
        _auto.lookup(k, x, None, _auto.regime((x, *st.factors), True))
        return floor()

    dense_module = nn.Conv2d(st.shape[1], st.shape[0], 1, bias=False).eval()
    layer = SeKronConv2d(st).eval()
    layer(x)
    return {
        "dense": lambda: F.conv2d(x, weight),
        "floor": floor,
        "busy 40 µs": lambda: (_busy(40), F.conv2d(x, weight)),
        "busy 150 µs": lambda: (_busy(150), F.conv2d(x, weight)),
        "checks": checks,
        "lookup": lookup,
        "auto": lambda: conv2d(x, st),
        "nn.Conv2d": lambda: dense_module(x),
        "SeKronConv2d": lambda: layer(x),
    }


def forward_variants(x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The timed calls of the "forward" regime (see the module notes), to run with autograd
    recording; the layer has measured and kept its kernel when this returns."""
    layer = SeKronConv2d(
        random_sekron(SHAPES, RANK, backend="pytorch", dtype="float32", random_state=0)
    ).eval()
    layer(x)  # measures the "forward" regime and caches the choice
    st = layer.sekron
    factors = st.factors
    copies, kept = _kept(st)
    weight = (torch.randn(st.shape) / st.shape[1]).requires_grad_()

    def reused() -> torch.Tensor:
        if not all(torch.equal(a, b) for a, b in zip(copies, factors, strict=True)):
            raise RuntimeError("the kept kernel's factors changed")
        return F.conv2d(x, _auto._Reused.apply(kept, st, *factors))

    dense_module = nn.Conv2d(st.shape[1], st.shape[0], 1, bias=False).eval()
    return {
        "dense": lambda: F.conv2d(x, weight),
        "reused": reused,
        "nn.Conv2d": lambda: dense_module(x),
        "SeKronConv2d": lambda: layer(x),
    }


def _rows(times: dict[str, list[float]], warm: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for name, ts in times.items():
        base = "nn.Conv2d" if name == "SeKronConv2d" else "dense"
        rows.append(
            {
                "variant": name,
                "ms": statistics.median(ts),
                "base": base,
                "base_vs_this": median_ratio(times[base], ts),
                "warm_us": warm.get(name),
            }
        )
    return rows


def run(reps: int, batch: int, warm_calls: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    with torch.no_grad():
        fns = variants(torch.randn(batch, 256, 14, 14))
        times = time_round_robin(fns, reps)
        tiny = variants(torch.randn(1, 256, 2, 2))
        tiny = {n: f for n, f in tiny.items() if not n.startswith("busy")}
        warm = warm_us(tiny, warm_calls)
    with torch.enable_grad():
        fw_times = time_round_robin(forward_variants(torch.randn(batch, 256, 14, 14)), reps)
        fw_warm = warm_us(forward_variants(torch.randn(1, 256, 2, 2)), warm_calls)
    return {
        "rows": _rows(times, warm),
        "forward_rows": _rows(fw_times, fw_warm),
        "forward_choice": sorted(
            f"{v.method}/{v.layout}"
            for k, v in _auto.cached_choices().items()
            if k[1] == "forward" and k[0].in_shape == (batch, 256, 14, 14)
        ),
        "meta": {
            "machine": describe(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": batch,
            "reps": reps,
            "warm_calls": warm_calls,
        },
    }


def to_markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# Per-call work of `auto` next to a convolution",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; "
        f"1x1 (8, 8)x(32, 32) R=4 split of a 256-channel layer (auto runs the dense conv), "
        f"input {meta['batch']}x256x14x14, float32, no_grad; {meta['reps']} repetitions, "
        "every variant once per repetition in a rotating order. `base/this` is the median over "
        "repetitions of the base's time over the variant's (1.00: as fast as the base). `warm "
        f"µs`: per-call time in a tight loop ({meta['warm_calls']} calls, median of 5 rounds) on "
        "a 1x256x2x2 input, where the conv itself costs next to nothing.",
        "",
        "| variant | ms | base | base/this | warm µs (tiny input) |",
        "|---|---|---|---|---|",
    ]
    lines += _table_rows(result["rows"])
    if "forward_rows" in result:
        lines += [
            "",
            'The "forward" regime: the same layer and input with autograd recording and no '
            "backward (factors and dense weight require grad, the input does not; the layers in "
            "eval mode), the same repetitions and warm loop. `SeKronConv2d`'s choice there: "
            f"{', '.join(result.get('forward_choice', [])) or '-'}.",
            "",
            "| variant | ms | base | base/this | warm µs (tiny input) |",
            "|---|---|---|---|---|",
            *_table_rows(result["forward_rows"]),
        ]
    return "\n".join(lines) + "\n"


def _table_rows(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        warm = "-" if r["warm_us"] is None else f"{r['warm_us']:.1f}"
        out.append(
            f"| {r['variant']} | {r['ms']:.3f} | {r['base']} | {r['base_vs_this']:.3f} | {warm} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, small batch")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    reps = args.reps or (5 if args.quick else 500)
    result = run(reps, 2 if args.quick else 32, 50 if args.quick else 2000)
    text = to_markdown(result)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "conv_call_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "conv_call_overhead.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
