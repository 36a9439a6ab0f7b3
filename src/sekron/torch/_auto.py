"""The ``method="auto"`` choice between the factorized and the reconstructed convolution.

This module only decides: :func:`lookup` answers from the cache or the cost model, and
:func:`record` times the candidates the caller built and caches the choice. A choice is made
per key ``(signature, input shape, stride, padding, dilation, dtype, device)``:

1. Cost model first: if the factorized plan needs more than ``1 / MIN_MAC_RATIO`` of the dense
   multiply-adds it cannot win by enough, and "reconstructed" is chosen (and cached) at once.
2. Otherwise, when measuring is allowed, the candidates (the factorized plan with
   channels-last stages, the same plan with channels-first stages, and kernel-building + dense
   conv) are timed ``_REPEATS`` times, interleaved, after a warm-up; the factorized layout
   with the lower median of per-repetition time ratios (factorized / dense) is cached as the
   choice only if that median and the ratio of the best times are both below ``MARGIN``, in
   this round and again with a second round added. The margin is wide on purpose: a wrong
   "factorized" costs more than a missed one, and a single measurement on a shared machine is
   noisy.
   Measuring is allowed only with autograd off, outside tracing/scripting/compiling, and
   when neither the ``measure=False`` argument nor ``SEKRON_AUTO_MEASURE=0`` forbids it.
3. When measuring is not allowed, the cost model decides (factorized when the MAC ratio is at
   least ``MODEL_MAC_RATIO``); that guess is not cached, so a later measurable call still
   measures.

The cache is this module's ``_CACHE`` dict; :func:`sekron.torch.clear_cache` empties it.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ._conv_plan import ConvKey, dense_macs, factorized_macs

__all__ = [
    "CANDIDATES",
    "MARGIN",
    "MIN_MAC_RATIO",
    "MODEL_MAC_RATIO",
    "cached_choices",
    "clear_cache",
    "lookup",
    "record",
]

MIN_MAC_RATIO = 2.0
MODEL_MAC_RATIO = 4.0
_REPEATS = 7
# timed candidates: the reconstructed kernel's dense conv and the plan in both layouts
CANDIDATES = ("dense", "nhwc", "nchw")
# the factorized plan must beat the dense conv by this factor to be chosen (timing noise)
MARGIN = 0.8
_CACHE: dict[tuple[Any, ...], tuple[str, str]] = {}


def clear_cache() -> None:
    """Forget every choice of ``method="auto"`` (measured or from the cost model).

    :func:`sekron.torch.conv2d` with ``method="auto"`` caches its choice between the
    factorized plan and the reconstructed kernel per (signature, input shape, stride, padding,
    dilation, dtype, device). Clear it after the machine's load changed a lot, or to measure
    again (e.g. before a benchmark).

    Examples
    --------
    >>> import sekron.torch
    >>> sekron.torch.clear_cache()
    """
    _CACHE.clear()


def cached_choices() -> dict[tuple[Any, ...], tuple[str, str]]:
    """A copy of the cache: key -> (method, layout)."""
    return dict(_CACHE)


def _measuring_allowed(measure: bool | None) -> bool:
    if measure is False:
        return False
    if measure is None and os.environ.get("SEKRON_AUTO_MEASURE", "1").strip() in ("0", "false"):
        return False
    if torch.is_grad_enabled():
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(candidates: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, list[float]]:
    """``_REPEATS`` timings of each candidate, interleaved (every repetition runs each once,
    in rotating order), after one warm-up each."""
    for fn in candidates.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for rep in range(_REPEATS):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            candidates[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def _paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]``: runs of the same repetition are close
    in time, so a load change on a shared machine affects both."""
    return statistics.median(a / max(b, 1e-12) for a, b in zip(num, den, strict=True))


Choice = tuple[str, str]  # (method, layout)


def _cache_key(key: ConvKey, x: torch.Tensor) -> tuple[Any, ...]:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
    return (key, x.dtype, x.device, channels_last)


def lookup(key: ConvKey, x: torch.Tensor, measure: bool | None) -> Choice | None:
    """The choice for a call with plan key ``key`` on input ``x``, or None when it should be
    measured (then time the candidates and call :func:`record`).

    A cached choice first; then the cost model: a factorized plan that cannot save
    ``MIN_MAC_RATIO`` of the multiply-adds is "reconstructed" (cached); when measuring is
    not allowed, the model's guess (not cached).
    """
    ckey = _cache_key(key, x)
    hit = _CACHE.get(ckey)
    if hit is not None:
        return hit
    fact = factorized_macs(*key)
    dense = dense_macs(key.shapes, key.in_shape, key.stride, key.padding, key.dilation)
    ratio = dense / max(fact, 1)
    if ratio < MIN_MAC_RATIO:
        _CACHE[ckey] = ("reconstructed", "nchw")
        return _CACHE[ckey]
    if not _measuring_allowed(measure):
        return ("factorized", "nhwc") if ratio >= MODEL_MAC_RATIO else ("reconstructed", "nchw")
    return None


def record(key: ConvKey, x: torch.Tensor, candidates: dict[str, Callable[[], Any]]) -> Choice:
    """Time ``candidates`` (``CANDIDATES`` -> zero-argument callables: "dense" runs the
    reconstructed kernel's conv, "nhwc"/"nchw" the factorized plan in that layout), cache and
    return the choice (see the module notes)."""
    with torch.no_grad():
        timings = _time(candidates, x.device)
    ratios = {lay: _paired_ratio(timings[lay], timings["dense"]) for lay in ("nhwc", "nchw")}
    layout = min(ratios, key=ratios.__getitem__)
    fast = _wins(timings[layout], timings["dense"])
    if fast:  # confirm with a second, independent round before caching "factorized"
        with torch.no_grad():
            again = _time({n: candidates[n] for n in ("dense", layout)}, x.device)
        fast = _wins(timings[layout] + again[layout], timings["dense"] + again["dense"])
    choice = ("factorized", layout) if fast else ("reconstructed", "nchw")
    _CACHE[_cache_key(key, x)] = choice
    return choice


def _wins(fact: list[float], dense: list[float]) -> bool:
    """Whether the factorized times beat the dense ones by ``MARGIN``, both paired (robust to
    a load change during the measurement) and at their best (a dense conv that happened to be
    slow throughout the measurement, as some memory-bound layers are at times, must not make
    the factorized plan look faster than it is)."""
    return _paired_ratio(fact, dense) < MARGIN and min(fact) < MARGIN * min(dense)
