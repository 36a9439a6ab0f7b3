"""The ``method="auto"`` choice among the dense conv and the plans of the plan space.

This module only decides: :func:`lookup` answers from the cache or the cost model, and
:func:`record` times the candidates the caller built and caches the choice. A choice is made
per key ``(signature, input shape, stride, padding, dilation, regime, dtype, device)``.

The regime is what the call will cost (:func:`regime`):

- ``"inference"``: autograd does not record (``torch.no_grad()``, inference mode, or nothing
  requires grad): the forward alone is timed, without autograd;
- ``"forward"``: autograd records but the caller says no backward follows (a
  ``SeKronConv2d`` in eval mode): the forward is timed with autograd recording;
- ``"training"``: autograd records (the functional ``conv2d``, a layer in train mode): the
  forward plus the backward to every input that requires grad is timed.

The candidates, their timing and the decision are backend-neutral
(:mod:`sekron._conv_choice`, shared with :mod:`sekron.jax`):

1. No plan needs at most ``1 / MIN_MAC_RATIO`` of the dense multiply-adds: "reconstructed"
   is chosen (and cached) at once.
2. Otherwise, when measuring is allowed, the candidates are timed (interleaved, hopeless ones
   pruned) and a plan is cached only if it beats the dense conv by ``MARGIN`` twice (see
   :mod:`sekron._conv_choice`). Timing runs on detached copies of the inputs (with the same
   ``requires_grad``) and takes gradients with ``torch.autograd.grad``: no ``.grad`` is
   written, no hook fires, and the call's result is computed afterwards as usual.
   Measuring is allowed outside tracing, scripting, compiling and functorch transforms, when
   neither the ``measure=False`` argument nor ``SEKRON_AUTO_MEASURE=0`` forbids it.
3. When measuring is not allowed, the cost model decides (factorized when the MAC ratio is at
   least ``MODEL_MAC_RATIO``); that guess is not cached, so a later measurable call still
   measures.

The cache is this module's ``_CACHE``, a :class:`~sekron._conv_choice.ChoiceCache` of at
most ``MAX_CACHE_ENTRIES`` choices (least recently used dropped first);
:func:`sekron.torch.clear_cache` empties it.

``method="factorized"`` never runs the dense conv, but its plan runs in one of two layouts
(channels-last or channels-first stages) whose speeds differ by up to 2.7x either way on the
benchmark layers, with no simple rule telling which (conv docs). :func:`layout` and
:func:`record_layout` measure the two per the same key and regime, on the same terms
(timing allowed, detached copies), cache the faster in ``_LAYOUTS``, and fall back to
channels-last when measuring is not allowed.

When ``auto`` runs the dense conv on the CPU in the "inference" or "forward" regime,
:func:`kernel` reuses the kernel built by an earlier call from factors
equal (value for value) to the current ones: a ``.data`` write, an in-place update or a load
changes the values and so rebuilds it. The kernel build is a few small multi-threaded ops (a
matrix product and a permuting copy), each waiting for every thread: a few hundredths of the
conv on a quiet machine, several times the conv itself on an oversubscribed one (2 threads at
a load of 5: 0.7 ms, median 60 ms, for a (128, 128, 3, 3) kernel), so a rebuilt kernel made
``auto`` slower than the dense conv there. On a GPU the build is queued asynchronously while
the comparison would synchronize: the kernel is rebuilt there. ``_KERNELS`` holds at most
``KERNEL_CACHE_ELEMENTS`` kernel elements (oldest dropped first);
:func:`sekron.torch.clear_cache` empties it too. Where autograd records (the "forward"
regime), the kept kernel enters the graph through a function whose backward rebuilds the
kernel from the factors and takes its vector-Jacobian product, so gradients (of any order)
are those of the rebuilt kernel. The "training" regime builds the kernel in the graph on
every call (its factors change at every step) unless no factor requires grad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._conv_choice import (
    DENSE,
    Choice,
    ChoiceCache,
    candidates,
    decide,
    faster_layout,
    measuring_wanted,
    model_choice,
    time_interleaved,
)
from .._conv_plan import ConvKey

__all__ = [
    "KERNEL_CACHE_ELEMENTS",
    "REGIMES",
    "cached_choices",
    "clear_cache",
    "kernel",
    "layout",
    "lookup",
    "record",
    "record_layout",
    "regime",
]

REGIMES = ("inference", "forward", "training")
_CACHE: ChoiceCache[tuple[Any, ...], Choice] = ChoiceCache()
# the layout of method="factorized", per the same key as _CACHE
_LAYOUTS: ChoiceCache[tuple[Any, ...], str] = ChoiceCache()
# kernels kept for the dense choice (see the module notes): key -> (factor copies, kernel)
KERNEL_CACHE_ELEMENTS = 1 << 25
_KERNELS: dict[tuple[Any, ...], tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}


def clear_cache() -> None:
    """Forget every choice of ``method="auto"`` (measured or from the cost model).

    :func:`sekron.torch.conv2d` with ``method="auto"`` caches its choice among the dense
    conv and its factorized plans per (signature, input shape, stride, padding, dilation,
    regime, dtype, device), and with ``method="factorized"`` the layout it measured fastest
    per the same key. Clear it after the machine's load changed a lot, or to measure
    again (e.g. before a benchmark).

    Examples
    --------
    >>> import sekron.torch
    >>> sekron.torch.clear_cache()
    """
    _CACHE.clear()
    _LAYOUTS.clear()
    _KERNELS.clear()


def cached_choices() -> dict[tuple[Any, ...], Choice]:
    """A copy of the cache: ``(ConvKey, regime, dtype, device, channels_last) -> Choice``,
    least recently used first."""
    return _CACHE.copy()


def regime(leaves: tuple[torch.Tensor, ...], train: bool) -> str:
    """``"inference"``, ``"forward"`` or ``"training"`` for a call on ``leaves`` (x, the
    factors, the bias), ``train`` False when no backward will follow (see the module notes)."""
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return "inference"
    if not any(t.requires_grad for t in leaves):
        return "inference"
    return "training" if train else "forward"


def _measuring_allowed(measure: bool | None) -> bool:
    return measuring_wanted(measure) and _eager()


def _eager() -> bool:
    """Whether the call runs eagerly: not traced, scripted, compiled nor under a functorch
    transform (where timing means nothing and a cached tensor would be baked in)."""
    # (torch.jit.is_scripting() is False in Python code: scripted code never runs this;
    # torch.compiler.is_compiling through its module: dynamo answers True only for that
    # attribute, an alias bound at import read False while compiling)
    return not (torch.compiler.is_compiling() or _is_tracing() or _functorch_active())


# bound once: each call asks these (#16: after a long convolution every Python step of a call
# runs from cold caches, so the steps saved here are a measurable part of a short layer)
_is_tracing = torch._C._is_tracing
_CHANNELS_LAST = torch.channels_last
_DATA_PTR = torch.Tensor.data_ptr
_functorch_transforms = getattr(torch._C, "_are_functorch_transforms_active", None)


def _functorch_active() -> bool:
    return _functorch_transforms is not None and bool(_functorch_transforms())


def _cache_key(key: ConvKey, x: torch.Tensor, regime_: str) -> tuple[Any, ...]:
    # functorch transforms (vmap) cannot answer memory-format queries: there, and only
    # there, the key says contiguous (a cached plan choice never changes a result)
    channels_last = (
        not _functorch_active() and x.is_contiguous(memory_format=_CHANNELS_LAST) and x.shape[1] > 1
    )
    return (key, regime_, x.dtype, x.device, channels_last)


def lookup(key: ConvKey, x: torch.Tensor, measure: bool | None, regime_: str) -> Choice | None:
    """The choice for a call with plan key ``key`` on input ``x`` in ``regime_``, or None
    when it should be measured (then time the candidates and call :func:`record`).

    A cached choice first; then: with no plan among :func:`candidates`, "reconstructed"
    (cached); when measuring is not allowed, the cost model's guess (not cached).
    """
    ckey = _cache_key(key, x, regime_)
    hit = _CACHE.get(ckey)
    if hit is not None:
        return hit
    if not candidates(key):
        _CACHE[ckey] = DENSE
        return DENSE
    if not _measuring_allowed(measure):
        return model_choice(key)
    return None


def layout(key: ConvKey, x: torch.Tensor, measure: bool | None, regime_: str) -> str | None:
    """The layout ``method="factorized"`` runs for a call: "nhwc" when measuring is not
    allowed (whatever is cached: the documented, deterministic fallback), else the cached
    one, or None when it should be measured (then time both layouts and call
    :func:`record_layout`)."""
    if not _measuring_allowed(measure):
        return "nhwc"
    return _LAYOUTS.get(_cache_key(key, x, regime_))


def record_layout(
    key: ConvKey, x: torch.Tensor, regime_: str, fns: dict[str, Callable[[], Any]]
) -> str:
    """Time ``fns`` ("nhwc", "nchw" -> zero-argument callables running the fully
    factorized plan once in ``regime_``), cache and return the faster layout
    (:func:`sekron._conv_choice.faster_layout`)."""
    chosen = faster_layout(_time_in(regime_, fns, x.device))
    _LAYOUTS[_cache_key(key, x, regime_)] = chosen
    return chosen


def _time_in(
    regime_: str, fns: dict[str, Callable[[], Any]], device: torch.device
) -> dict[str, list[float]]:
    """:func:`_time` with autograd recording as ``regime_`` does ("inference": not)."""
    grad = torch.no_grad if regime_ == "inference" else torch.enable_grad
    with grad():
        return _time(fns, device)


def _time(fns: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, list[float]]:
    """:func:`sekron._conv_choice.time_interleaved`, synchronizing ``device``."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # identity saved-tensor hooks, innermost: the timing runs' autograd graphs are dropped at
    # once, and hooks of the caller (a non-reentrant checkpoint, which counts the tensors its
    # forward saves and compares with the recomputation, served from the cache) never see them
    with torch.autograd.graph.saved_tensors_hooks(_same, _same):
        return time_interleaved(fns, sync)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def record(
    key: ConvKey,
    x: torch.Tensor,
    regime_: str,
    fns: dict[str, Callable[[], Any]],
) -> Choice:
    """Time ``fns`` ("dense" and the names of :func:`~sekron._conv_choice.candidates` ->
    zero-argument callables that run one call in ``regime_``, backward included for
    "training"), cache and return the choice (see the module notes)."""
    choice = decide(
        candidates(key),
        _time_in(regime_, fns, x.device),
        lambda best: _time_in(regime_, {n: fns[n] for n in ("dense", best)}, x.device),
    )
    _CACHE[_cache_key(key, x, regime_)] = choice
    return choice


def kernel(st: Any, regime_: str) -> torch.Tensor:
    """``st.to_tensor()`` for a call in ``regime_``, reused from an earlier call in the
    "inference" and "forward" regimes (and in "training" when no factor requires grad) when
    the factors equal those it was built from (see the module notes)."""
    factors = st._factors
    if factors[0].device.type != "cpu" or not _eager():
        return st.to_tensor()
    if not (torch.is_grad_enabled() and any(f.requires_grad for f in factors)):
        return _kept(st)  # a constant kernel, whatever the regime (e.g. frozen factors)
    if regime_ == "training":
        return st.to_tensor()
    return _Reused.apply(_kept(st), st, *factors)


class _Reused(torch.autograd.Function):
    """The kept kernel as a function of the factors: its backward rebuilds the kernel from the
    saved factors and takes the vector-Jacobian product (differentiable again under
    ``create_graph``)."""

    @staticmethod
    def forward(ctx: Any, built: torch.Tensor, st: Any, *factors: torch.Tensor) -> torch.Tensor:
        ctx.st = st
        ctx.save_for_backward(*factors)
        return built.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        factors = ctx.saved_tensors
        st = ctx.st
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[2:]) if need]
        with torch.enable_grad():
            rebuilt = type(st)._trusted(list(factors), st.form, st.shapes, st.ranks).to_tensor()
            grads = torch.autograd.grad(
                rebuilt,
                [factors[i] for i in wanted],
                grad,
                create_graph=torch.is_grad_enabled(),
                allow_unused=True,
            )
        out: list[Any] = [None] * len(factors)
        for i, g in zip(wanted, grads, strict=True):
            out[i] = g
        return (None, None, *out)


def _kept(st: Any) -> torch.Tensor:
    """The kernel of ``st`` built without autograd, kept in ``_KERNELS`` with copies of the
    factors and reused while the factors equal them."""
    factors = st._factors
    f0 = factors[0]
    key = (
        st._shapes,
        st._ranks,
        st._form,
        f0.dtype,
        f0.device,
        torch.is_inference_mode_enabled(),
        tuple(map(_DATA_PTR, factors)),
    )
    hit = _KERNELS.get(key)
    if hit is not None:
        for kept, f in zip(hit[0], factors, strict=True):
            if not torch.equal(kept, f):
                break
        else:
            return hit[1]
    with torch.no_grad():
        built = st.to_tensor()
        copies = tuple(f.detach().clone() for f in factors)
    _KERNELS.pop(key, None)
    total = built.numel() + sum(k.numel() for _, k in _KERNELS.values())
    while _KERNELS and total > KERNEL_CACHE_ELEMENTS:
        total -= _KERNELS.pop(next(iter(_KERNELS)))[1].numel()
    if built.numel() <= KERNEL_CACHE_ELEMENTS:
        _KERNELS[key] = (copies, built)
    return built
