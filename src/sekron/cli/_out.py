"""Output files of the command line: checked before any work, written atomically.

An output path must name a file (not a directory, not a device) with a supported extension, in
an existing directory where this process can create files, and must be neither an input nor
another output. Files are written to a temporary name in the same directory and renamed, so an
interrupted write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ._io import CLIError

__all__ = ["check_output", "layer_plot_paths", "plot_formats", "write_atomically"]

# formats matplotlib's Agg canvas writes without extra tools (pgf needs LaTeX)
_PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def plot_formats(flag: str = "--plot") -> tuple[str, ...]:
    """The file extensions a plot can be written as (those matplotlib supports here)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise CLIError(f"{flag} needs matplotlib: pip install 'sekron[cli]'") from None
    supported = FigureCanvasAgg.get_supported_filetypes()
    return tuple(f for f in _PLOT_FORMATS if f in supported)


def _same_file(a: Path, b: Path) -> bool:
    try:
        real = os.path.realpath
        return real(a) == real(b) or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def check_output(out: str, flag: str, suffixes: Sequence[str], taken: dict[Path, str]) -> Path:
    """``Path(out)`` once it is safe to write; else a one-line CLIError naming ``flag``.

    ``suffixes`` are the allowed extensions without the dot; ``taken`` maps paths that must not
    be written (inputs, other outputs) to what they are. ``out`` is added to ``taken``.
    """
    p = Path(out)
    if not out:
        raise CLIError(f"{flag}: empty file name")
    for other, what in taken.items():
        if _same_file(p, other):
            raise CLIError(f"{flag} {out}: is {what}; refusing to overwrite it")
    if p.is_dir():
        raise CLIError(f"{flag} {out}: is a directory; give a file name inside it")
    ext = p.suffix.lower().lstrip(".")
    allowed = ", ".join("." + s for s in suffixes)
    if not ext:
        raise CLIError(f"{flag} {out}: has no file extension; give one of {allowed}")
    if ext not in suffixes:
        raise CLIError(f"{flag} {out}: unsupported file type '.{ext}'; use {allowed}")
    if p.is_symlink() and not p.exists():
        raise CLIError(f"{flag} {out}: is a broken or looping symbolic link")
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise CLIError(f"{flag} {out}: exists and is not a regular file")
    parent = Path(os.path.realpath(p)).parent
    if not parent.is_dir():
        raise CLIError(f"{flag} {out}: its directory does not exist ({parent})")
    try:  # create-and-remove is the one test that holds for root, read-only mounts and /proc
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".sekron-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(f"{flag} {out}: cannot create files in {parent} ({e.strerror})") from None
    taken[p] = f"the {flag} output"
    return p


def layer_plot_paths(out: Path, names: Sequence[str]) -> list[Path]:
    """One plot file per layer: ``plot.png`` -> ``plot.<layer name>.png``, names made safe."""
    paths: list[Path] = []
    for i, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"layer{i}"
        p = out.with_name(f"{out.stem}.{safe}{out.suffix}")
        if p in paths:
            p = out.with_name(f"{out.stem}.{safe}-{i}{out.suffix}")
        paths.append(p)
    return paths


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    # created like any new file (mode 0666 & ~umask), unlike mkstemp's 0600
    tmp = (
        Path(os.path.realpath(path)).parent
        / f".{path.stem}.{secrets.token_hex(4)}.sekron-tmp{path.suffix}"
    )
    with open(tmp, "xb"):
        pass
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it to ``path``."""
    with _temporary(path) as tmp:
        write(tmp)
