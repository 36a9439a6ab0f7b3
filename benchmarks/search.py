"""Benchmark of sekron.search: time against the SVDs it must compute, side by side.

Run:  python benchmarks/search.py [--quick] [--threads N]
Writes benchmarks/results/search.md and search.json.

Measured, for a standard-normal 256x256x3x3 tensor at 4x compression, 2 and 3 factors:

- ``search``: wall time of ``sekron.search`` (default pruning) and with ``exhaustive=True``;
- ``svd_time``: the time spent inside the SVD / eigenvalue kernels during that same search (the
  shared level-1 spectra, the level-1 singular vectors and the deeper levels), so
  ``search / svd_time`` is the bookkeeping overhead factor (target <= 1.5);
- ``naive_floor``: one full SVD tree per configuration, computed independently as
  ``decompose`` would (``nested_tree`` / TT-SVD at the budget's rank caps), timed on a random
  sample of configurations and extrapolated to all of them;
- the 512x512x3x3 layer at 4x with 2 and 3 factors, and the default ``sekron compare`` run on
  the embedded example.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

import sekron
from sekron._backend import get_backend
from sekron.decomposition import _tt_svd, nested_tree
from sekron.kron import rearrange_unchecked
from sekron.search import _chain_caps, _Engine, _nested_caps, enumerate_configs
from sekron.search import search as sekron_search

RESULTS = Path(__file__).parent / "results"


class _Timer:
    """Accumulates the time spent in the engine's SVD kernels during one search."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._orig: dict[str, Any] = {}

    def __enter__(self) -> _Timer:
        for name in ("values2", "level1_Y"):
            orig = getattr(_Engine, name)
            self._orig[name] = orig

            def wrapped(*a: Any, _orig: Any = orig, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _orig(*a, **k)
                finally:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1

            setattr(_Engine, name, wrapped)
        # the truncated SVDs of levels 2..S-2 are called from nested_tree/chain_error2
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, orig in self._orig.items():
            setattr(_Engine, name, orig)


def naive_floor(W: np.ndarray, budget: int, max_factors: int, sample: int, seed: int) -> dict:
    """One independent SVD tree per configuration (no sharing), sampled and extrapolated."""
    B = get_backend("numpy")
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
        d = tuple(prod(s) for s in shapes)
        t0 = time.perf_counter()
        T = rearrange_unchecked(B, W, shapes)
        if form == "nested":
            nested_tree(B, T, d, _nested_caps(d, shapes, budget), "auto", rng)
        else:
            caps = _chain_caps(d, shapes, budget)
            _tt_svd(B, T, d, caps, "auto", rng, None)
        times.append(time.perf_counter() - t0)
    mean = float(np.mean(times))
    return {
        "n_jobs": len(jobs),
        "sampled": len(times),
        "mean_tree_s": mean,
        "estimated_total_s": mean * len(jobs),
    }


def bench_search(shape: tuple[int, ...], compression: float, max_factors: int, **kw: Any) -> dict:
    W = np.random.default_rng(0).standard_normal(shape)
    out: dict[str, Any] = {"shape": list(shape), "compression": compression,
                           "max_factors": max_factors, "max_configs": kw.get("max_configs")}
    with _Timer() as timer:
        t0 = time.perf_counter()
        res = sekron_search(W, compression=compression, max_factors=max_factors,
                            progress=False, **kw)
        out["search_s"] = time.perf_counter() - t0
    out["svd_s"] = timer.seconds
    out["overhead_factor"] = out["search_s"] / max(timer.seconds, 1e-9)
    out["n_configs"] = res.n_configs
    out["n_evaluated"] = len(res.all)
    out["n_pruned"] = res.n_pruned
    out["best"] = {"shapes": [list(s) for s in res.best.shapes], "form": res.best.form,
                   "ranks": list(res.best.ranks), "n_params": res.best.n_params,
                   "rel_error": res.best.rel_error}
    # the best candidate's error equals decompose's (a correctness check, not a timing)
    out["best_error_matches_decompose"] = bool(
        abs(res.best.to_sekron().error - res.best.rel_error) < 1e-8
    )
    return out


def bench_compare() -> dict:
    from sekron.data import example_weight

    W = example_weight()
    t0 = time.perf_counter()
    table = sekron.compare(W, progress=False)
    total = time.perf_counter() - t0
    return {"compare_default_s": total,
            "search_s": table.searches[0].seconds if table.searches[0] else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (threadpoolctl)")
    ap.add_argument("--sample", type=int, default=40, help="configurations timed for the floor")
    ap.add_argument("--skip-512", action="store_true")
    ap.add_argument("--max-configs", type=int, default=None,
                    help="cap on configurations for the 256 run (default: all)")
    ap.add_argument("--max-configs-512", type=int, default=None)
    ap.add_argument("--exhaustive", action="store_true", help="also time exhaustive=True")
    args = ap.parse_args()
    limiter: Any = None
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.threads)
    meta = {
        "python": sys.version.split()[0], "numpy": np.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "blas_threads": args.threads, "load_avg_start": os.getloadavg(),
    }
    shape = (32, 32, 3, 3) if args.quick else (256, 256, 3, 3)
    print(f"search {shape} at 4x, 2-3 factors ...", flush=True)
    a = bench_search(shape, 4.0, 3, max_configs=args.max_configs)
    print(json.dumps(a, indent=1), flush=True)
    a_ex = None
    if args.exhaustive:
        print("exhaustive ...", flush=True)
        a_ex = bench_search(shape, 4.0, 3, exhaustive=True, max_configs=args.max_configs)
        print(json.dumps(a_ex, indent=1), flush=True)
    W = np.random.default_rng(0).standard_normal(shape)
    floor = naive_floor(W, int(W.size / 4), 3, args.sample, 0)
    print(json.dumps(floor, indent=1), flush=True)
    big = None
    if not args.skip_512:
        big_shape = (64, 64, 3, 3) if args.quick else (512, 512, 3, 3)
        print(f"search {big_shape} at 4x ...", flush=True)
        big = bench_search(big_shape, 4.0, 3, max_configs=args.max_configs_512)
        print(json.dumps(big, indent=1), flush=True)
    cmp = bench_compare()
    print(json.dumps(cmp, indent=1), flush=True)
    meta["load_avg_end"] = os.getloadavg()
    data = {"meta": meta, "search_256": a, "search_256_exhaustive": a_ex, "naive_floor_256": floor,
            "search_512": big, "compare_example": cmp}
    if limiter is not None:
        limiter.restore_original_limits()
    if args.quick:
        print("quick run: results not written")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {RESULTS / 'search.json'}")


if __name__ == "__main__":
    main()
