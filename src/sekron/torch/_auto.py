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

The candidates (:func:`candidates`) are the dense conv on the rebuilt kernel, the fully
factorized plan in both layouts and up to ``MAX_MERGED`` partial reconstructions (adjacent
factors merged, :mod:`sekron._conv_merge`) of lowest :func:`~sekron._conv_plan.plan_cost`,
each of which needs at most ``1 / MIN_MAC_RATIO`` of the dense multiply-adds.

1. No plan needs less than ``1 / MIN_MAC_RATIO`` of the dense multiply-adds: "reconstructed"
   is chosen (and cached) at once.
2. Otherwise, when measuring is allowed, the candidates are timed ``_REPEATS`` times,
   interleaved, after a warm-up; the plan with the lowest median of per-repetition time
   ratios (plan / dense) is cached only if that median and the ratio of the best times are
   both below ``MARGIN``, in this round and again with a second round added. A plan more
   than ``_PRUNE_RATIO`` times slower than the dense conv after ``_PRUNE_AFTER``
   repetitions is dropped from the round (it cannot win). The margin is
   wide on purpose: a wrong plan costs more than a missed one, and a single measurement on a
   shared machine is noisy. Timing runs on detached copies of the inputs (with the same
   ``requires_grad``) and takes gradients with ``torch.autograd.grad``: no ``.grad`` is
   written, no hook fires, and the call's result is computed afterwards as usual.
   Measuring is allowed outside tracing, scripting, compiling and functorch transforms, when
   neither the ``measure=False`` argument nor ``SEKRON_AUTO_MEASURE=0`` forbids it.
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
from typing import Any, NamedTuple

import torch

from .._conv_macs import dense_macs
from .._conv_merge import groupings, merged_signature
from .._conv_plan import ConvKey, plan_cost

__all__ = [
    "MARGIN",
    "MAX_MERGED",
    "MIN_MAC_RATIO",
    "MODEL_MAC_RATIO",
    "REGIMES",
    "Choice",
    "cached_choices",
    "candidates",
    "clear_cache",
    "lookup",
    "record",
    "regime",
]

MIN_MAC_RATIO = 2.0
MODEL_MAC_RATIO = 4.0
MAX_MERGED = 2
_REPEATS = 7
_PRUNE_AFTER, _PRUNE_RATIO = 3, 1.5
REGIMES = ("inference", "forward", "training")
# the plan must beat the dense conv by this factor to be chosen (timing noise)
MARGIN = 0.8


class Choice(NamedTuple):
    """What ``auto`` runs: ``method`` "reconstructed" (the dense conv), "factorized" (every
    factor its own stage) or "merged" (adjacent factors merged by ``grouping``, lengths of
    consecutive runs), with the plan's ``layout``."""

    method: str
    layout: str
    grouping: tuple[int, ...] = ()


DENSE = Choice("reconstructed", "nchw")
_CACHE: dict[tuple[Any, ...], Choice] = {}


def clear_cache() -> None:
    """Forget every choice of ``method="auto"`` (measured or from the cost model).

    :func:`sekron.torch.conv2d` with ``method="auto"`` caches its choice among the dense
    conv and its factorized plans per (signature, input shape, stride, padding, dilation,
    regime, dtype, device). Clear it after the machine's load changed a lot, or to measure
    again (e.g. before a benchmark).

    Examples
    --------
    >>> import sekron.torch
    >>> sekron.torch.clear_cache()
    """
    _CACHE.clear()


def cached_choices() -> dict[tuple[Any, ...], Choice]:
    """A copy of the cache: ``(ConvKey, regime, dtype, device, channels_last) -> Choice``."""
    return dict(_CACHE)


def regime(leaves: tuple[torch.Tensor, ...], train: bool) -> str:
    """``"inference"``, ``"forward"`` or ``"training"`` for a call on ``leaves`` (x, the
    factors, the bias), ``train`` False when no backward will follow (see the module notes)."""
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return "inference"
    if not any(t.requires_grad for t in leaves):
        return "inference"
    return "training" if train else "forward"


def _measuring_allowed(measure: bool | None) -> bool:
    if measure is False:
        return False
    if measure is None and os.environ.get("SEKRON_AUTO_MEASURE", "1").strip() in ("0", "false"):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return False
    functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return not (functorch_active is not None and functorch_active())


def candidates(key: ConvKey) -> dict[str, Choice]:
    """The plans worth timing for ``key`` besides the dense conv, by candidate name: the
    fully factorized plan in both layouts ("nhwc", "nchw"), and the ``MAX_MERGED`` merged
    groupings of lowest plan cost in the channels-last layout ("nhwc:1+2"), each only if it
    needs at most ``1 / MIN_MAC_RATIO`` of the dense multiply-adds."""
    dense = dense_macs(key.shapes, key.in_shape, key.stride, key.padding, key.dilation)
    scored = []
    for g in groupings(len(key.shapes)):
        shapes, ranks = merged_signature(key.shapes, key.ranks, key.form, g)
        plan = key._replace(shapes=shapes, ranks=ranks).plan("nhwc")
        if dense >= MIN_MAC_RATIO * plan.macs:
            scored.append((plan_cost(plan), g))
    out: dict[str, Choice] = {}
    full = (1,) * len(key.shapes)
    if any(g == full for _, g in scored):
        out |= {lay: Choice("factorized", lay, full) for lay in ("nhwc", "nchw")}
    merged = sorted((c, g) for c, g in scored if g != full)[:MAX_MERGED]
    for _, g in merged:
        out["nhwc:" + "+".join(map(str, g))] = Choice("merged", "nhwc", g)
    return out


def model_choice(key: ConvKey) -> Choice:
    """The cost model's guess: the fully factorized plan when its MAC ratio is at least
    ``MODEL_MAC_RATIO``, else the dense conv."""
    plan = key.plan("nhwc")
    dense = dense_macs(key.shapes, key.in_shape, key.stride, key.padding, key.dilation)
    if dense >= MODEL_MAC_RATIO * plan.macs:
        return Choice("factorized", "nhwc", (1,) * len(key.shapes))
    return DENSE


def _cache_key(key: ConvKey, x: torch.Tensor, regime_: str) -> tuple[Any, ...]:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fns: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, list[float]]:
    """``_REPEATS`` timings of each candidate, interleaved (every repetition runs each once,
    in rotating order), after one warm-up each. After ``_PRUNE_AFTER`` repetitions a
    candidate whose paired ratio to "dense" exceeds ``_PRUNE_RATIO`` (it cannot win by
    ``MARGIN``) stops being timed: its list stays short, and it is not chosen."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(_REPEATS):
        if rep == _PRUNE_AFTER and "dense" in times:
            names = [n for n in names if n == "dense" or not _hopeless(times, n)]
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def _hopeless(times: dict[str, list[float]], name: str) -> bool:
    return _paired_ratio(times[name], times["dense"]) > _PRUNE_RATIO


def _paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]``: runs of the same repetition are close
    in time, so a load change on a shared machine affects both."""
    return statistics.median(a / max(b, 1e-12) for a, b in zip(num, den, strict=True))


def record(
    key: ConvKey,
    x: torch.Tensor,
    regime_: str,
    fns: dict[str, Callable[[], Any]],
) -> Choice:
    """Time ``fns`` ("dense" and the names of :func:`candidates` -> zero-argument callables
    that run one call in ``regime_``, backward included for "training"), cache and return
    the choice (see the module notes)."""
    plans = candidates(key)
    grad = torch.enable_grad() if regime_ != "inference" else torch.no_grad()
    with grad:
        timings = _time(fns, x.device)
    ratios = {
        name: _paired_ratio(timings[name], timings["dense"])
        for name in plans
        if len(timings[name]) == len(timings["dense"])
    }
    if not ratios:  # every plan pruned as hopeless
        _CACHE[_cache_key(key, x, regime_)] = DENSE
        return DENSE
    best = min(ratios, key=ratios.__getitem__)
    fast = _wins(timings[best], timings["dense"])
    if fast:  # confirm with a second, independent round before caching a plan
        with grad:
            again = _time({n: fns[n] for n in ("dense", best)}, x.device)
        fast = _wins(timings[best] + again[best], timings["dense"] + again["dense"])
    choice = plans[best] if fast else DENSE
    _CACHE[_cache_key(key, x, regime_)] = choice
    return choice


def _wins(fact: list[float], dense: list[float]) -> bool:
    """Whether the plan's times beat the dense ones by ``MARGIN``, both paired (robust to
    a load change during the measurement) and at their best (a dense conv that happened to be
    slow throughout the measurement, as some memory-bound layers are at times, must not make
    the plan look faster than it is)."""
    return _paired_ratio(fact, dense) < MARGIN and min(fact) < MARGIN * min(dense)
