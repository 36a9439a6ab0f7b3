"""Two revisions of sekron side by side: the same workloads, alternating, as paired time ratios.

Run:  python benchmarks/before_after.py --old OLD_SRC --new NEW_SRC [--reps 5] [--name NAME]

``OLD_SRC`` and ``NEW_SRC`` are the ``src`` folders of two checkouts (for example a
``git worktree`` of the commit before a refactor, and this one). Each workload runs in a fresh
process with that ``src`` first on ``sys.path``; the two revisions alternate (A B A B ...) so a
drift in the machine's speed cancels in the per-pair ratio ``new / old``. Only public API is
called, so any two revisions with the same public functions can be compared.

The workloads cover the paths a refactor of the package can slow down:

- ``search``: a complete 2- and 3-factor ``sekron.search`` of a 128x128x3x3 Gaussian tensor at
  4x (default worker threads; the greedy stage only, ``refine=0``, where a revision has the
  joint-fit stage, so both do the same work);
- ``decompose``: nested and chain ``sekron.decompose`` of a 256x256x3x3 tensor, by rank, ``tol``
  and ``max_params``, and ``refine=5``;
- ``conv``: ``sekron.torch.conv2d`` forward (factorized and reconstructed) and a
  ``SeKronConv2d`` forward+backward on 64- and 256-channel layers, batch 32, CPU;
- ``compare``: ``sekron.compare`` on the embedded example at 4x with the GKPD, SeKron and TT
  families (``refine=0`` where it exists, as for ``search``).

Writes ``benchmarks/results/before_after_<name>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

WORKLOADS: dict[str, str] = {
    "search": """
        import numpy as np, sekron
        W = np.random.default_rng(0).standard_normal((128, 128, 3, 3))
        t0 = time.perf_counter()
        res = sekron.search(W, compression=4, max_factors=3, **GREEDY)
        seconds = time.perf_counter() - t0
        check = round(float(res.best.rel_error), 10)
    """,
    "decompose": """
        import numpy as np, sekron
        W = np.random.default_rng(1).standard_normal((256, 256, 3, 3))
        sh3 = [(16, 4, 3, 1), (4, 16, 1, 3), (4, 4, 1, 1)]
        t0 = time.perf_counter()
        out = []
        for form in ("nested", "chain"):
            out.append(sekron.decompose(W, sh3, rank=[16, 4], form=form))
            out.append(sekron.decompose(W, sh3, max_params=W.size // 8, form=form))
            out.append(sekron.decompose(W, sh3, rank=[8, 4], form=form, refine=5))
        out.append(sekron.decompose(W, sh3, tol=0.9))
        out.append(sekron.decompose(W, [(16, 16, 3, 1), (16, 16, 1, 3)], rank=32))
        seconds = time.perf_counter() - t0
        new = hasattr(sekron.SeKronTensor, "rel_error")  # 0.1 named it error
        check = [round(float(s.rel_error if new else s.error), 8) for s in out]
    """,
    "conv": """
        import numpy as np, sekron, torch
        from sekron.torch import SeKronConv2d, conv2d
        torch.manual_seed(0)
        torch.set_num_threads(2)
        rows = []
        for ch, hw in ((64, 56), (256, 14)):
            x = torch.randn(32, ch, hw, hw)
            conv = torch.nn.Conv2d(ch, ch, 3, padding=1)
            shapes = [(8, 8, 3, 1), (ch // 8, ch // 8, 1, 3)]
            st = sekron.decompose(conv.weight.detach(), shapes, rank=4)
            layer = SeKronConv2d.from_conv(conv, shapes=shapes, rank=4)
            rows.append((x, st, layer))
        t0 = time.perf_counter()
        for _ in range(5):
            for x, st, layer in rows:
                with torch.no_grad():
                    conv2d(x, st, padding=1, method="factorized")
                    conv2d(x, st, padding=1, method="reconstructed")
                layer(x).sum().backward()
        seconds = time.perf_counter() - t0
        check = None
    """,
    "compare": """
        import sekron
        from sekron.data import example_weight
        W = example_weight()
        t0 = time.perf_counter()
        table = sekron.compare(
            W, compression=4, families=("gkpd", "sekron", "tt"), progress=False, **GREEDY
        )
        seconds = time.perf_counter() - t0
        check = None
    """,
}

RUNNER = """
import inspect, json, sys, time
import sekron
# the greedy search alone where the joint-fit stage exists (refine=0): like for like
GREEDY = {{"refine": 0}} if "refine" in inspect.signature(sekron.search).parameters else {{}}
{body}
print(json.dumps({{"seconds": seconds, "check": check}}))
"""


def _run(src: Path, name: str) -> dict:
    code = RUNNER.format(body=textwrap.dedent(WORKLOADS[name]))
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed under {src}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="src folder of the old revision")
    parser.add_argument("--new", type=Path, required=True, help="src folder of the new revision")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--name", default="run")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), default=None)
    args = parser.parse_args()
    names = args.only or list(WORKLOADS)
    results = {}
    for name in names:
        old, new, ratios = [], [], []
        for rep in range(args.reps):
            order = ("old", "new") if rep % 2 == 0 else ("new", "old")
            got = {which: _run(getattr(args, which), name) for which in order}
            old.append(got["old"]["seconds"])
            new.append(got["new"]["seconds"])
            ratios.append(new[-1] / old[-1])
            same = got["old"]["check"] == got["new"]["check"]
            print(f"{name} rep {rep}: old {old[-1]:.3f} s, new {new[-1]:.3f} s, same={same}")
        results[name] = {
            "old_s": old,
            "new_s": new,
            "ratio_new_over_old": ratios,
            "median_ratio": statistics.median(ratios),
            "same_results": same,
        }
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "reps": args.reps}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"before_after_{args.name}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print("\n| workload | old median (s) | new median (s) | new/old (median of pairs) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {statistics.median(r['old_s']):.3f} | {statistics.median(r['new_s']):.3f}"
            f" | {r['median_ratio']:.3f} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
