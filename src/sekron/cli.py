"""The ``sekron`` command line: ``sekron compare [PATH] [--key NAME] ...``.

``sekron compare`` prints, for each compression ratio, the best relative error of the searched
SeKron structure and of TT, TR, CP, Tucker, Tucker-2 and GKPD at the same parameter budget.
With no PATH it runs on the embedded example, a (128, 64, 3, 3) conv weight of a small CNN
trained on scikit-learn's digits (:func:`sekron.data.example_weight`).

Bad input (missing file, unsupported format, missing or non-tensor key, compression <= 1, a 1-D
tensor, a pickle) gives a one-line ``sekron: error: ...`` on stderr and exit code 2;
Ctrl-C exits with code 130.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "load_tensor"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _pick(entries: dict[str, Any], key: str | None, path: Path) -> tuple[str, Any]:
    if key is not None:
        if key not in entries:
            names = ", ".join(sorted(entries)[:20])
            raise CLIError(f"{path}: no entry named {key!r}; entries are: {names}")
        return key, entries[key]
    if len(entries) == 1:
        return next(iter(entries.items()))
    tensors = sorted(k for k, v in entries.items() if _ndim(v) >= 2)
    if not entries:
        raise CLIError(f"{path}: the file holds no arrays")
    raise CLIError(
        f"{path} holds {len(entries)} entries; choose one with --key NAME, e.g. "
        + ", ".join(tensors[:12] or sorted(entries)[:12])
        + (" ..." if len(tensors) > 12 else "")
    )


def _ndim(v: Any) -> int:
    return int(getattr(v, "ndim", -1))


def load_tensor(path: str | Path, key: str | None = None) -> tuple[str, np.ndarray]:
    """Read one tensor from ``.npy``, ``.npz`` or a PyTorch ``.pt``/``.pth`` state dict.

    Pickles are refused: numpy files are read with ``allow_pickle=False`` and torch files with
    ``weights_only=True``. Returns ``(name, array)``; raises :class:`CLIError` on bad input.
    """
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{p}: no such file")
    if p.is_dir():
        raise CLIError(f"{p}: is a directory, not a tensor file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise CLIError(f"{p}: refusing to load a pickled object array ({e})") from None
        except OSError as e:
            raise CLIError(f"{p}: not a readable .npy file ({e})") from None
        if key is not None:
            raise CLIError(f"{p}: a .npy file holds one array; --key {key!r} does not apply")
        return p.stem, _as_tensor(arr, p.stem, p)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as data:
                name, _ = _pick({k: None for k in data.files}, key, p)
                try:
                    arr = data[name]
                except ValueError as e:
                    raise CLIError(f"{p}: entry {name!r} is a pickled object ({e})") from None
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise CLIError(f"{p}: not a readable .npz file ({e})") from None
        return name, _as_tensor(arr, name, p)
    if suffix in (".pt", ".pth"):
        return _load_torch(p, key)
    raise CLIError(
        f"{p}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .pt or .pth"
    )


def _load_torch(p: Path, key: str | None) -> tuple[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CLIError(
            f"{p}: reading .pt/.pth needs PyTorch (pip install torch); or save the weight as .npy"
        ) from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(
            f"{p}: cannot load with weights_only=True (pickles are refused): {first[:160]}"
        ) from None
    if isinstance(obj, torch.Tensor):
        if key is not None:
            raise CLIError(f"{p}: the file holds one tensor; --key {key!r} does not apply")
        return p.stem, _as_tensor(obj, p.stem, p)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CLIError(f"{p}: expected a tensor or a state dict; got {type(obj).__name__}")
    name, value = _pick({str(k): v for k, v in obj.items()}, key, p)
    if not isinstance(value, torch.Tensor):
        raise CLIError(f"{p}: entry {name!r} is a {type(value).__name__}, not a tensor")
    return name, _as_tensor(value, name, p)


def _as_tensor(value: Any, name: str, p: Path | str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise CLIError(f"{p}: entry {name!r} is not a numeric tensor")
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise CLIError(f"{p}: entry {name!r} has dtype {arr.dtype}; need a real tensor")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    if arr.ndim < 2:
        raise CLIError(
            f"{p}: entry {name!r} has shape {arr.shape}; compare needs a tensor with >= 2 modes"
        )
    if arr.size == 0:
        raise CLIError(f"{p}: entry {name!r} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise CLIError(f"{p}: entry {name!r} contains NaN or Inf")
    return arr


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
_max_factors = _int_at_least("--max-factors", 2)


def _blas_threads(n: int) -> Any:
    """A context limiting BLAS threads in this process (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit code 2 (argparse's own convention)
        raise CLIError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sekron", description="SeKron tensor decomposition tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cmp = sub.add_parser(
        "compare",
        help="best error of SeKron, TT, TR, CP, Tucker, Tucker-2 and GKPD at equal budgets",
        description=(
            "Print, for each compression ratio, the best relative error of each factorization "
            "family at the same parameter budget (numel / compression). With no PATH, runs on "
            "the embedded example conv weight (128, 64, 3, 3) of a digits CNN."
        ),
    )
    cmp.add_argument("path", nargs="?", help=".npy, .npz or PyTorch .pt/.pth state dict")
    cmp.add_argument("--key", help="entry name in a .npz or state dict, e.g. layer1.0.conv1.weight")
    cmp.add_argument(
        "--compression",
        type=_compression,
        nargs="+",
        default=[2.0, 4.0, 8.0, 16.0],
        metavar="C",
        help="compression ratios > 1 (default: 2 4 8 16)",
    )
    cmp.add_argument(
        "--max-factors",
        type=_max_factors,
        default=3,
        metavar="S",
        help="largest number of Kronecker factors searched (default: 3)",
    )
    cmp.add_argument(
        "--max-seconds",
        type=_seconds,
        default=None,
        metavar="T",
        help="stop the SeKron search's 3+-factor configurations after T seconds, most "
        "promising first; the output says whether the best found is certified optimal",
    )
    cmp.add_argument("--plot", metavar="OUT.png", help="write error-vs-compression plot here")
    cmp.add_argument("--json", metavar="OUT.json", help="write the table rows as JSON here")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp.add_argument(
        "--threads",
        type=_int_at_least("--threads", 1),
        default=None,
        metavar="N",
        help="worker threads of the SeKron search (default: the CPUs available); BLAS runs "
        "single-threaded, since the many small SVDs run fastest side by side",
    )
    return parser


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .data import EXAMPLE_KEY, example_weight

    if args.path is None:
        if args.key is not None:
            raise CLIError("--key needs a PATH (the embedded example has one tensor)")
        name, W = f"embedded example {EXAMPLE_KEY}", example_weight()
    else:
        name, W = load_tensor(args.path, args.key)
    for out in (args.plot, args.json):
        if out is not None and not Path(out).resolve().parent.is_dir():
            raise CLIError(f"{out}: the directory does not exist")
    print(f"{name}: shape {tuple(W.shape)}, {W.dtype}", flush=True)
    try:
        with _blas_threads(1):
            table = compare(
                W,
                compression=tuple(args.compression),
                max_factors=args.max_factors,
                max_seconds=args.max_seconds,
                threads=args.threads,
                progress=False if args.no_progress else True,
            )
    except (ValueError, TypeError) as e:
        raise CLIError(str(e).splitlines()[0]) from None
    print(table)
    if any(s is not None and s.interrupted for s in table.searches):
        print("(search interrupted: SeKron rows hold the best found so far)", file=sys.stderr)
    for s in table.searches:
        if s is not None and not s.certified:
            print(
                f"(at {s.budget:,} params the search stopped early: {s.n_open:,} configurations "
                f"left unevaluated may reach rel. error {s.bound:.4f}, the best found is "
                f"{s.best.rel_error:.4f})",
                file=sys.stderr,
            )
    if args.json:
        table.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        table.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sekron`` console script; returns the exit code.

    Examples
    --------
    >>> from sekron.cli import main
    >>> main(["compare", "missing.npy"])  # doctest: +SKIP
    sekron: error: missing.npy: no such file
    2
    """
    try:
        args = _parser().parse_args(argv)
        if args.command == "compare":
            return _compare(args)
        raise CLIError(f"unknown command {args.command!r}")  # pragma: no cover
    except CLIError as e:
        print(f"sekron: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sekron: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
