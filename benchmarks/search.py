"""Benchmark of sekron.search: time against the SVDs it must compute, side by side.

Run:  python benchmarks/search.py [--quick] [--full-512] [--only NAME ...]
Writes benchmarks/results/search.json (search.md is written by hand from it).

Measured on standard-normal tensors (the worst case for pruning: every configuration has nearly
the same error, so certified lower bounds skip almost nothing), at 4x compression, 2 and 3
factors:

- 256x256x3x3: ``sekron.search`` wall time with its default worker threads, with pruning and
  with ``exhaustive=True``; the same exhaustive search on one thread, with the time spent inside
  its SVD / eigenvalue kernels (``SearchResult.kernel_seconds``: level-1 spectra and vectors,
  level-1 remainders, every deeper Gram and its eigenvalues), so ``search / svd_time`` is the
  bookkeeping overhead factor (target <= 1.5);
- ``naive_floor``: one full SVD tree per configuration, computed independently by
  ``sekron.decompose`` at the budget's rank caps (BLAS on one thread), timed on a random sample
  of configurations and extrapolated to all of them;
- 512x512x3x3: a search with ``max_seconds`` (its certificate: evaluated configurations, the
  certified bound on the rest), and with ``--full-512`` the complete search, on a standard-normal
  tensor and on a trained 512x512x3x3 weight (``benchmarks/data/wide_digits_cnn.npz``, made by
  ``scripts/train_wide_digits_cnn.py``): no pretrained ImageNet weight can be downloaded here;
- the default ``sekron compare`` run on the embedded example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

import sekron
from sekron.search import enumerate_configs
from sekron.search import search as sekron_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WIDE_WEIGHT = Path(__file__).parent / "data" / "wide_digits_cnn.npz"


def rank_caps(shapes: tuple[tuple[int, ...], ...], budget: int, form: str) -> tuple[int, ...]:
    """The largest rank of each level that fits ``budget`` with every other rank 1, at most the
    level's full rank: the caps ``search`` computes each configuration's tree at."""
    d = [prod(s) for s in shapes]
    caps = []
    for k in range(len(d) - 1):
        if form == "nested":
            full = min(d[k], prod(d[k + 1 :]))
            fit = (budget - sum(d[:k])) // sum(d[k:])
        else:
            full = min(prod(d[: k + 1]), prod(d[k + 1 :]))
            fit = (budget - sum(d) + d[k] + d[k + 1]) // (d[k] + d[k + 1])
        caps.append(max(1, min(full, fit)))
    return tuple(caps)


def naive_floor(W: np.ndarray, budget: int, max_factors: int, sample: int, seed: int) -> dict:
    """One independent SVD tree per configuration (no sharing), sampled and extrapolated:
    ``sekron.decompose`` at the budget's rank caps, as a search without sharing would run it."""
    rng = np.random.default_rng(seed)
    jobs = []
    for S in range(2, max_factors + 1):
        for c in enumerate_configs(W.shape, S):
            if sum(prod(s) for s in c) <= budget:
                jobs.extend([(c, "nested")] if S == 2 else [(c, "nested"), (c, "chain")])
    pick = rng.choice(len(jobs), size=min(sample, len(jobs)), replace=False)
    times = []
    for i in pick:
        shapes, form = jobs[i]
        caps = rank_caps(shapes, budget, form)
        t0 = time.perf_counter()
        sekron.decompose(W, shapes, rank=caps, form=form)
        times.append(time.perf_counter() - t0)
    mean = float(np.mean(times))
    return {
        "n_jobs": len(jobs),
        "sampled": len(times),
        "mean_tree_s": mean,
        "estimated_total_s": mean * len(jobs),
    }


def trained_512() -> np.ndarray:
    """The trained 512x512x3x3 weight of ``scripts/train_wide_digits_cnn.py``, as float64."""
    with np.load(WIDE_WEIGHT, allow_pickle=False) as data:
        return np.asarray(data["features.11.weight"], dtype=np.float64)


def bench_search(
    shape: tuple[int, ...],
    compression: float,
    max_factors: int,
    *,
    timed: bool = False,
    tensor: str = "gaussian",
    **kw: Any,
) -> dict:
    W = trained_512() if tensor == "trained" else np.random.default_rng(0).standard_normal(shape)
    shape = W.shape
    out: dict[str, Any] = {
        "tensor": tensor,
        "shape": list(shape),
        "compression": compression,
        "max_factors": max_factors,
        **{k: v for k, v in kw.items() if v is not None},
    }
    t0 = time.perf_counter()
    res = sekron_search(W, compression=compression, max_factors=max_factors, progress=False, **kw)
    out["search_s"] = time.perf_counter() - t0
    if timed:  # the time inside its SVD / Gram / eigenvalue kernels, as the result reports it
        out["svd_s"] = res.kernel_seconds
        out["overhead_factor"] = out["search_s"] / max(res.kernel_seconds, 1e-9)
    out["n_configs"] = res.n_configs
    out["n_evaluated"] = len(res.all)
    out["n_pruned"] = res.n_pruned
    out["timed_out"] = res.timed_out
    out["certified"] = res.certified
    out["n_open"] = res.n_open
    out["bound"] = None if not np.isfinite(res.bound) else res.bound
    out["refined"] = len(res.refined)
    out["greedy_best_error"] = res.greedy_best.rel_error
    out["best"] = {
        "shapes": [list(s) for s in res.best.shapes],
        "form": res.best.form,
        "ranks": list(res.best.ranks),
        "n_params": res.best.n_params,
        "rel_error": res.best.rel_error,
    }
    # the best candidate's error equals decompose's (a correctness check, not a timing)
    out["best_error_matches_decompose"] = bool(
        abs(res.best.to_sekron().rel_error - res.best.rel_error) < 1e-8
    )
    return out


def bench_compare() -> dict:
    from sekron.data import example_weight

    W = example_weight()
    t0 = time.perf_counter()
    table = sekron.compare(W, progress=False)
    total = time.perf_counter() - t0
    return {
        "compare_default_s": total,
        "search_s": table.searches[0].seconds if table.searches[0] else None,
    }


def _report(name: str, value: dict) -> None:
    print(name, json.dumps(value, indent=1), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--sample", type=int, default=40, help="configurations timed for the floor")
    ap.add_argument("--max-seconds-512", type=float, default=45.0)
    ap.add_argument("--full-512", action="store_true", help="also the complete 512 searches")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these entries (e.g. search_512_trained) and update them in search.json",
    )
    args = ap.parse_args()
    meta = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": describe(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    data: dict[str, Any] = {"meta": meta}
    shape = (32, 32, 3, 3) if args.quick else (256, 256, 3, 3)
    big_shape = (64, 64, 3, 3) if args.quick else (512, 512, 3, 3)
    every = [
        ("search_256", shape, {}),
        # the greedy stage alone: search_256 / search_256_greedy is the joint stage's cost
        ("search_256_greedy", shape, {"refine": 0}),
        ("search_256_exhaustive", shape, {"exhaustive": True}),
        ("search_256_exhaustive_1thread", shape, {"exhaustive": True, "threads": 1, "timed": True}),
        ("search_512_time_limited", big_shape, {"max_seconds": args.max_seconds_512}),
        # a trained layer of the same size (scripts/train_wide_digits_cnn.py)
        (
            "search_512_trained_time_limited",
            big_shape,
            {"tensor": "trained", "max_seconds": args.max_seconds_512},
        ),
        ("search_512", big_shape, {}),
        ("search_512_trained", big_shape, {"tensor": "trained"}),
    ]
    full = {"search_512", "search_512_trained"}
    if args.quick:  # Gaussian tensors only
        every = [r for r in every if r[2].get("tensor") != "trained"]
    if args.only:
        runs = [r for r in every if r[0] in args.only]
        if (RESULTS / "search.json").exists() and not args.quick:  # update the other entries
            data = {
                **json.loads((RESULTS / "search.json").read_text()),
                "meta_" + "_".join(args.only): meta,
            }
    else:
        runs = [r for r in every if args.full_512 or r[0] not in full]
    wanted = (lambda name: name in args.only) if args.only else (lambda name: True)
    for name, shp, kw in runs:
        print(f"{name}: {shp} at 4x, 2-3 factors ...", flush=True)
        data[name] = bench_search(shp, 4.0, 3, **kw)
        _report(name, data[name])
    from threadpoolctl import threadpool_limits

    if wanted("naive_floor_256"):
        with threadpool_limits(1):
            W = np.random.default_rng(0).standard_normal(shape)
            data["naive_floor_256"] = naive_floor(W, int(W.size / 4), 3, args.sample, 0)
        _report("naive_floor_256", data["naive_floor_256"])
    if wanted("compare_example"):
        data["compare_example"] = bench_compare()
        _report("compare_example", data["compare_example"])
    meta["load_avg_end"] = os.getloadavg()
    if args.quick:
        print("quick run: results not written")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {RESULTS / 'search.json'}")


if __name__ == "__main__":
    main()
