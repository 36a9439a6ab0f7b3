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
from concurrent.futures import Executor
from math import prod
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._executor import check_executor, map_ordered
from .._typing import Allocation, ConvMethod, Form
from .._validation import _type_name, check_bool, check_choice, check_int
from ._checks import METHODS, check_weight_dtype
from ._counting import (
    _example_input,
    check_initialized,
    count_params,
    layer_macs,
    sekron_conv_macs,
)
from ._global import allocate_globally, check_allocation
from ._layers import SeKronConv2d
from ._policy import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAC_COMPRESSION,
    DEFAULT_MAX_SECONDS,
    Factorized,
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
    allocation: str
    weights: Mapping[str, float] | None
    executor: Executor | None


class _Task(NamedTuple):
    """One layer's work, as data (picklable): the name, the detached weight, its shapes."""

    name: str
    weight: torch.Tensor
    shapes: Sequence[Sequence[int]] | None


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
        mac_compression=kwargs["mac_compression"],
        max_seconds=kwargs["max_seconds"],
    )
    allocation = check_choice(kwargs["allocation"], "allocation", ("uniform", "global"))
    weights = check_allocation(model, options, allocation, kwargs["weights"])
    executor = check_executor(kwargs["executor"])
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
    return _Job(
        options, shapes, patterns, min_params, method, x, name, allocation, weights, executor
    )


def compress(
    model: nn.Module,
    *,
    compression: float | None = DEFAULT_COMPRESSION,
    structure: Any = "search",
    shapes: ShapesArg = None,
    rank: int | Sequence[int] | None = None,
    tol: float | None = None,
    form: Form = "nested",
    mac_compression: float | None = DEFAULT_MAC_COMPRESSION,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    allocation: Allocation = "uniform",
    weights: Mapping[str, float] | None = None,
    min_params: int = 1024,
    skip: str | Iterable[str] | None = None,
    input_shape: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
    inplace: bool = False,
    method: ConvMethod = "auto",
    progress: bool = True,
    executor: Executor | None = None,
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
        :func:`sekron.search` (up to 3 factors, every configuration: no cap) within the
        parameter budget and the MAC budget ``mac_compression``, in at most ``max_seconds``
        per layer. A name
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
    mac_compression : float >= 1 or None
        ``structure="search"`` only. Each layer's factorized plan may cost at most
        ``F*C*kh*kw / mac_compression`` MACs **per output position** (the unit of
        :func:`sekron.search`'s ``max_macs``: :func:`sekron_conv_macs` with ``in_hw=None``;
        for a stride-1 "same" conv, :func:`count_macs` is this times the output positions).
        The default, 1, never chooses a structure that costs more MACs than the dense layer;
        2 asks for half of them. ``None``: parameters only, whatever the MACs.
    max_seconds : float > 0 or None
        ``structure="search"`` only: the search's time limit per layer (default 30 s; None:
        none). The level-1 spectra and every 2-factor (GKPD) configuration are always scored
        in full, so the best 2-factor split is never lost; deeper configurations are
        evaluated most promising first. A layer whose search was stopped has
        ``cut_short=True`` in the report, with its certificate in ``search_note``.
    allocation : {"uniform", "global"}
        ``"uniform"`` (default): every layer gets ``compression``. ``"global"``
        (``structure="search"`` only): one budget for the model, the sum of the per-layer
        budgets, is shared out to minimise ``sum_l w_l * rel_error_l**2`` over the layers'
        exact error-vs-parameters fronts (a knapsack; :mod:`sekron.torch._allocation` states
        its guarantee): it never exceeds the budget and is never worse, on those fronts,
        than the uniform ratio. Every layer stays within its own MAC budget, so the model
        does too, for any input size.
    weights : dict of layer name to float >= 0, optional
        ``allocation="global"`` only: per-layer weights ``w_l`` of the squared errors
        (default 1; layers not named get 1).
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
    executor : concurrent.futures.Executor, optional
        Factorize the layers on this executor (a Dask ``Client.get_executor()`` is one): one
        task per layer, its weight sent as data. None (default): in this process, one layer
        after the other. With an executor the layers are swapped in once all are done.

    Returns
    -------
    (torch.nn.Module, CompressionReport)
        The compressed model (``model`` itself when ``inplace``) and one row per
        ``nn.Conv2d``, replaced or skipped with its reason.

    Raises
    ------
    TypeError, ValueError
        Invalid arguments or contradicting options, raised before any layer is factorized:
        among them ``mac_compression``, ``max_seconds``, ``allocation="global"`` or
        ``weights`` without ``structure="search"``, ``mac_compression < 1``, ``weights``
        without ``allocation="global"`` or naming no conv layer of the model.
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
    rows: dict[str, LayerReport] = {}
    tasks: list[_Task] = []
    by_name: dict[str, nn.Conv2d] = {}
    for name, conv in convs:
        prepared = _prepare(name, conv, job)
        if isinstance(prepared, LayerReport):
            rows[name] = prepared
        else:
            tasks.append(prepared)
            by_name[name] = conv
    swapped: list[tuple[nn.Conv2d, SeKronConv2d]] = []
    try:
        for task, done in _factorize_all(tasks, job, progress):
            conv = by_name[task.name]
            rows[task.name], layer = _finish(task, conv, done, job)
            if layer is not None:
                _replace(target, conv, layer)
                swapped.append((conv, layer))
    except Exception:
        for old, new in reversed(swapped):
            _replace(target, new, old)
        raise
    return [rows[name] for name, _ in convs]


def _factorize_all(
    tasks: list[_Task], job: _Job, progress: bool
) -> Iterator[tuple[_Task, Factorized | str]]:
    """Each task with its factorization (or why it cannot be factorized), in order: one layer
    after the other in this process (streamed), or all at once on ``job.executor``."""
    labels = [t.name for t in tasks]
    if job.allocation == "global":

        def run(fn: Callable[..., Any], items: Sequence[Any], shared: Mapping[str, Any]) -> Any:
            if job.executor is None:
                named = list(zip(labels, items, strict=True))
                return [fn(item, **shared) for _, item in _progress(named, progress)]
            return map_ordered(fn, items, executor=job.executor, shared=shared, labels=labels)

        done = allocate_globally(tasks, job.options, job.weights, run)
        yield from zip(tasks, done, strict=True)
    elif job.executor is None:
        for _name, task in _progress(list(zip(labels, tasks, strict=True)), progress):
            yield task, factorize_task(task, options=job.options)
    else:
        results = map_ordered(
            factorize_task,
            tasks,
            executor=job.executor,
            shared={"options": job.options},
            labels=labels,
        )
        yield from zip(tasks, results, strict=True)


def factorize_task(task: _Task, *, options: FactorizeOptions) -> Factorized | str:
    """One layer's factorization, or the reason it cannot be factorized (its ValueError)."""
    try:
        return factorize_weight(task.weight, options, task.shapes)
    except ValueError as exc:
        return f"cannot factorize: {exc}"


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


def _prepare(name: str, conv: nn.Conv2d, job: _Job) -> LayerReport | _Task:
    """The skipped row of a layer that is not converted, or its task."""
    reason = _unfaithful(conv)
    if reason is None and any(fnmatch.fnmatchcase(name, p) for p in job.patterns):
        reason = "matches skip"
    if reason is None and conv.weight.numel() < job.min_params:
        reason = f"{conv.weight.numel()} weights < min_params={job.min_params}"
    layer_shapes = None
    if reason is None and job.shapes is not None:
        shape = tuple(int(v) for v in conv.weight.shape)
        get = job.shapes.get if isinstance(job.shapes, Mapping) else None
        layer_shapes = get(name) if get is not None else job.shapes(shape)  # type: ignore[operator]
        if layer_shapes is None:
            reason = "no shapes given for this layer"
    if reason is not None:
        return _skipped(name, conv, reason)
    return _Task(name, conv.weight.detach(), layer_shapes)


def _skipped(name: str, conv: nn.Conv2d, why: str) -> LayerReport:
    shape = tuple(int(v) for v in conv.weight.shape)
    before, dense_pos = count_params(conv), prod(shape)
    return LayerReport(name, shape, before, before, dense_pos, dense_pos, skipped=why)


def _finish(
    task: _Task, conv: nn.Conv2d, done: Factorized | str, job: _Job
) -> tuple[LayerReport, SeKronConv2d | None]:
    """One layer's row and its replacement (None when skipped); the model is not touched."""
    if isinstance(done, str):
        return _skipped(task.name, conv, done), None
    layer = SeKronConv2d._from_factorized(conv, done.st, job.method)
    before, after = count_params(conv), count_params(layer)
    if after >= before:
        return _skipped(task.name, conv, f"no saving ({after:,} params >= {before:,})"), None
    shape = tuple(int(v) for v in conv.weight.shape)
    row = LayerReport(
        task.name,
        shape,
        before,
        after,
        prod(shape),
        sekron_conv_macs(layer.shapes, layer.ranks, layer.form),
        structure="shapes" if task.shapes is not None else structure_name(job.options.structure),
        form=layer.form,
        shapes=layer.shapes,
        ranks=layer.ranks,
        rel_error=layer.rel_error,
        cut_short=done.cut_short,
        search_note=done.note,
    )
    return row, layer
