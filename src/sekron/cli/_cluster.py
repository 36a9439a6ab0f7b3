"""``sekron compare --scheduler ADDRESS`` / ``--workers N``: run on a Dask cluster."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

from ._io import CLIError

__all__ = ["add_cluster_options", "cluster_executor"]


def add_cluster_options(cmp: argparse.ArgumentParser, workers_type: Any) -> None:
    where = cmp.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the family fits and the search's configurations on the Dask cluster whose "
        "scheduler listens at ADDRESS (for example tcp://10.0.0.5:8786); the table is the "
        "one a local run prints. Needs pip install 'sekron[dask]'",
    )
    where.add_argument(
        "--workers",
        type=workers_type,
        metavar="N",
        help="the same on a Dask cluster of N worker processes started on this machine",
    )


@contextlib.contextmanager
def cluster_executor(args: argparse.Namespace) -> Iterator[Executor | None]:
    """The executor ``--scheduler``/``--workers`` ask for (None: run locally), closed on exit."""
    if args.scheduler is None and args.workers is None:
        yield None
        return
    flag = "--scheduler" if args.scheduler is not None else "--workers"
    try:
        import distributed
    except ImportError:
        raise CLIError(
            f"{flag} needs Dask's distributed scheduler: pip install 'sekron[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        try:
            if args.scheduler is not None:
                client = distributed.Client(args.scheduler, timeout="10s")
            else:
                cluster = distributed.LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: 8787 may be taken
                )
                stack.enter_context(cluster)
                client = distributed.Client(cluster)
                client.wait_for_workers(args.workers)
        except OSError as e:  # no scheduler there (a TimeoutError is an OSError)
            raise CLIError(f"{flag} {args.scheduler or args.workers}: {e}") from None
        stack.enter_context(client)
        yield client.get_executor()
