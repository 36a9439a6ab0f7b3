"""The backend-neutral half of ``method="auto"``: which plans are candidates, how they are
timed and how the timings decide (shared by :mod:`sekron.torch._auto` and
:mod:`sekron.jax._auto`; no torch or jax import here).

- :func:`candidates`: the fully factorized plan (both layouts) and up to ``MAX_MERGED``
  merged groupings (:mod:`sekron._conv_merge`) of lowest plan cost, each only if it needs at
  most ``1 / MIN_MAC_RATIO`` of the dense multiply-adds;
- :func:`time_interleaved`: ``REPEATS`` runs of each, interleaved in rotating order after a
  warm-up; a plan more than ``PRUNE_RATIO`` times slower than the dense conv after
  ``PRUNE_AFTER`` repetitions stops being timed (it cannot win);
- :func:`decide`: the plan with the lowest median of per-repetition ratios (plan / dense)
  wins only if that median and the ratio of the best times are both below ``MARGIN``, in
  this round and again with a confirming second round added;
- :func:`faster_layout`: for ``method="factorized"`` (which never runs the dense conv), the
  layout of the fully factorized plan, from the same kind of timings;
- :class:`ChoiceCache`: where the choices are kept, at most ``MAX_CACHE_ENTRIES`` of them
  (least recently used dropped first).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

from ._conv_macs import dense_macs
from ._conv_merge import groupings, merged_signature
from ._conv_plan import ConvKey, plan_cost

__all__ = [
    "DENSE",
    "MARGIN",
    "MAX_CACHE_ENTRIES",
    "MAX_MERGED",
    "MIN_MAC_RATIO",
    "MODEL_MAC_RATIO",
    "PRUNE_AFTER",
    "PRUNE_RATIO",
    "REPEATS",
    "Choice",
    "ChoiceCache",
    "candidates",
    "decide",
    "faster_layout",
    "measuring_wanted",
    "model_choice",
    "paired_ratio",
    "time_interleaved",
    "wins",
]

# a plan needing more than 1 / MIN_MAC_RATIO of the dense multiply-adds is not timed. 2.0 until
# issue #16's runs on two CPUs, where a 1x1 plan at 1/1.97 of the dense multiply-adds (matrix
# products as efficient as the dense conv's) ran 1.08-1.24x faster than it and was never timed
MIN_MAC_RATIO = 1.5
MODEL_MAC_RATIO = 4.0
MAX_MERGED = 2
REPEATS = 7
PRUNE_AFTER, PRUNE_RATIO = 3, 1.5
# a plan must beat the dense conv by this factor to be chosen (timing noise). 0.8 until
# issue #16's quiet-machine run, where it turned down factorized plans measured 1.13-1.29x
# faster than the dense conv in the fine-tuning step; the best-time criterion and the second
# round (see decide) are what guard against a noisy first measurement
MARGIN = 0.9
# entries of one ChoiceCache: a ResNet-50 has 53 convolutions, so this is about 100 input
# sizes per layer and regime; each new one costs a measurement, and an entry (key and choice)
# about a kilobyte, so the bound only matters to a long-lived process fed ever new sizes
MAX_CACHE_ENTRIES = 1 << 14

_K = TypeVar("_K")
_V = TypeVar("_V")


class ChoiceCache(Generic[_K, _V]):
    """A bounded store of choices: at most ``maxsize`` entries (``MAX_CACHE_ENTRIES`` by
    default); setting a new key beyond that drops the least recently used one (looked up or
    set), which is measured again if it comes back. Safe to use from several threads (one
    lock; ``conv2d`` may run in a thread pool). Values are never None (:meth:`get` answers
    None for a miss).

    Raises
    ------
    TypeError, ValueError
        ``maxsize`` is not an int, or is below 1.
    """

    def __init__(self, maxsize: int = MAX_CACHE_ENTRIES) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        """The value for ``key`` (now the most recently used), or None if absent."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def __setitem__(self, key: _K, value: _V) -> None:
        """Keep ``value`` for ``key`` as the most recently used entry, dropping the least
        recently used ones beyond ``maxsize``."""
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def copy(self) -> dict[_K, _V]:
        """The entries, least recently used first, as a plain dict."""
        with self._lock:
            return dict(self._entries)


class Choice(NamedTuple):
    """What ``auto`` runs: ``method`` "reconstructed" (the dense conv), "factorized" (every
    factor its own stage) or "merged" (adjacent factors merged by ``grouping``, lengths of
    consecutive runs), with the plan's ``layout``."""

    method: str
    layout: str
    grouping: tuple[int, ...] = ()


DENSE = Choice("reconstructed", "nchw")


def candidates(key: ConvKey, layouts: tuple[str, ...] = ("nhwc", "nchw")) -> dict[str, Choice]:
    """The plans worth timing for ``key`` besides the dense conv, by candidate name: the
    fully factorized plan in ``layouts`` ("nhwc", "nchw"), and the ``MAX_MERGED`` merged
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
        out |= {lay: Choice("factorized", lay, full) for lay in layouts}
    merged = sorted((c, g) for c, g in scored if g != full)[:MAX_MERGED]
    for _, g in merged:
        out["nhwc:" + "+".join(map(str, g))] = Choice("merged", "nhwc", g)
    return out


def measuring_wanted(measure: bool | None) -> bool:
    """The ``measure`` switch: False never measures; None measures unless the environment
    variable ``SEKRON_AUTO_MEASURE`` is ``0`` or ``false``."""
    if measure is False:
        return False
    env = os.environ.get("SEKRON_AUTO_MEASURE", "1").strip().lower()
    return not (measure is None and env in ("0", "false"))


def model_choice(key: ConvKey) -> Choice:
    """The cost model's guess: the fully factorized plan when its MAC ratio is at least
    ``MODEL_MAC_RATIO``, else the dense conv."""
    plan = key.plan("nhwc")
    dense = dense_macs(key.shapes, key.in_shape, key.stride, key.padding, key.dilation)
    if dense >= MODEL_MAC_RATIO * plan.macs:
        return Choice("factorized", "nhwc", (1,) * len(key.shapes))
    return DENSE


def time_interleaved(
    fns: dict[str, Callable[[], Any]], sync: Callable[[], None]
) -> dict[str, list[float]]:
    """``REPEATS`` timings (s) of each candidate, interleaved (every repetition runs each
    once, in rotating order), after one warm-up each; ``sync`` waits for queued work. After
    ``PRUNE_AFTER`` repetitions a candidate whose paired ratio to "dense" exceeds
    ``PRUNE_RATIO`` stops being timed: its list stays short, and it is not chosen."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(REPEATS):
        if rep == PRUNE_AFTER and "dense" in times:
            names = [n for n in names if n == "dense" or not _hopeless(times, n)]
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            sync()
            t0 = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def _hopeless(times: dict[str, list[float]], name: str) -> bool:
    return paired_ratio(times[name], times["dense"]) > PRUNE_RATIO


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]``: runs of the same repetition are close
    in time, so a load change on a shared machine affects both."""
    return statistics.median(a / max(b, 1e-12) for a, b in zip(num, den, strict=True))


def wins(fact: list[float], dense: list[float]) -> bool:
    """Whether the plan's times beat the dense ones by ``MARGIN``, both paired (robust to
    a load change during the measurement) and at their best (a dense conv that happened to be
    slow throughout the measurement, as some memory-bound layers are at times, must not make
    the plan look faster than it is)."""
    return paired_ratio(fact, dense) < MARGIN and min(fact) < MARGIN * min(dense)


def faster_layout(timings: dict[str, list[float]]) -> str:
    """The layout ``method="factorized"`` runs, from timings of its plan in "nhwc" and
    "nchw": "nchw" only if it is faster than "nhwc" both paired and at its best (as
    :func:`wins` asks of a plan against the dense conv, with no margin: either layout never
    builds the kernel, so a wrong pick between two close ones costs little)."""
    fast, slow = timings["nchw"], timings["nhwc"]
    if paired_ratio(fast, slow) < 1.0 and min(fast) < min(slow):
        return "nchw"
    return "nhwc"


def decide(
    plans: dict[str, Choice],
    timings: dict[str, list[float]],
    confirm: Callable[[str], dict[str, list[float]]],
) -> Choice:
    """The choice from ``timings`` of "dense" and ``plans``; ``confirm(name)`` times "dense"
    and that plan once more (a second, independent round before a plan is chosen)."""
    ratios = {
        name: paired_ratio(timings[name], timings["dense"])
        for name in plans
        if len(timings[name]) == len(timings["dense"])  # not pruned
    }
    if not ratios:
        return DENSE
    best = min(ratios, key=ratios.__getitem__)
    if not wins(timings[best], timings["dense"]):
        return DENSE
    again = confirm(best)
    if len(again[best]) != len(again["dense"]):  # pruned as hopeless in the second round
        return DENSE
    if wins(timings[best] + again[best], timings["dense"] + again["dense"]):
        return plans[best]
    return DENSE
