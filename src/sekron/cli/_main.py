"""``sekron compare``: argument parsing and the run, with one documented behaviour on Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._budget import add_mac_options, check_mac_inputs, mac_options
from ._cluster import add_cluster_options, cluster_executor
from ._io import CLIError, load_tensors
from ._out import check_output, layer_plot_paths, plot_formats, write_atomically
from ._report import LayerResult, document, summary_table

__all__ = ["main"]


def _arg_type(name: str, cast: Any, kind: str, ok: Any, rule: str) -> Any:
    """An argparse type: ``cast(text)`` when ``ok`` of it, else a one-line error naming ``name``."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{name} must be {rule}; got {text}")
        return v

    return parse


def _number_above(name: str, bound: float) -> Any:
    """A finite number > bound."""
    return _arg_type(
        name, float, "a number", lambda v: v > bound and np.isfinite(v), f"a number > {bound:g}"
    )


def _int_at_least(flag: str, least: int) -> Any:
    """An int >= least."""
    return _arg_type(flag, int, "an int", lambda v: v >= least, f">= {least}")


_compression = _number_above("compression", 1.0)
_seconds = _number_above("--max-seconds", 0.0)
_mac_ratio = _arg_type(
    "--mac-compression", float, "a number", lambda v: 1 <= v < np.inf, "a number >= 1"
)


class _Ratios(argparse.Action):
    """``--compression C [C ...]``; a last value that is not a number is the PATH when none
    was given before it (``sekron compare --compression 4 8 model.pt``)."""

    def __call__(self, parser: Any, ns: Any, values: Any, option_string: Any = None) -> None:
        ratios = []
        for i, text in enumerate(values):
            try:
                float(text)
            except ValueError:
                if 0 < i == len(values) - 1:
                    ns.trailing_path = text
                    break
            try:
                ratios.append(_compression(text))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentError(self, str(e)) from None
        setattr(ns, self.dest, ratios)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit code 2 (argparse's own convention)
        raise CLIError(message)


def _version() -> str:
    from .. import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sekron", description="SeKron tensor decomposition tools.")
    parser.add_argument("--version", action="version", version=f"sekron {_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    cmp = sub.add_parser(
        "compare",
        usage="%(prog)s [PATH] [--key NAME] [--compression C [C ...]] [options]",
        help="best error of SeKron, TT, TR, CP, Tucker, Tucker-2 and GKPD at equal budgets",
        description=(
            "Print, for each compression ratio, the best relative error of each factorization "
            "family at the same parameter budget (numel / compression). With no PATH, runs on "
            "the embedded example conv weight (128, 64, 3, 3) of a digits CNN. A checkpoint "
            "(.npz, PyTorch .pt/.pth/.bin/.ckpt state dict, .safetensors) with several entries and "
            "no --key: "
            "every conv weight (3-D or 4-D floating-point tensor) is compared and a summary "
            "table gives each layer's best family. Ctrl-C stops at once: what finished is "
            "printed and written (marked partial), exit code 130. Bad input: one line on "
            "stderr, exit code 2."
        ),
    )
    _add_input_options(cmp)
    _add_search_options(cmp)
    add_mac_options(cmp, _int_at_least("--max-macs", 1), _mac_ratio)
    add_cluster_options(cmp, _int_at_least("--workers", 1))
    return parser


def _add_input_options(cmp: argparse.ArgumentParser) -> None:
    cmp.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help=".npy, .npz, PyTorch state dict (.pt, .pth, .bin, .ckpt) or .safetensors file",
    )
    cmp.add_argument(
        "--key",
        action="append",
        metavar="NAME",
        help="entry name or glob pattern (quote it), e.g. layer1.0.conv1.weight or 'layer4.*'; "
        "repeat for several; default: every conv weight in the file",
    )
    cmp.add_argument(
        "--compression",
        action=_Ratios,
        nargs="+",
        default=[2.0, 4.0, 8.0, 16.0],
        metavar="C",
        help="compression ratios > 1 (default: 2 4 8 16)",
    )
    cmp.add_argument(
        "--plot",
        metavar="OUT.png",
        help="write the error-vs-compression plot here (.png, .pdf, .svg, ...); for several "
        "layers, one file per layer: OUT.<layer>.png",
    )
    cmp.add_argument("--json", metavar="OUT.json", help="write every row and its provenance here")
    cmp.add_argument("--no-progress", action="store_true", help="print no progress on stderr")


def _add_search_options(cmp: argparse.ArgumentParser) -> None:
    from ..compare import FAMILIES

    cmp.add_argument(
        "--families",
        nargs="+",
        choices=FAMILIES,
        default=list(FAMILIES),
        metavar="F",
        help=f"families to fit, of {' '.join(FAMILIES)} (default: all)",
    )
    cmp.add_argument(
        "--forms",
        nargs="+",
        choices=("nested", "chain"),
        default=["nested", "chain"],
        metavar="FORM",
        help="SeKron forms searched, of nested chain (default: both)",
    )
    cmp.add_argument(
        "--max-factors",
        type=_int_at_least("--max-factors", 2),
        default=3,
        metavar="S",
        help="largest number of Kronecker factors searched (default: 3)",
    )
    cmp.add_argument(
        "--max-configs",
        type=_int_at_least("--max-configs", 1),
        default=None,
        metavar="N",
        help="search at most N SeKron configurations (shapes x form) per budget",
    )
    cmp.add_argument(
        "--max-seconds",
        type=_seconds,
        default=None,
        metavar="T",
        help="time limit per tensor (sekron.compare's max_seconds): half for the family fits "
        "when the SeKron search follows, the rest for the searches; the output says whether "
        "the greedy search's best is certified",
    )
    cmp.add_argument(
        "--refine",
        type=_int_at_least("--refine", 0),
        default=30,
        metavar="N",
        help="effort of every fit (default: 30): ALS sweeps of the SeKron joint fits and after "
        "TT-SVD, iterations of CP and Tucker; 0: the greedy SeKron search only",
    )
    cmp.add_argument(
        "--threads",
        type=_int_at_least("--threads", 1),
        default=None,
        metavar="N",
        help="worker threads of the SeKron search (default: the CPUs available); BLAS runs "
        "single-threaded, since the many small SVDs run fastest side by side",
    )


class _Stop:
    """Set by the first Ctrl-C (SIGINT), which also raises KeyboardInterrupt where it lands."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def _catch_sigint() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.requested = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _Progress:
    """Progress on stderr, and the place where a pending Ctrl-C stops compare at its next step.

    On a terminal, one line redrawn in place; otherwise (a file, a pipe) a plain line at each
    stage and every 10 s, never a carriage return.
    """

    def __init__(self, enabled: bool, stop: _Stop) -> None:
        self.enabled, self.stop = enabled, stop
        self.tty = enabled and sys.stderr.isatty()
        self.last, self.label, self.drawn = 0.0, "", False

    def stage(self, label: str, what: str) -> None:
        self.label = label
        if self.enabled:
            self.end_line()
            print(f"sekron: {label}: {what}", file=sys.stderr, flush=True)

    def __call__(self, done: int, total: int, *rest: Any) -> None:
        if self.stop.requested:  # the search swallowed a Ctrl-C: compare stops here
            raise KeyboardInterrupt
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 10.0) and done != total:
            return
        self.last = now
        text = f"sekron: {self.label}: {done}/{total}"
        if self.tty:
            self.drawn = True
            sys.stderr.write(f"\r{text}\x1b[K")
            sys.stderr.flush()
        else:
            print(text, file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.drawn:
            self.drawn = False
            sys.stderr.write("\n")
            sys.stderr.flush()


def _inputs(args: argparse.Namespace) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
    from ..data import EXAMPLE_KEY, example_weight

    if args.path is None:
        if args.key:
            raise CLIError("--key needs a PATH (the embedded example has one tensor)")
        source = {"path": None, "embedded_example": EXAMPLE_KEY}
        return [(EXAMPLE_KEY, example_weight())], source
    tensors = load_tensors(args.path, args.key)
    digest = hashlib.sha256()
    with open(args.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    source = {"path": os.path.abspath(args.path), "sha256": digest.hexdigest(), "keys": args.key}
    return tensors, source


def _outputs(args: argparse.Namespace, names: list[str]) -> tuple[Path | None, dict[str, Path]]:
    """The --json path and the plot path of each layer, all checked before any work."""
    taken = {Path(args.path): "the input file"} if args.path else {}
    js = None if args.json is None else check_output(args.json, "--json", ("json",), taken)
    if args.plot is None:
        return js, {}
    plot = check_output(args.plot, "--plot", plot_formats(), taken)
    if len(names) == 1:
        return js, {names[0]: plot}
    paths = layer_plot_paths(plot, names)
    del taken[plot]
    for p in paths:
        check_output(str(p), "--plot", plot_formats(), taken)
    return js, dict(zip(names, paths, strict=True))


def _run_layer(
    layer: LayerResult,
    W: np.ndarray,
    args: argparse.Namespace,
    stop: _Stop,
    progress: _Progress,
    label: str,
    executor: Any,
) -> None:
    """One compare call for every family (the search needs the family fits as warm starts).
    A Ctrl-C stops it with what finished (kept, then stop)."""
    from .. import compare as _  # noqa: F401  (sekron.compare the module is in sys.modules)

    compare = sys.modules["sekron.compare"].compare
    progress.stage(label, f"fitting {', '.join(args.families)}")
    from ..search._parallel import blas_threads

    t0 = time.perf_counter()
    try:
        with blas_threads(1):
            table = compare(
                W,
                compression=tuple(args.compression),
                families=tuple(args.families),
                forms=tuple(args.forms),
                max_factors=args.max_factors,
                max_configs=args.max_configs,
                max_seconds=args.max_seconds,
                threads=args.threads,
                progress=progress,
                refine=args.refine,
                name=layer.name,
                executor=executor,
                **mac_options(args),
            )
    except (ValueError, TypeError) as e:
        raise CLIError(f"{layer.name}: {str(e).splitlines()[0]}") from None
    if any(r.reason != "interrupted" for r in table.rows):  # something finished
        layer.parts.append((tuple(table.families), table, time.perf_counter() - t0))
    if table.interrupted:
        stop.requested = True


def _notes(table: Any, where: str = "") -> None:
    for s in table.searches:
        if s is not None and not s.certified:
            print(
                f"({where}at {s.budget:,} params the search stopped early: "
                f"{s.n_open:,} configurations left unevaluated may reach rel. error "
                f"{s.bound:.4f}, the best found is {s.best.rel_error:.4f})",
                file=sys.stderr,
            )


def _compare(args: argparse.Namespace) -> int:
    tensors, source = _inputs(args)
    check_mac_inputs(args, tensors)
    js, plots = _outputs(args, [name for name, _ in tensors])
    layers: list[LayerResult] = []
    with cluster_executor(args) as executor, _catch_sigint() as stop:
        progress = _Progress(not args.no_progress, stop)
        try:  # the first Ctrl-C ends the work wherever it lands; what finished is reported
            for name, W in tensors:
                if len(tensors) == 1:
                    what = name if args.path else f"embedded example {name}"
                    print(f"{what}: shape {tuple(W.shape)}, {W.dtype}", flush=True)
                layers.append(LayerResult(name, tuple(W.shape), str(W.dtype)))
                label = f"[{len(layers)}/{len(tensors)}] {name}" if len(tensors) > 1 else name
                _run_layer(layers[-1], W, args, stop, progress, label, executor)
                if stop.requested:
                    break
        except KeyboardInterrupt:
            stop.requested = True
        progress.end_line()
        finished = [layer for layer in layers if layer.parts]
        _report(args, finished, len(tensors), source, js, plots, partial=stop.requested)
    if stop.requested:
        print(
            "sekron: interrupted; the results above are partial"
            if finished
            else "sekron: interrupted before any fit finished; nothing written",
            file=sys.stderr,
        )
        return 130
    return 0


def _report(
    args: argparse.Namespace,
    layers: list[LayerResult],
    n_tensors: int,
    source: dict[str, Any],
    js: Path | None,
    plots: dict[str, Path],
    *,
    partial: bool,
) -> None:
    if not layers:
        return
    if n_tensors == 1:
        table = layers[0].table()
        print(table)
        _notes(table)
    else:
        print(summary_table(layers, [float(c) for c in sorted(set(args.compression))]))
        for layer in layers:
            _notes(layer.table(), f"{layer.name}: ")
    if js is not None:
        options = {
            k: getattr(args, k)
            for k in ("compression", "families", "forms", "max_factors", "max_configs")
        }
        options.update(max_seconds=args.max_seconds, threads=args.threads, **mac_options(args))
        source = {**source, "argv": ["sekron", *args.argv]}
        doc = document(layers, source=source, options=options, partial=partial, version=_version())
        text = json.dumps(doc, indent=1) + "\n"
        write_atomically(js, lambda p: p.write_text(text))
        print(f"wrote {js}" + (" (partial)" if partial else ""))
    for layer in (x for x in layers if x.name in plots):
        write_atomically(plots[layer.name], layer.plot)
        print(f"wrote {plots[layer.name]}" + (" (partial)" if partial else ""))


_USAGE = (
    "usage: sekron [-h] [--version] {compare} ...\n"
    "sekron: error: no command given; try 'sekron compare' (runs on an embedded example) "
    "or 'sekron --help'"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sekron`` console script; returns the exit code.

    Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted by Ctrl-C (what
    finished is printed, and written when ``--json``/``--plot`` ask, marked partial).

    Examples
    --------
    >>> from sekron.cli import main
    >>> main(["compare", "missing.npy"])  # doctest: +SKIP
    sekron: error: missing.npy: no such file
    2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        args = _parser().parse_args(argv)
        args.argv = argv
        trailing = getattr(args, "trailing_path", None)
        if trailing is not None:
            if args.path is not None:
                raise CLIError(f"argument --compression: not a number: {trailing!r}")
            args.path = trailing
        if args.command == "compare":
            return _compare(args)
        raise CLIError(f"unknown command {args.command!r}")  # pragma: no cover
    except CLIError as e:
        print(f"sekron: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sekron: interrupted", file=sys.stderr)
        return 130
