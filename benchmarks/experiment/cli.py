"""Command line of the experiment (``python benchmarks/experiment.py --help``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path

import torch

from .harness import FAMILIES, Config, Task, run
from .report import write

__all__ = ["MODES", "build_tasks", "main", "parse"]

TASKS = ("classification", "super_resolution")
RESULTS = Path(__file__).resolve().parents[1] / "results"

#: mode -> (Config, task sizes); ``--families`` etc. override the mode's choices.
MODES: dict[str, Config] = {
    "full": Config(),
    "quick": Config(ratios=(4.0,), seeds=(0,), epochs=1, latency_reps=7),
    "smoke": Config(families=("TT",), ratios=(4.0,), seeds=(0,), epochs=1, latency_reps=3),
}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/experiment.py",
        description="Compress, fine-tune and measure every family at equal compression.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="one seed, ratio 4, one epoch, 7 latency repetitions"
    )
    mode.add_argument(
        "--smoke", action="store_true", help="TT only, a tiny fine-tuning set (seconds)"
    )
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=None)
    p.add_argument("--ratios", nargs="+", type=float, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (all tasks)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    p.add_argument("--no-progress", action="store_true")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the compressions and fine-tunings on the Dask cluster at ADDRESS",
    )
    where.add_argument(
        "--workers", type=int, metavar="N", help="... on a Dask cluster of N local processes"
    )
    return p.parse_args(argv)


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Executor | None]:
    """The Dask executor ``--scheduler``/``--workers`` ask for, or None (run here)."""
    if args.scheduler is None and args.workers is None:
        yield None
        return
    import distributed

    with contextlib.ExitStack() as stack:
        if args.scheduler is not None:
            client = stack.enter_context(distributed.Client(args.scheduler))
        else:
            cluster = distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=1, dashboard_address=":0"
            )
            client = stack.enter_context(distributed.Client(stack.enter_context(cluster)))
        yield client.get_executor()


def build_tasks(names: Sequence[str], *, smoke: bool) -> list[Task]:
    """The tasks by name; ``smoke`` gives each a tiny fine-tuning set."""
    from . import classification, super_resolution

    tasks = []
    for name in names:
        if name == "classification":
            tasks.append(classification.make_task(n_train=64 if smoke else None))
        else:
            tasks.append(super_resolution.make_task(n_train=32 if smoke else 2048))
    return tasks


def _config(args: argparse.Namespace, mode: str) -> Config:
    cfg = MODES[mode]
    return Config(
        families=tuple(args.families) if args.families else cfg.families,
        ratios=tuple(args.ratios) if args.ratios else cfg.ratios,
        seeds=tuple(range(args.seeds)) if args.seeds else cfg.seeds,
        epochs=args.epochs if args.epochs is not None else cfg.epochs,
        max_batches=cfg.max_batches,
        latency_reps=cfg.latency_reps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write ``experiment[_quick|_smoke].{json,md,png}`` and print the Markdown.

    Returns 0, or 130 after Ctrl-C (the rows finished so far are written, marked
    interrupted)."""
    args = parse(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    try:
        tasks = build_tasks(args.tasks, smoke=mode == "smoke")
    except KeyboardInterrupt:
        print("interrupted before the first task; nothing written", file=sys.stderr)
        return 130
    with _executor(args) as executor:
        results = run(tasks, _config(args, mode), progress=not args.no_progress, executor=executor)
    results["mode"] = mode
    results["elapsed_s"] = time.perf_counter() - start
    stem = "experiment" if mode == "full" else f"experiment_{mode}"
    paths = write(results, args.out, stem)
    print("\n".join(str(p) for p in paths))
    if results.get("interrupted"):
        print("interrupted: partial results written", file=sys.stderr)
        return 130
    return 0
