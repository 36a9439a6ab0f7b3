"""compress(): replace the ``nn.Conv2d`` layers of a model by SeKronConv2d layers.

Each layer is factorized on its own (by :func:`sekron.torch._policy.factorize_weight`: a
search, a structure's fit or explicit shapes) and reported row by row (:mod:`._report`):
parameters, MACs and the relative weight error. The phases: check every argument, count the
model before, convert layer by layer (or skip with the reason), count after.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from math import prod
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._typing import ConvMethod, Form
from .._validation import _type_name, check_bool, check_choice, check_int
from ._checks import METHODS, check_weight_dtype
from ._counting import (
    _example_input,
    check_initialized,
    count_params,
    layer_macs,
    sekron_conv_macs,
)
from ._layers import SeKronConv2d
from ._policy import (
    DEFAULT_COMPRESSION,
    FactorizeOptions,
    check_factorize_options,
    factorize_weight,
    structure_name,
)
from ._report import CompressionReport, LayerReport

__all__ = ["compress"]

ShapesArg = (
    Mapping[str, Sequence[Sequence[int]]]
    | Callable[[tuple[int, ...]], Sequence[Sequence[int]] | None]
    | None
)
T = TypeVar("T")


def _progress(items: Sequence[tuple[str, T]], enabled: bool) -> Iterator[tuple[str, T]]:
    """Yield ``items`` (name, value), showing progress on stderr: tqdm when installed, else
    one rewritten line; silent when disabled."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=len(items), desc="compress", unit="layer", file=sys.stderr) as bar:
            for item in items:
                bar.set_postfix_str(item[0])
                yield item
                bar.update(1)
        return
    done = 0
    try:
        for done, item in enumerate(items):
            sys.stderr.write(f"\rcompress: [{done + 1}/{len(items)}] {item[0]}\x1b[K")
            sys.stderr.flush()
            yield item
        done = len(items)
    finally:
        sys.stderr.write(f"\rcompress: {done}/{len(items)} layers done\x1b[K\n")
        sys.stderr.flush()


class _Job(NamedTuple):
    """compress's checked arguments."""

    options: FactorizeOptions
    shapes: ShapesArg
    patterns: tuple[str, ...]
    min_params: int
    method: str
    x: torch.Tensor | None
    x_name: str  # the argument x came from


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


def _check_job(model: nn.Module, kwargs: dict[str, Any]) -> _Job:
    """Phase 1: every argument, before any work."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {_type_name(model)}.")
    check_initialized(model, "model")
    shapes, structure = kwargs["shapes"], kwargs["structure"]
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
    elif structure is None:
        raise ValueError("give a structure (default 'search') or shapes; got neither.")
    options = check_factorize_options(
        shapes_given=shapes is not None,
        structure=structure,
        rank=kwargs["rank"],
        tol=kwargs["tol"],
        compression=kwargs["compression"],
        form=kwargs["form"],
    )
    try:
        min_params = check_int(kwargs["min_params"], "min_params", at_least=0)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    patterns = _check_skip(kwargs["skip"])
    input_shape, example = kwargs["input_shape"], kwargs["example_input"]
    if input_shape is not None and example is not None:
        raise ValueError("give at most one of input_shape and example_input; got both.")
    x = None
    if input_shape is not None:
        x = _example_input(model, input_shape)
    elif example is not None:
        x = _example_input(model, example, "example_input")
    method = check_choice(kwargs["method"], "method", METHODS)
    check_bool(kwargs["inplace"], "inplace")
    check_bool(kwargs["progress"], "progress")
    name = "input_shape" if input_shape is not None else "example_input"
    return _Job(options, shapes, patterns, min_params, method, x, name)


def compress(
    model: nn.Module,
    *,
    compression: float | None = DEFAULT_COMPRESSION,
    structure: Any = "search",
    shapes: ShapesArg = None,
    rank: int | Sequence[int] | None = None,
    tol: float | None = None,
    form: Form = "nested",
    min_params: int = 1024,
    skip: str | Iterable[str] | None = None,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    inplace: bool = False,
    method: ConvMethod = "auto",
    progress: bool = True,
) -> tuple[nn.Module, CompressionReport]:
    """Replace a model's ``nn.Conv2d`` layers by :class:`SeKronConv2d` layers.

    Parameters
    ----------
    model : torch.nn.Module
    compression : float > 1 or None
        Per-layer parameter budget ``weight.numel() / compression``. The default, 4, applies
        only when neither ``rank`` nor ``tol`` is given; an explicit ``compression`` that
        contradicts them (``tol`` with it; ``rank`` with it for a structure) raises
        ValueError before any layer is touched. With shapes, ``rank`` caps the ranks.
    structure : str, structure object or None
        ``"search"`` (default): each layer's structure, factor shapes and ranks are chosen by
        :func:`sekron.search` within the budget, over the 200 most balanced factor
        configurations of the layer (for an exhaustive search, call :func:`sekron.search`). A name
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
        **per output position** of each conv (the dense ``F*C*kh*kw`` versus the conv docs'
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
        Invalid arguments or contradicting options, raised before any layer is factorized.
        Any error while converting (with ``inplace=True``) puts the original layers back
        before it propagates: the model is never left half-converted.

    Notes
    -----
    Only what can be converted faithfully is replaced. Skipped, with the reason in the
    report: ``nn.Conv2d`` subclasses with their own ``forward``/``_conv_forward`` (a
    weight-standardising or dynamically padded conv would lose its behaviour), layers with
    hooks or parametrized weights, grouped and depthwise
    convolutions (``groups > 1``), weights that are not float32/float64, on the meta device
    or not finite, layers below ``min_params``, layers matching ``skip``, layers without
    shapes (dict/callable ``shapes``), layers the structure cannot factor (its ``ValueError``
    is the reason, e.g. a 1x1 conv for a structure that needs a spatial kernel), and layers
    whose factorization would not save parameters. A new layer keeps the conv's training
    mode and its parameters' ``requires_grad``.

    **Interrupting** (``KeyboardInterrupt``, Ctrl-C): without ``inplace`` the original model
    is never touched, so nothing is lost. With ``inplace=True`` each layer is swapped in one
    assignment after it is fully built: the layers replaced before the interrupt stay
    replaced and valid, the rest stay dense, and the model still runs. (Errors, unlike an
    interrupt, undo every replacement.)

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
    job = _check_job(model, dict(locals()))
    params_before = count_params(model)
    macs_before = layer_macs(model, job.x, job.x_name) if job.x is not None else None
    target = model if inplace else copy.deepcopy(model)
    convs = [(n, m) for n, m in target.named_modules() if isinstance(m, nn.Conv2d)]
    rows = _convert_all(target, convs, job, progress)
    return target, _report(target, rows, params_before, macs_before, job.x)


def _convert_all(
    target: nn.Module, convs: list[tuple[str, nn.Conv2d]], job: _Job, progress: bool
) -> list[LayerReport]:
    """Phase 3: convert (or skip) every conv. An error puts back every layer replaced so far
    before it propagates (an interrupt leaves the layers already swapped, each whole)."""
    rows: list[LayerReport] = []
    swapped: list[tuple[nn.Conv2d, SeKronConv2d]] = []
    try:
        for name, conv in _progress(convs, progress):
            row, layer = _convert_one(name, conv, job)
            if layer is not None:
                _replace(target, conv, layer)
                swapped.append((conv, layer))
            rows.append(row)
    except Exception:
        for old, new in reversed(swapped):
            _replace(target, new, old)
        raise
    return rows


def _report(
    target: nn.Module,
    rows: list[LayerReport],
    params_before: int,
    macs_before_by: dict[str, tuple[int, tuple[int, ...]]] | None,
    x: torch.Tensor | None,
) -> CompressionReport:
    """Phase 4: count the compressed model and put the report together."""
    macs_before = macs_after = None
    if x is not None and macs_before_by is not None:
        macs_after_by = layer_macs(target, x)
        macs_before = sum(m for m, _ in macs_before_by.values())
        macs_after = sum(m for m, _ in macs_after_by.values())
        rows = [
            dataclasses.replace(
                r,
                macs_before=macs_before_by.get(r.name, (None,))[0],
                macs_after=macs_after_by.get(r.name, (None,))[0],
            )
            for r in rows
        ]
    return CompressionReport(
        tuple(rows),
        params_before=params_before,
        params_after=count_params(target),
        macs_before=macs_before,
        macs_after=macs_after,
        input_shape=None if x is None else tuple(int(v) for v in x.shape),
    )


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Point every reference to ``old`` among ``root``'s children to ``new``."""
    for module in root.modules():
        for key, child in list(module._modules.items()):
            if child is old:
                setattr(module, key, new)


def _own_forward(cls: type[nn.Conv2d]) -> bool:
    """Whether an ``nn.Conv2d`` subclass computes something else than ``nn.Conv2d``."""
    return cls.forward is not nn.Conv2d.forward or (
        cls._conv_forward is not nn.Conv2d._conv_forward
    )


def _unfaithful(conv: nn.Conv2d) -> str | None:
    """Why a SeKronConv2d could not stand in for ``conv``, or None."""
    if _own_forward(type(conv)):
        return f"{_type_name(conv)} has its own forward (only nn.Conv2d's is replaced)"
    if parametrize.is_parametrized(conv):
        return "parametrized weight (torch.nn.utils.parametrize)"
    if conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks:
        return "has hooks"
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return f"{kind} conv (groups={conv.groups})"
    try:
        check_weight_dtype(conv.weight, "weight")
    except (TypeError, ValueError) as exc:
        return str(exc).split(";")[0]
    return None


def _convert_one(name: str, conv: nn.Conv2d, job: _Job) -> tuple[LayerReport, SeKronConv2d | None]:
    """One layer's row and its replacement (None when skipped); the model is not touched."""
    reason = _unfaithful(conv)
    shape = tuple(int(v) for v in conv.weight.shape)
    before = count_params(conv)
    dense_pos = prod(shape)

    def skipped(why: str) -> tuple[LayerReport, None]:
        return LayerReport(name, shape, before, before, dense_pos, dense_pos, skipped=why), None

    if reason is not None:
        return skipped(reason)
    if any(fnmatch.fnmatchcase(name, p) for p in job.patterns):
        return skipped("matches skip")
    if conv.weight.numel() < job.min_params:
        return skipped(f"{conv.weight.numel()} weights < min_params={job.min_params}")
    layer_shapes = None
    if job.shapes is not None:
        get = job.shapes.get if isinstance(job.shapes, Mapping) else None
        layer_shapes = get(name) if get is not None else job.shapes(shape)  # type: ignore[operator]
        if layer_shapes is None:
            return skipped("no shapes given for this layer")
    try:
        st = factorize_weight(conv.weight, job.options, layer_shapes)
    except ValueError as exc:
        return skipped(f"cannot factorize: {exc}")
    layer = SeKronConv2d._from_factorized(conv, st, job.method)
    after = count_params(layer)
    if after >= before:
        return skipped(f"no saving ({after:,} params >= {before:,})")
    row = LayerReport(
        name,
        shape,
        before,
        after,
        dense_pos,
        sekron_conv_macs(layer.shapes, layer.ranks, layer.form),
        structure="shapes" if layer_shapes is not None else structure_name(job.options.structure),
        form=layer.form,
        shapes=layer.shapes,
        ranks=layer.ranks,
        rel_error=layer.rel_error,
    )
    return row, layer
