"""compress(): replace the ``nn.Conv2d`` layers of a model by SeKronConv2d layers.

Each layer is factorized on its own (by :func:`sekron.search`, a structure's fit or explicit
shapes) and the result is reported row by row: parameters, MACs and the relative weight error.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from math import prod
from typing import Any, overload

import torch
from torch import nn

from .._validation import _type_name, check_form, is_int
from ._counting import _example_input, count_params, layer_macs, sekron_conv_macs
from ._functional import METHODS
from ._layers import SeKronConv2d, _search_function, budget_from_compression, structure_name

__all__ = ["CompressionReport", "LayerReport", "compress"]

ShapesArg = (
    Mapping[str, Sequence[Sequence[int]]]
    | Callable[[tuple[int, ...]], Sequence[Sequence[int]] | None]
    | None
)


@dataclass(frozen=True)
class LayerReport:
    """One row of a :class:`CompressionReport`: a conv layer, replaced or skipped.

    ``skipped`` is None for a replaced layer and the reason otherwise (then the "after"
    numbers equal the "before" ones and ``structure``, ``form``, ``shapes``, ``ranks`` and
    ``rel_error`` are None). MACs are None when they were not counted; they are per output
    position when the report's ``macs_per_position`` is true.
    """

    name: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    structure: str | None = None
    form: str | None = None
    shapes: tuple[tuple[int, ...], ...] | None = None
    ranks: tuple[int, ...] | None = None
    rel_error: float | None = None
    skipped: str | None = None

    @property
    def replaced(self) -> bool:
        return self.skipped is None

    @property
    def compression(self) -> float:
        """``params_before / params_after`` (bias included on both sides)."""
        return self.params_before / self.params_after


class CompressionReport(Sequence[LayerReport]):
    """The per-layer rows of :func:`compress`, with whole-model totals.

    A sequence of :class:`LayerReport` in model order. ``str(report)`` is a table;
    :meth:`to_dicts` and :meth:`to_json` export it.

    Attributes
    ----------
    params_before, params_after : int
        Parameters of the whole model (every layer, not only the convolutions).
    macs_before, macs_after : int or None
        MACs of the whole model (conv, linear and SeKron layers) for the recorded input;
        None without ``input_shape``/``example_input``.
    input_shape : tuple of int or None
    macs_per_position : bool
        True when the rows' MACs are per output position (no input was given).
    """

    def __init__(
        self,
        rows: Iterable[LayerReport],
        *,
        params_before: int,
        params_after: int,
        macs_before: int | None = None,
        macs_after: int | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        self._rows = tuple(rows)
        self.params_before = params_before
        self.params_after = params_after
        self.macs_before = macs_before
        self.macs_after = macs_after
        self.input_shape = input_shape
        self.macs_per_position = input_shape is None

    @overload
    def __getitem__(self, index: int) -> LayerReport: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[LayerReport]: ...

    def __getitem__(self, index: int | slice) -> LayerReport | Sequence[LayerReport]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self._rows)

    @property
    def replaced(self) -> list[str]:
        """Names of the layers that were replaced."""
        return [r.name for r in self._rows if r.replaced]

    @property
    def skipped(self) -> dict[str, str]:
        """``{name: reason}`` of the layers left dense."""
        return {r.name: r.skipped for r in self._rows if r.skipped is not None}

    def to_dicts(self) -> list[dict[str, Any]]:
        """One plain dict per row (tuples become lists only in :meth:`to_json`)."""
        return [asdict(r) for r in self._rows]

    def to_json(self, **kwargs: Any) -> str:
        """The rows and totals as JSON (``kwargs`` go to ``json.dumps``)."""
        data = {
            "layers": self.to_dicts(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "input_shape": self.input_shape,
            "macs_per_position": self.macs_per_position,
        }
        return json.dumps(data, **kwargs)

    def __repr__(self) -> str:
        return (
            f"CompressionReport({len(self.replaced)} of {len(self)} conv layers replaced, "
            f"params {self.params_before:,} -> {self.params_after:,})"
        )

    def __str__(self) -> str:
        macs_head = "MACs/position" if self.macs_per_position else "MACs"
        head = ["layer", "shape", "structure", "ranks", "params", macs_head, "rel.err", "note"]
        lines = [head]
        for r in self._rows:
            lines.append(
                [
                    r.name,
                    "x".join(map(str, r.shape)),
                    "" if r.structure is None else _structure_text(r),
                    "" if r.ranks is None else ",".join(map(str, r.ranks)),
                    _arrow(r.params_before, r.params_after),
                    _arrow(r.macs_before, r.macs_after),
                    "" if r.rel_error is None else f"{r.rel_error:.3g}",
                    "" if r.skipped is None else f"skipped: {r.skipped}",
                ]
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
        out = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        total = f"model params {_arrow(self.params_before, self.params_after)}"
        if self.params_after:
            total += f" ({self.params_before / self.params_after:.2f}x)"
        if self.macs_before is not None and self.macs_after is not None:
            total += f"; MACs {_arrow(self.macs_before, self.macs_after)}"
            total += f" ({self.macs_before / max(self.macs_after, 1):.2f}x)"
            total += f" for input {self.input_shape}"
        out.append(total)
        return "\n".join(out)


def _arrow(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return ""
    return f"{before:,} -> {after:,}" if before != after else f"{before:,}"


def _structure_text(r: LayerReport) -> str:
    shapes = " ".join("(" + ",".join(map(str, s)) + ")" for s in (r.shapes or ()))
    return f"{r.structure}: {r.form} {shapes}"


# ----------------------------------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------------------------------
class _Progress:
    """tqdm when installed, else one rewritten stderr line; silent when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="compress", unit="layer", file=sys.stderr)
            except ImportError:
                self._bar = None

    def step(self, name: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(name)
            return
        sys.stderr.write(f"\rcompress: [{self.done + 1}/{self.total}] {name}\x1b[K")
        sys.stderr.flush()

    def advance(self) -> None:
        self.done += 1
        if self.enabled and self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write(f"\rcompress: {self.done}/{self.total} layers done\x1b[K\n")
            sys.stderr.flush()


# ----------------------------------------------------------------------------------------------
# compress
# ----------------------------------------------------------------------------------------------
def _check_skip(skip: object) -> tuple[str, ...]:
    if skip is None:
        return ()
    if isinstance(skip, str):
        return (skip,)
    if not isinstance(skip, Iterable):
        raise TypeError(
            f"skip must be a name, a pattern or a list of them; got {_type_name(skip)}."
        )
    out = tuple(skip)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(
                f"skip[{i}] must be a str (a layer name or pattern); got {_type_name(s)}."
            )
    return out


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Point every reference to ``old`` among ``root``'s children to ``new``."""
    for module in root.modules():
        for key, child in list(module._modules.items()):
            if child is old:
                setattr(module, key, new)


def _dense_macs_per_position(conv: nn.Conv2d) -> int:
    return prod(int(v) for v in conv.weight.shape)


def compress(
    model: nn.Module,
    *,
    compression: float | None = 4.0,
    structure: Any = "search",
    shapes: ShapesArg = None,
    rank: int | Sequence[int] | None = None,
    tol: float | None = None,
    form: str = "nested",
    min_params: int = 1024,
    skip: str | Iterable[str] | None = None,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    inplace: bool = False,
    method: str = "auto",
    progress: bool = True,
) -> tuple[nn.Module, CompressionReport]:
    """Replace a model's ``nn.Conv2d`` layers by :class:`SeKronConv2d` layers.

    Parameters
    ----------
    model : torch.nn.Module
    compression : float > 1 or None
        Per-layer parameter budget ``weight.numel() / compression`` (default 4).
    structure : str, structure object or None
        ``"search"`` (default): each layer's structure, factor shapes and ranks are chosen by
        :func:`sekron.search` within the budget, over the 200 most balanced factor
        configurations of the layer (``sekron.torch._layers.SEARCH_MAX_CONFIGS``). A name
        such as ``"cp"``, ``"tucker2"``, ``"tt"``, ``"gkpd"`` or an object of
        :mod:`sekron.structures`: that structure is fitted to every layer (with ``rank`` or
        ``compression``).
    shapes : dict of name to shapes, or callable, optional
        Explicit factor shapes, decomposed by :func:`sekron.decompose` (with ``rank``, ``tol``
        or ``compression`` and ``form``): a dict ``{layer name: shapes}`` or a callable
        ``f(weight_shape) -> shapes or None``. Layers without shapes are skipped. Replaces the
        default ``structure="search"``; other structures cannot be combined with it.
    rank, tol, form
        Passed to :meth:`SeKronConv2d.from_conv`.
    min_params : int
        Layers whose weight has fewer elements are skipped (default 1024).
    skip : str or iterable of str, optional
        Layer names or ``fnmatch`` patterns (``"features.0"``, ``"*.downsample.*"``) to skip.
    input_shape : tuple of int, optional
        Input shape (batch included) for counting MACs; a zero input is run once, before and
        after. ``example_input`` gives a tensor instead. With neither, the report's MACs are
        **per output position** of each conv (the dense ``F*C*kh*kw`` versus SPEC §5's
        factorized formula with ``N = L = 1``) and there are no whole-model MAC totals.
    inplace : bool
        Replace the layers of ``model`` itself. By default a deep copy is compressed and
        ``model`` is left unchanged.
    method : str
        Execution method of the new layers (see :func:`sekron.torch.conv2d`).
    progress : bool
        Show progress on stderr (tqdm when it is installed, else one updated line).

    Returns
    -------
    (torch.nn.Module, CompressionReport)
        The compressed model (``model`` itself when ``inplace``) and one row per
        ``nn.Conv2d``, replaced or skipped with its reason.

    Raises
    ------
    TypeError, ValueError
        Invalid arguments, raised before any layer is factorized.

    Notes
    -----
    Skipped, with the reason in the report: grouped and depthwise convolutions
    (``groups > 1``), layers below ``min_params``, layers matching ``skip``, layers without
    shapes (dict/callable ``shapes``), layers the structure cannot factor (its ``ValueError``
    is the reason, e.g. a 1x1 conv for a structure that needs a spatial kernel), and layers
    whose factorization would not save parameters.

    **Interrupting** (``KeyboardInterrupt``, Ctrl-C): without ``inplace`` the original model
    is never touched, so nothing is lost. With ``inplace=True`` each layer is swapped in one
    assignment after it is fully built: the layers replaced before the interrupt stay
    replaced and valid, the rest stay dense, and the model still runs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sekron.torch import compress
    >>> model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 8, 1))
    >>> small, report = compress(model, shapes={"0": [(4, 4, 3, 1), (8, 4, 1, 3)]},
    ...                          compression=4, min_params=0, progress=False)
    >>> [r.name for r in report], report[0].replaced, report[1].skipped
    (['0', '2'], True, 'no shapes given for this layer')
    >>> report[0].params_after < report[0].params_before
    True
    """
    # -- validate everything before any work ---------------------------------------------------
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {_type_name(model)}.")
    budget_from_compression(compression, 1)
    if shapes is not None:
        if structure == "search":
            structure = None
        if structure is not None:
            raise ValueError(
                f"give either shapes or a structure, not both; got structure={structure!r} "
                "with shapes."
            )
        if not (isinstance(shapes, Mapping) or callable(shapes)):
            raise TypeError(
                "shapes must be a dict {layer name: shapes} or a callable "
                f"f(weight_shape) -> shapes; got {_type_name(shapes)}."
            )
        check_form(form)
    else:
        if structure is None:
            raise ValueError("give a structure (default 'search') or shapes; got neither.")
        if tol is not None:
            raise ValueError(f"tol applies to explicit shapes only; got tol={tol!r}.")
        if check_form(form) != "nested":
            raise ValueError(f"form applies to explicit shapes only; got form={form!r}.")
        if structure == "search":
            if compression is None:
                raise ValueError(
                    "structure='search' needs compression (> 1) as the per-layer budget; got "
                    "compression=None."
                )
            if rank is not None:
                raise ValueError(f"rank does not apply to structure='search'; got rank={rank!r}.")
            _search_function()
        else:
            from ..structures import get_structure

            get_structure(structure)  # unknown names fail here, before any work
    if not is_int(min_params) or int(min_params) < 0:
        raise ValueError(f"min_params must be a non-negative int; got {min_params!r}.")
    patterns = _check_skip(skip)
    if input_shape is not None and example_input is not None:
        raise ValueError("give at most one of input_shape and example_input; got both.")
    x = None
    if input_shape is not None:
        x = _example_input(model, input_shape)
    elif example_input is not None:
        x = _example_input(model, example_input, "example_input")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")

    # -- before ------------------------------------------------------------------------------
    params_before = count_params(model)
    macs_before_by = layer_macs(model, x) if x is not None else None
    target = model if inplace else copy.deepcopy(model)
    convs = [(n, m) for n, m in target.named_modules() if isinstance(m, nn.Conv2d)]

    rows: list[LayerReport] = []
    bar = _Progress(len(convs), bool(progress))
    try:
        for name, conv in convs:
            bar.step(name)
            rows.append(
                _compress_one(
                    target,
                    name,
                    conv,
                    patterns=patterns,
                    min_params=int(min_params),
                    structure=structure,
                    shapes=shapes,
                    rank=rank,
                    tol=tol,
                    form=form,
                    compression=compression,
                    method=method,
                )
            )
            bar.advance()
    finally:
        bar.close()

    # -- after -------------------------------------------------------------------------------
    params_after = count_params(target)
    macs_before = macs_after = None
    if x is not None and macs_before_by is not None:
        macs_after_by = layer_macs(target, x)
        macs_before = sum(m for m, _ in macs_before_by.values())
        macs_after = sum(m for m, _ in macs_after_by.values())
        rows = [
            _with_macs(
                r, macs_before_by.get(r.name, (None,))[0], macs_after_by.get(r.name, (None,))[0]
            )
            for r in rows
        ]
    report = CompressionReport(
        rows,
        params_before=params_before,
        params_after=params_after,
        macs_before=macs_before,
        macs_after=macs_after,
        input_shape=None if x is None else tuple(int(v) for v in x.shape),
    )
    return target, report


def _with_macs(row: LayerReport, before: int | None, after: int | None) -> LayerReport:
    return dataclasses.replace(row, macs_before=before, macs_after=after)


def _compress_one(
    target: nn.Module,
    name: str,
    conv: nn.Conv2d,
    *,
    patterns: tuple[str, ...],
    min_params: int,
    structure: Any,
    shapes: ShapesArg,
    rank: Any,
    tol: float | None,
    form: str,
    compression: float | None,
    method: str,
) -> LayerReport:
    """Build one layer's replacement and swap it in (one assignment); return its row."""
    shape = tuple(int(v) for v in conv.weight.shape)
    before = count_params(conv)
    dense_pos = _dense_macs_per_position(conv)

    def skipped(reason: str) -> LayerReport:
        return LayerReport(name, shape, before, before, dense_pos, dense_pos, skipped=reason)

    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return skipped(f"{kind} conv (groups={conv.groups})")
    if any(fnmatch.fnmatchcase(name, p) for p in patterns):
        return skipped("matches skip")
    if conv.weight.numel() < min_params:
        return skipped(f"{conv.weight.numel()} weights < min_params={min_params}")
    layer_shapes = None
    if shapes is not None:
        if isinstance(shapes, Mapping):
            layer_shapes = shapes.get(name)
        else:
            layer_shapes = shapes(shape)
        if layer_shapes is None:
            return skipped("no shapes given for this layer")
    try:
        layer = SeKronConv2d.from_conv(
            conv,
            shapes=layer_shapes,
            structure=structure,
            rank=rank,
            tol=tol,
            compression=compression,
            form=form,
            method=method,
        )
    except ValueError as exc:
        return skipped(f"cannot factorize: {exc}")
    after = count_params(layer)
    if after >= before:
        return skipped(f"no saving ({after:,} params >= {before:,})")
    _replace(target, conv, layer)
    return LayerReport(
        name,
        shape,
        before,
        after,
        dense_pos,
        sekron_conv_macs(layer.shapes, layer.ranks, layer.form),
        structure="shapes" if layer_shapes is not None else structure_name(structure),
        form=layer.form,
        shapes=layer.shapes,
        ranks=layer.ranks,
        rel_error=layer.rel_error,
    )
