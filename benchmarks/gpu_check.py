"""Checks and timings that need a CUDA GPU (run where one is lent; CI has none).

Usage (repository root, sekron importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/gpu_check.py [--out DIR] [--search-seconds 60]

1. **Correctness on CUDA** (float64 and float32): ``decompose``, ``search`` and ``to_sekron``
   keep the input's device and dtype and agree with the numpy results; ``conv2d`` (every
   method, with stride, padding, dilation and bias) equals ``F.conv2d`` with the dense kernel;
   ``SeKronConv2d`` trains on the GPU; ``compress`` of the digits CNN keeps it on the GPU with
   its accuracy.
2. **Conv timings on the GPU**: dense ``F.conv2d`` against sekron ``auto`` and ``factorized`` on
   the layers and structures of ``conv_projection.py`` (batch 32, float32, CUDA events, paired
   per-repetition ratios): is ``auto`` never slower than dense there too?
3. **Search of the trained 512x512x3x3 weight.** At equal work (``--search-configs`` most
   balanced configurations, all evaluated) on the GPU in float64 and float32, where the batched
   Grams and their eigenvalue problems run on the device, against numpy on every CPU core;
   then time-limited on the GPU and complete on the CPU cores, with progress logged.

Every step appends to ``DIR/gpu_check.json`` as it finishes, so a stopped run keeps its results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import sekron
from sekron import random_sekron
from sekron.torch import SeKronConv2d, compress, conv2d

sys.path.insert(0, str(Path(__file__).parent))
from conv_projection import LAYERS, embedded_structures, sekron_structures  # noqa: E402

WIDE_WEIGHT = Path(__file__).parent / "data" / "wide_digits_cnn.npz"


class Log:
    def __init__(self, out: Path) -> None:
        self.path = out / "gpu_check.json"
        self.data: dict[str, Any] = {}

    def __call__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        print(key, json.dumps(value, default=str)[:2000], flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def correctness(dev: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    g = torch.Generator(device="cpu").manual_seed(0)
    W64 = torch.randn(64, 32, 3, 3, generator=g, dtype=torch.float64)
    Wd = W64.to(dev)
    for form, shapes, rank in (
        ("nested", [(8, 4, 3, 1), (8, 8, 1, 3)], 4),
        ("chain", [(4, 2, 3, 1), (4, 4, 1, 1), (4, 4, 1, 3)], [3, 5]),
    ):
        st = sekron.decompose(Wd, shapes, rank=rank, form=form)
        ref = sekron.decompose(W64.numpy(), shapes, rank=rank, form=form)
        out[f"decompose_{form}"] = {
            "devices": sorted({str(f.device) for f in st.factors}),
            "dtypes": sorted({str(f.dtype) for f in st.factors}),
            "error_vs_numpy": abs(st.rel_error - ref.rel_error),
            "error_vs_reconstruction": abs(rel(st.to_tensor(), Wd) - st.rel_error),
        }
    res = sekron.search(Wd, compression=4, progress=False)
    ref = sekron.search(W64.numpy(), compression=4, progress=False)
    best = res.best.to_sekron()
    out["search"] = {
        "same_best": (res.best.shapes, res.best.form, res.best.ranks)
        == (ref.best.shapes, ref.best.form, ref.best.ranks),
        "best_error_vs_numpy": abs(res.best.rel_error - ref.best.rel_error),
        "to_sekron_devices": sorted({str(f.device) for f in best.factors}),
        "to_sekron_error_vs_search": abs(best.rel_error - res.best.rel_error),
    }
    # conv2d: every method against F.conv2d with the dense kernel
    conv: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32):
        st = random_sekron(
            [(4, 2, 3, 1), (4, 4, 1, 3), (2, 4, 1, 1)],
            [2, 3],
            backend="pytorch",
            dtype=str(dtype).split(".")[1],
            random_state=0,
        )
        st = sekron.SeKronTensor([f.to(dev) for f in st.factors], form=st.form)
        x = torch.randn(4, 32, 15, 17, dtype=dtype, device=dev)
        bias = torch.randn(32, dtype=dtype, device=dev)
        for stride, padding, dilation in ((1, 1, 1), (2, (1, 2), 1), (1, 2, 2), (1, "same", 2)):
            dense = F.conv2d(x, st.to_tensor(), bias, stride, padding, dilation)
            for method in ("reconstructed", "factorized", "auto"):
                y = conv2d(x, st, bias, stride, padding, dilation, method=method)
                key = f"{str(dtype)[6:]} s{stride} p{padding} d{dilation} {method}"
                conv[key] = rel(y, dense)
                assert y.device == dev and y.dtype == dtype, key
    out["conv2d_rel_diff"] = conv
    # SeKronConv2d trains on the GPU
    layer = torch.nn.Conv2d(32, 64, 3, padding=1).to(dev)
    sk = SeKronConv2d.from_conv(layer, shapes=[(8, 4, 3, 1), (8, 8, 1, 3)], rank=4)
    x = torch.randn(8, 32, 12, 12, device=dev)
    opt = torch.optim.Adam(sk.parameters(), lr=1e-2)
    target = layer(x).detach()
    losses = []
    for _ in range(20):
        loss = F.mse_loss(sk(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    out["sekronconv2d_train"] = {
        "param_devices": sorted({str(p.device) for p in sk.parameters()}),
        "loss_first_last": [losses[0], losses[-1]],
    }
    # compress the digits CNN on the GPU
    from sekron.data.digits_cnn import accuracy, load_pretrained, load_test_set

    model = load_pretrained().to(dev)
    xt, yt = load_test_set()
    xt, yt = xt.to(dev), yt.to(dev)
    before = accuracy(model, xt, yt)
    t0 = time.perf_counter()
    small, report = compress(model, compression=4, progress=False, example_input=xt[:32])
    out["compress_digits"] = {
        "seconds": time.perf_counter() - t0,
        "param_devices": sorted({str(p.device) for p in small.parameters()}),
        "accuracy_before_after": [before, accuracy(small, xt, yt)],
        "params_before_after": [
            sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in small.parameters()),
        ],
    }
    return out


def _time_ms(f: Any, dev: torch.device) -> float:
    if dev.type != "cuda":  # a CPU dry run of this script
        t0 = time.perf_counter()
        f()
        return (time.perf_counter() - t0) * 1e3
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    f()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b)


@torch.no_grad()
def conv_timings(dev: torch.device, reps: int, layers: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for name, ch, size, k, stride in layers:
        x = torch.randn(32, ch, size, size, device=dev)
        pad = k // 2
        dense_params = ch * ch * k * k
        structs = sekron_structures(ch, k) + embedded_structures(ch, k, dense_params // 10)
        for label, shapes, ranks, form in structs:
            st = random_sekron(
                shapes, ranks, form=form, backend="pytorch", dtype="float32", random_state=0
            )
            st = sekron.SeKronTensor([f.to(dev) for f in st.factors], form=st.form)
            Wd = st.to_tensor()
            fns = {
                "dense": lambda x=x, W=Wd, s=stride, p=pad: F.conv2d(x, W, None, s, p),
                "factorized": lambda x=x, st=st, s=stride, p=pad: conv2d(
                    x, st, None, s, p, method="factorized"
                ),
                "auto": lambda x=x, st=st, s=stride, p=pad: conv2d(
                    x, st, None, s, p, method="auto"
                ),
            }
            for f in fns.values():  # warm-up; auto measures and caches its choice here
                f()
            times: dict[str, list[float]] = {k2: [] for k2 in fns}
            for _ in range(reps):
                for k2, f in fns.items():
                    times[k2].append(_time_ms(f, dev))
            ratio = {
                k2: statistics.median(d / t for d, t in zip(times["dense"], times[k2], strict=True))
                for k2 in ("auto", "factorized")
            }
            choice = [
                v
                for key, v in sekron.torch._auto.cached_choices().items()
                if key[0].shapes == st.shapes and key[0].ranks == st.ranks
            ]
            rows.append(
                {
                    "layer": name,
                    "structure": label,
                    "dense_ms": statistics.median(times["dense"]),
                    "auto_ms": statistics.median(times["auto"]),
                    "factorized_ms": statistics.median(times["factorized"]),
                    "auto_vs_dense": ratio["auto"],
                    "factorized_vs_dense": ratio["factorized"],
                    "auto_choice": "/".join(choice[0]) if choice else "?",
                }
            )
            print(
                f"{name:18s} {label:40s} dense {rows[-1]['dense_ms']:.3f} ms  auto/dense "
                f"{ratio['auto']:.2f}  fact/dense {ratio['factorized']:.2f}",
                flush=True,
            )
    return rows


def _wide_weight() -> np.ndarray:
    with np.load(WIDE_WEIGHT, allow_pickle=False) as d:
        return np.asarray(d["features.11.weight"], dtype=np.float64)


def search_cuda(dev: torch.device, seconds: float, log: Log) -> dict[str, Any]:
    """The trained 512 weight as a CUDA tensor, time-limited."""
    W = torch.from_numpy(_wide_weight()).to(dev)
    t0 = time.perf_counter()
    res = sekron.search(
        W, compression=4, progress=_progress(log, "search_cuda", t0), max_seconds=seconds
    )
    return {
        "max_seconds": seconds,
        "seconds": time.perf_counter() - t0,
        "evaluated": len(res.all),
        "pruned": res.n_pruned,
        "n_open": res.n_open,
        "best": res.best.describe(),
        "rel_error": res.best.rel_error,
    }


def search_equal_work(dev: torch.device, configs: int) -> dict[str, Any]:
    """The same fixed work on the GPU and on the CPU: the trained 512 weight's ``configs`` most
    balanced configurations, every one evaluated (``exhaustive``, greedy stage only). On CUDA
    the batched Grams and their eigenvalue problems stay on the device (``torch.linalg``)."""
    W = _wide_weight()
    kw: dict[str, Any] = dict(
        compression=4, max_configs=configs, exhaustive=True, refine=0, progress=False
    )
    out: dict[str, Any] = {"configs": configs}
    runs = {
        "numpy_cpu": lambda: sekron.search(W, **kw),
        "cuda_float64": lambda: sekron.search(torch.from_numpy(W).to(dev), **kw),
        "cuda_float32": lambda: sekron.search(torch.from_numpy(W).float().to(dev), **kw),
    }
    for name, run in runs.items():
        t0 = time.perf_counter()
        res = run()
        out[name] = {
            "seconds": time.perf_counter() - t0,
            "kernel_seconds": res.kernel_seconds,
            "evaluated": len(res.all),
            "best": res.best.describe(),
            "rel_error": res.best.rel_error,
        }
    ref = out["numpy_cpu"]["rel_error"]
    for name in ("cuda_float64", "cuda_float32"):
        out[name]["rel_error_vs_numpy"] = abs(out[name]["rel_error"] - ref)
        out[name]["speedup_vs_numpy"] = out["numpy_cpu"]["seconds"] / out[name]["seconds"]
    return out


def search_numpy(log: Log) -> dict[str, Any]:
    """The trained 512 weight, complete, numpy on every CPU core of the machine."""
    W = _wide_weight()
    t0 = time.perf_counter()
    res = sekron.search(W, compression=4, progress=_progress(log, "search_numpy", t0))
    return {
        "cpus": os.cpu_count(),
        "seconds": time.perf_counter() - t0,
        "evaluated": len(res.all),
        "pruned": res.n_pruned,
        "best": res.best.describe(),
        "rel_error": res.best.rel_error,
        "certified": res.certified,
    }


def _progress(log: Log, name: str, t0: float) -> Any:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter() - t0
        if now - last[0] > 10 or done == total:
            last[0] = now
            log(name + "_progress", {"done": done, "total": total, "seconds": now})

    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--search-seconds", type=float, default=60.0)
    ap.add_argument("--search-configs", type=int, default=300)
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--dry", action="store_true", help="CPU smoke run of the script itself")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out)
    dev = torch.device("cpu") if args.dry else torch.device("cuda", torch.cuda.current_device())
    log(
        "meta",
        {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "device": "cpu" if args.dry else torch.cuda.get_device_name(dev),
        },
    )
    layers = LAYERS[-1:] if args.dry else LAYERS
    steps = [
        ("correctness", lambda: correctness(dev)),
        ("conv_timings", lambda: conv_timings(dev, args.reps, layers)),
        ("search_equal_work", lambda: search_equal_work(dev, args.search_configs)),
        ("search_cuda", lambda: search_cuda(dev, args.search_seconds, log)),
        ("search_numpy", lambda: search_numpy(log)),
    ]
    for name, fn in steps:
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        try:
            log(name, fn())
        except Exception:  # keep going: the other steps are independent
            log(name, {"error": traceback.format_exc()})
        log(name + "_seconds", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
