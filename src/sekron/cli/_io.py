"""Reading tensors for the command line, safely: no pickle ever runs, and every failure is one
true line.

Every reader looks before it reads: the path must be a regular, non-empty file (a FIFO would
block ``open`` forever, ``/dev/zero`` never ends); a ``.npy`` header's claimed size must fit in
the bytes that follow it (a lying header would otherwise allocate terabytes); an ``.npz`` must be
a zip archive. numpy files are read with ``allow_pickle=False``, PyTorch files with
``torch.load(weights_only=True)`` and ``.safetensors`` files with the ``safetensors`` package.
"""

from __future__ import annotations

import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from math import prod
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["CLIError", "Entry", "load_tensor", "load_tensors", "read_entries", "select_entries"]

#: The readable formats, by file extension.
SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".bin", ".ckpt", ".safetensors")
#: PyTorch files (torch.save); ``.bin`` as in ``pytorch_model.bin``, ``.ckpt`` as Lightning's.
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


@dataclass(frozen=True)
class Entry:
    """One named value of a tensor file, described before its data is read.

    ``shape`` is None for a value that is not an array (an int in a state dict); ``kind`` is
    ``"f"`` (floating point), ``"i"`` (integer or bool), ``"c"`` (complex) or ``"-"`` (other).
    """

    name: str
    shape: tuple[int, ...] | None
    dtype: str
    kind: str
    read: Callable[[], Any]

    @property
    def is_conv_weight(self) -> bool:
        """A floating-point 4-D (conv2d) or 3-D (conv1d) tensor."""
        return self.kind == "f" and self.shape is not None and len(self.shape) in (3, 4)


def _check_regular_file(p: Path) -> int:
    """The size of ``p`` in bytes; CLIError unless it is a regular, non-empty file."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CLIError(f"{p}: no such file") from None
    except OSError as e:
        raise CLIError(f"{p}: cannot read ({e.strerror or e})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise CLIError(f"{p}: is a directory, not a tensor file")
    if not stat.S_ISREG(mode):
        kinds = [
            (stat.S_ISFIFO, "a FIFO (named pipe)"),
            (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"),
        ]
        what = next((w for test, w in kinds if test(mode)), "a special file")
        raise CLIError(
            f"{p}: is {what}, not a regular file; give a .npy, .npz, .pt or .safetensors"
        )
    if st.st_size == 0:
        raise CLIError(f"{p}: is empty (0 bytes)")
    return int(st.st_size)


# --- numpy -----------------------------------------------------------------------------------


def _npy_header(f: IO[bytes], size: int, label: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header; checks that the data it claims is all there."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
    except (ValueError, EOFError):
        raise CLIError(f"{label}: not a .npy file (no .npy magic string at its start)") from None
    if version not in ((1, 0), (2, 0)):
        raise CLIError(f"{label}: unsupported .npy format version {version[0]}.{version[1]}")
    try:
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(f)
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, TokenError..
        if "EOF" in str(e):
            raise CLIError(f"{label}: truncated: the file ends inside its .npy header") from None
        raise CLIError(f"{label}: corrupt .npy header ({_first_line(e)})") from None
    if dtype.hasobject:
        raise CLIError(
            f"{label}: holds a pickled object array (dtype {dtype}); refusing to unpickle it"
        )
    need = prod(shape) * dtype.itemsize
    have = size - f.tell()
    if need > have:
        raise CLIError(
            f"{label}: truncated or corrupt: its header claims shape {shape} of {dtype} "
            f"({need:,} bytes of data) but only {have:,} bytes follow the header"
        )
    return tuple(int(s) for s in shape), dtype


def _npy_kind(dtype: np.dtype) -> str:
    return {"f": "f", "i": "i", "u": "i", "b": "i", "c": "c"}.get(dtype.kind, "-")


def _read_npy(p: Path, size: int) -> list[Entry]:
    with open(p, "rb") as f:
        shape, dtype = _npy_header(f, size, str(p))

    def read() -> np.ndarray:
        try:
            with open(p, "rb") as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, MemoryError) as e:  # changed since its header was read
            raise CLIError(f"{p}: cannot read its data ({_first_line(e)})") from None

    return [Entry(p.stem, shape, str(dtype), _npy_kind(dtype), read)]


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError)


def _read_npz(p: Path) -> list[Entry]:
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            if f.read(2) == b"PK":
                raise CLIError(f"{p}: truncated or corrupt .npz (a zip archive without its index)")
        raise CLIError(f"{p}: not an .npz file (an .npz is a zip archive of .npy files)")
    entries = []
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with zf.open(info) as f:
                    shape, dtype = _npy_header(f, _member_size(info), f"{p}: entry {name!r}")
                entries.append(
                    Entry(name, shape, str(dtype), _npy_kind(dtype), _npz_reader(p, info.filename))
                )
    except _ZIP_ERRORS as e:
        raise CLIError(f"{p}: corrupt .npz archive ({_first_line(e)})") from None
    return entries


def _member_size(info: zipfile.ZipInfo) -> int:
    """An upper bound on a zip member's real size: its declared size, capped by what its
    stored bytes can expand to (deflate expands at most 1032-fold), so that a lying directory
    cannot make the reader allocate more than ~1000 times the file's size."""
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.file_size, info.compress_size)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return min(info.file_size, 1032 * info.compress_size + 64)
    return info.file_size


def _npz_reader(p: Path, member: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        try:
            with zipfile.ZipFile(p) as zf, zf.open(member) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (*_ZIP_ERRORS, ValueError, MemoryError) as e:
            raise CLIError(f"{p}: corrupt entry {member[:-4]!r} ({_first_line(e)})") from None

    return read


# --- PyTorch ---------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes."""
    text = _ANSI.sub("", str(e)).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def _sentence(text: str) -> str:
    """The first sentence of a message (torch's run on for several)."""
    return re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(".")


def _torch_load_error(p: Path, e: Exception) -> CLIError:
    """One true line for a failed ``torch.load(weights_only=True)``."""
    text = _ANSI.sub("", str(e))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        cls = found.group(1)
        if cls.startswith("torch.nn.modules."):
            return CLIError(
                f"{p}: holds a pickled nn.Module ({cls}), not a state dict; save the weights "
                "with torch.save(model.state_dict(), path)"
            )
        return CLIError(
            f"{p}: holds a pickled {cls} object, which weights_only=True refuses to load "
            "(pickles are refused); save plain tensors, e.g. torch.save(model.state_dict(), path)"
        )
    with open(p, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return CLIError(f"{p}: truncated or corrupt PyTorch file ({_sentence(_first_line(e))})")
    if head.startswith(b"\x80"):
        why = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = _sentence(why.group(1).strip()) if why else _first_line(e)
        return CLIError(
            f"{p}: a pickle that weights_only=True cannot load as tensors (pickles are "
            f"refused): {detail}"
        )
    return CLIError(f"{p}: not a PyTorch file (neither a zip archive nor a pickle)")


def _flatten(obj: Mapping[Any, Any], prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            _flatten(v, name, out)
        else:
            out[name] = v
    return out


def _read_torch(p: Path) -> list[Entry]:
    try:
        import torch
    except ImportError:
        raise CLIError(
            f"{p}: reading a PyTorch file needs PyTorch (pip install torch); or save the weight "
            "as .npy or .safetensors"
        ) from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        raise _torch_load_error(p, e) from None
    if isinstance(obj, torch.Tensor):
        values = {p.stem: obj}
    elif isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        values = _flatten(obj, "", {})
    else:
        raise CLIError(f"{p}: expected a tensor or a state dict; got {type(obj).__name__}")
    return [_torch_entry(name, v) for name, v in values.items()]


def _torch_entry(name: str, v: Any) -> Entry:
    import torch

    if not isinstance(v, torch.Tensor):
        return Entry(name, None, type(v).__name__, "-", lambda: v)
    kind = "f" if v.is_floating_point() else "c" if v.is_complex() else "i"
    return Entry(name, tuple(v.shape), str(v.dtype).removeprefix("torch."), kind, lambda: v)


# --- safetensors -----------------------------------------------------------------------------

_ST_NUMPY = {"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"}


def _read_safetensors(p: Path) -> list[Entry]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CLIError(
            f"{p}: reading .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    entries = []
    try:
        with safe_open(str(p), framework="numpy") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                dtype = str(sl.get_dtype())
                kind = "f" if dtype.startswith(("F", "BF")) else "i" if dtype in _ST_NUMPY else "-"
                read = _safetensors_reader(p, name, dtype)
                entries.append(Entry(name, tuple(sl.get_shape()), dtype, kind, read))
    except Exception as e:  # safetensors raises SafetensorError (an Exception) for bad files
        raise CLIError(f"{p}: not a valid .safetensors file ({_first_line(e)})") from None
    return entries


def _safetensors_reader(p: Path, name: str, dtype: str) -> Callable[[], Any]:
    def read() -> Any:
        from safetensors import safe_open

        framework = "numpy" if dtype in _ST_NUMPY else "pt"
        if framework == "pt":
            try:
                import torch  # noqa: F401
            except ImportError:
                raise CLIError(
                    f"{p}: entry {name!r} is {dtype}, which numpy cannot hold; reading it "
                    "needs PyTorch (pip install torch)"
                ) from None
        try:
            with safe_open(str(p), framework=framework) as f:
                return f.get_tensor(name)
        except Exception as e:
            raise CLIError(f"{p}: corrupt entry {name!r} ({_first_line(e)})") from None

    return read


# --- choosing and converting -----------------------------------------------------------------


def read_entries(path: str | Path) -> list[Entry]:
    """The named values of a tensor file, described from its headers; no data read yet.

    Raises :class:`CLIError` (one line) for a missing, special, empty, corrupt, pickled or
    unsupported file.
    """
    p = Path(path)
    size = _check_regular_file(p)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _read_npy(p, size)
    if suffix == ".npz":
        entries = _read_npz(p)
    elif suffix in TORCH_SUFFIXES:
        entries = _read_torch(p)
    elif suffix == ".safetensors":
        entries = _read_safetensors(p)
    else:
        raise CLIError(
            f"{p}: unsupported file type {suffix or '(none)'!r}; use "
            + ", ".join(SUFFIXES[:-1])
            + f" or {SUFFIXES[-1]}"
        )
    if not entries:
        raise CLIError(f"{p}: the file holds no arrays")
    return entries


def _names(entries: Sequence[Entry], n: int = 12) -> str:
    names = [e.name for e in entries]
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def select_entries(entries: Sequence[Entry], keys: Sequence[str] | None, path: Path) -> list[Entry]:
    """The entries to compare.

    With ``keys``: for each, the entry of that exact name, or else every tensor with >= 2 modes
    whose name matches it as a glob pattern (:func:`fnmatch.fnmatchcase`). Without: the only
    entry of a one-entry file, else every conv weight (3-D or 4-D floating-point tensor).
    """
    if not keys:
        if len(entries) == 1:
            return list(entries)
        convs = [e for e in entries if e.is_conv_weight]
        if not convs:
            raise CLIError(
                f"{path} holds {len(entries)} entries but no conv weight (a 3-D or 4-D "
                f"floating-point tensor); choose some with --key NAME, e.g. "
                + _names([e for e in entries if e.shape and len(e.shape) >= 2] or entries)
            )
        return convs
    chosen: dict[str, Entry] = {}
    for pat in keys:
        exact = [e for e in entries if e.name == pat]
        hits = exact or [e for e in entries if fnmatchcase(e.name, pat)]
        if not hits:
            raise CLIError(
                f"{path}: no entry named {pat!r} or matching it; entries are: {_names(entries)}"
            )
        if not exact:
            hits = [e for e in hits if e.kind in "fi" and e.shape and len(e.shape) >= 2]
            if not hits:
                raise CLIError(
                    f"{path}: the entries matching {pat!r} hold no tensor with >= 2 modes"
                )
        chosen.update((e.name, e) for e in hits)
    return list(chosen.values())


def as_tensor(value: Any, name: str, p: Path | str) -> np.ndarray:
    """A finite float32/float64 numpy array with >= 2 modes, or a one-line CLIError."""
    if hasattr(value, "detach"):  # a torch tensor
        try:
            value = value.detach().cpu()
            if value.is_floating_point() and value.dtype.itemsize < 4:  # (b)float16, float8
                value = value.float()
            value = value.numpy()
        except (RuntimeError, TypeError) as e:  # sparse, quantized, ...
            layout = f"{value.dtype}, {value.layout}".replace("torch.", "")
            raise CLIError(
                f"{p}: entry {name!r} ({layout}) has no dense numpy form ({_first_line(e)})"
            ) from None
    if not isinstance(value, np.ndarray):
        raise CLIError(f"{p}: entry {name!r} is a {type(value).__name__}, not a tensor")
    arr = value
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise CLIError(f"{p}: entry {name!r} has dtype {arr.dtype}; need a real tensor")
    arr = arr.astype(np.float64 if arr.dtype.itemsize >= 8 else np.float32, copy=False)
    if arr.ndim < 2:
        raise CLIError(
            f"{p}: entry {name!r} has shape {arr.shape}; compare needs a tensor with >= 2 modes"
        )
    if arr.size == 0:
        raise CLIError(f"{p}: entry {name!r} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise CLIError(f"{p}: entry {name!r} contains NaN or Inf")
    return arr


def load_tensors(path: str | Path, keys: Sequence[str] | None = None) -> list[tuple[str, Any]]:
    """Read the tensors to compare from ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.safetensors``.

    Parameters
    ----------
    path : str or Path
        A regular file. Pickles are refused: numpy files are read with ``allow_pickle=False``,
        torch files with ``weights_only=True``, safetensors files hold no code.
    keys : sequence of str, optional
        Entry names or glob patterns (see :func:`select_entries`); by default every conv weight.

    Returns
    -------
    list of (name, numpy.ndarray)
        float32 or float64 arrays with >= 2 modes, finite, in file order.

    Raises
    ------
    CLIError
        With a one-line message naming the file and what is wrong.
    """
    p = Path(path)
    entries = read_entries(p)
    if p.suffix.lower() == ".npy" and keys:
        raise CLIError(f"{p}: a .npy file holds one array; --key {keys[0]!r} does not apply")
    return [(e.name, as_tensor(e.read(), e.name, p)) for e in select_entries(entries, keys, p)]


def load_tensor(path: str | Path, key: str | None = None) -> tuple[str, np.ndarray]:
    """Read one tensor; ``(name, array)``. CLIError when ``key`` is None and the file holds
    several conv weights, or on bad input (see :func:`load_tensors`)."""
    found = load_tensors(path, None if key is None else [key])
    if len(found) != 1:
        raise CLIError(
            f"{path} holds {len(found)} conv weights; choose one with --key NAME, e.g. "
            + ", ".join(name for name, _ in found[:12])
        )
    return found[0]
