"""sekron on a Dask cluster: 1- against 2-worker scaling, and per-layer costs for an estimate.

Run:  python benchmarks/cluster.py [--only search compress layers] [--workers 0 1 2]
      python benchmarks/cluster.py --estimate   # the ResNet-50 estimate from the layers
(``--workers 0``: the local run; each ``compress`` run is merged into the file, so the runs
can be made one process at a time)
Writes benchmarks/results/cluster.json (cluster.md is written by hand from it).

- ``search``: ``sekron.search`` of a trained (128, 64, 3, 3) conv weight (the digits CNN's
  ``features.8``, float64, 4x, greedy stage: ``refine=0``, since only that stage is spread)
  locally with one thread, then with ``executor=`` on a ``LocalCluster`` of N single-threaded
  worker processes; the results must be identical.
- ``compress``: ``compress(structure="search")`` of the digits CNN with ``executor=`` (one
  task per layer) on N workers, against the local run (models compared to the bit); each
  layer compressed alone, locally, gives the per-layer times and the critical path.
- ``layers``: the per-layer cost of ``compress(structure="search")`` (what one task does)
  for every distinct conv shape of a ResNet-50, smallest first, on standard-normal float32
  weights, one at a time with one torch thread; each shape is written as it finishes and
  skipped by a later run, so the list can be measured in several runs. The docs page adds up
  a whole ResNet-50 from them.
"""

from __future__ import annotations

import os

# one OpenMP thread, as Dask's nanny gives every worker process (its pre-spawn environment):
# the local runs then compare fairly (without it, on this busy 2-core machine, compressing the
# digits CNN's features.8 took 322 s locally instead of 6 s)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sekron  # noqa: E402
from sekron.data.digits_cnn import WEIGHTS_PATH, load_pretrained  # noqa: E402
from sekron.torch import compress  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

OUT = Path(__file__).parent / "results" / "cluster.json"
#: The conv shapes (out, in, kh, kw) of a torchvision ResNet-50 and how many layers have each
#: (53 convolutions)
RESNET50: dict[tuple[int, int, int, int], int] = {
    (64, 3, 7, 7): 1,
    (64, 64, 1, 1): 1,
    (64, 64, 3, 3): 3,
    (256, 64, 1, 1): 4,
    (64, 256, 1, 1): 2,
    (128, 256, 1, 1): 1,
    (128, 128, 3, 3): 4,
    (512, 128, 1, 1): 4,
    (512, 256, 1, 1): 1,
    (128, 512, 1, 1): 3,
    (256, 512, 1, 1): 1,
    (256, 256, 3, 3): 6,
    (1024, 256, 1, 1): 6,
    (1024, 512, 1, 1): 1,
    (256, 1024, 1, 1): 5,
    (512, 1024, 1, 1): 1,
    (512, 512, 3, 3): 3,
    (2048, 512, 1, 1): 3,
    (2048, 1024, 1, 1): 1,
    (512, 2048, 1, 1): 2,
}


def _cluster(n: int) -> Any:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    return cluster, distributed.Client(cluster)


def _describe(res: Any) -> list[Any]:
    return [(c.shapes, c.form, c.ranks, c.rel_error) for c in res.all]


def bench_search(workers: list[int]) -> dict[str, Any]:
    with np.load(WEIGHTS_PATH.with_suffix(".npz"), allow_pickle=False) as data:
        W = data["features.8.weight"].astype(np.float64)
    kw: dict[str, Any] = dict(compression=4, refine=0, progress=False, threads=1)
    t0 = time.perf_counter()
    local = sekron.search(W, **kw)
    out: dict[str, Any] = {
        "tensor": "digits CNN features.8.weight (128, 64, 3, 3), float64",
        "local_1_thread_s": time.perf_counter() - t0,
        "evaluated": len(local.all),
        "pruned": local.n_pruned,
    }
    for n in [w for w in workers if w]:
        cluster, client = _cluster(n)
        with cluster, client:
            t0 = time.perf_counter()
            res = sekron.search(W, executor=client.get_executor(), **kw)
            out[f"workers_{n}_s"] = time.perf_counter() - t0
            out[f"workers_{n}_identical"] = _describe(res) == _describe(local)
        print("search", n, out, flush=True)
    return out


def _one_layer(name: str, *, model: torch.nn.Module, others: list[str]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    small, report = compress(
        model,
        structure="search",
        compression=4,
        skip=[o for o in others if o != name],
        progress=False,
    )
    return (small.get_submodule(name).state_dict(), [r for r in report if r.name == name]), (
        time.perf_counter() - t0
    )


def _state(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.state_dict().items())


def bench_compress(workers: list[int]) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = load_pretrained()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    out: dict[str, Any] = {"model": "digits CNN", "layers": names, "native_executor": True}
    # what one task does: each layer alone, locally (the critical path of a distributed run)
    per_layer = {n: _one_layer(n, model=model, others=names)[1] for n in names}
    out["per_layer_local_s"] = per_layer
    runs: dict[str, Any] = {}
    local_state = None
    for n in [0, *[w for w in workers if w]]:  # 0: locally, always first (the reference)
        cluster = client = None
        if n:
            cluster, client = _cluster(n)
        executor = None if client is None else client.get_executor()
        t0 = time.perf_counter()
        small, _ = compress(
            model, structure="search", compression=4, progress=False, executor=executor
        )
        seconds = time.perf_counter() - t0
        state = _state(small)
        if local_state is None:
            local_state = state
        same = len(state) == len(local_state) and all(
            ka == kb and torch.equal(a, b)
            for (ka, a), (kb, b) in zip(state, local_state, strict=True)
        )
        runs[f"workers_{n}" if n else "local"] = {"seconds": seconds, "identical_to_local": same}
        if client is not None:
            client.close()
            cluster.close()
        print("compress", n, runs, flush=True)
    out["runs"] = runs
    return out


def bench_layers() -> dict[str, Any]:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    old = json.loads(OUT.read_text()).get("layers", {}) if OUT.exists() else {}
    out = {k: v for k, v in old.items() if k != "resnet50_counts"}
    out["resnet50_counts"] = {"x".join(map(str, k)): v for k, v in RESNET50.items()}
    for shape in sorted(RESNET50, key=lambda s: np.prod(s)):
        if "x".join(map(str, shape)) in out:
            continue  # measured by an earlier run
        conv = torch.nn.Conv2d(shape[1], shape[0], shape[2:], bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(rng.standard_normal(shape).astype(np.float32)))
        t0 = time.perf_counter()
        compress(torch.nn.Sequential(conv), structure="search", compression=4, progress=False)
        out["x".join(map(str, shape))] = time.perf_counter() - t0
        print("layer", shape, out, flush=True)
        data = json.loads(OUT.read_text()) if OUT.exists() else {}
        OUT.write_text(json.dumps({**data, "layers": out}, indent=1, default=str))
    return out


def estimate(layers: dict[str, Any], workers: tuple[int, ...] = (1, 8, 64)) -> dict[str, Any]:
    """A whole ResNet-50's ``compress(structure="search")`` on W workers from the per-layer
    costs: its 53 layers assigned longest first (LPT) to the worker that frees up first; the
    makespan, the total work and the slowest layer (the critical path no W can beat). Shapes
    not measured are extrapolated (:func:`_power_law`) and listed as such."""
    counts = layers["resnet50_counts"]
    cost = {k: float(layers[k]) for k in counts if k in layers}
    extrapolated = {k: _power_law(cost, k) for k in counts if k not in cost}
    cost.update(extrapolated)
    costs = sorted((cost[k] for k, n in counts.items() for _ in range(n)), reverse=True)
    out: dict[str, Any] = {
        "layers": len(costs),
        "extrapolated_s": extrapolated,
        "total_s": sum(costs),
        "slowest_s": costs[0],
    }
    for w in workers:
        loads = [0.0] * w
        for c in costs:
            loads[loads.index(min(loads))] += c
        out[f"workers_{w}_s"] = max(loads)
    return out


def _power_law(cost: dict[str, float], shape: str) -> float:
    """The cost of ``shape`` from a least-squares power law in the number of weights, fitted
    to the measured shapes of its kernel size (1x1 or 3x3; the 7x7 stem is measured)."""
    kernel = shape.split("x")[2:]
    known = [
        (np.prod([int(v) for v in k.split("x")]), c)
        for k, c in cost.items()
        if k.split("x")[2:] == kernel
    ]
    x, y = np.log([n for n, _ in known]), np.log([c for _, c in known])
    slope, offset = np.polyfit(x, y, 1)
    return float(np.exp(offset + slope * np.log(np.prod([int(v) for v in shape.split("x")]))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", default=["search", "compress", "layers"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="0: locally")
    ap.add_argument("--estimate", action="store_true", help="only print the ResNet-50 estimate")
    args = ap.parse_args()
    if args.estimate:
        print(json.dumps(estimate(json.loads(OUT.read_text())["layers"]), indent=1))
        return
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data["machine"] = {
        "cpu": describe(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }
    for name in args.only:
        fn = {"search": bench_search, "compress": bench_compress, "layers": bench_layers}[name]
        data[name] = fn(args.workers) if name != "layers" else fn()
        OUT.write_text(json.dumps(data, indent=1, default=str))
    print(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
