"""One parameter budget for a whole model: a knapsack over the layers' error-vs-parameters fronts.

Each layer ``j`` offers a front of options ``(n_params, err2)`` (``err2`` the squared relative
error of the weight, exact from the search's singular values). :func:`allocate` picks one
option per layer to minimise ``sum_j w_j * err2_j`` subject to ``sum_j n_params_j <= budget``.
It is the multiple-choice knapsack problem, solved here by:

1. **an exact dynamic program on the budget in units**: when the budget is at most ``grid``
   units of ``g`` (the gcd of every option's parameter count), the DP is exact: the optimum.
   Otherwise, with ``unit = budget / grid``, each option costs ``ceil(n_params / unit)``
   units, and the DP finds the exact optimum of that problem. Rounding costs *up* keeps the
   result within the true budget, and it is optimal among every allocation that leaves at
   least ``n_layers * unit`` parameters unused (rounding adds less than one unit per layer);
2. **an exact fix-up**: the given incumbents (e.g. the uniform per-layer ratio) are evaluated
   in exact integers and the DP's answer is replaced by a better one; then, while exact budget
   is left, the single-layer upgrade with the largest error reduction that still fits is
   taken.

So the result never exceeds the budget, and is never worse than any incumbent. Pure Python and
numpy; no arrays of the model are touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

import numpy as np

__all__ = ["allocate", "objective", "uniform_choice"]

#: Units of the discretised budget in the dynamic program.
GRID = 1 << 16


def objective(
    fronts: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float], choice: Sequence[int]
) -> tuple[int, float]:
    """``(sum of n_params, sum of w * err2)`` of one option per layer."""
    params = sum(fronts[j][i][0] for j, i in enumerate(choice))
    err = sum(w * fronts[j][i][1] for j, (w, i) in enumerate(zip(weights, choice, strict=True)))
    return params, float(err)


def uniform_choice(
    fronts: Sequence[Sequence[tuple[int, float]]], budgets: Sequence[int]
) -> list[int] | None:
    """Per layer, the lowest-error option within its own budget (None if one has none)."""
    out = []
    for front, b in zip(fronts, budgets, strict=True):
        fit = [i for i, (p, _) in enumerate(front) if p <= b]
        if not fit:
            return None
        out.append(min(fit, key=lambda i: (front[i][1], front[i][0])))
    return out


def allocate(
    fronts: Sequence[Sequence[tuple[int, float]]],
    budget: int,
    weights: Sequence[float] | None = None,
    *,
    incumbents: Sequence[Sequence[int]] = (),
    grid: int = GRID,
) -> list[int] | None:
    """One option index per layer minimising ``sum w * err2`` within ``sum n_params <= budget``.

    Parameters
    ----------
    fronts : sequence of sequences of (int, float)
        Per layer, its options ``(n_params, err2)``; each layer needs at least one.
    budget : int
        The total parameter budget.
    weights : sequence of float >= 0, optional
        Per-layer weights of the squared errors (default all 1).
    incumbents : sequence of choices
        Allocations to beat (each one index per layer); those within the budget are candidates.
    grid : int
        Units of the discretised budget.

    Returns
    -------
    list of int or None
        None when even the cheapest option of every layer exceeds the budget.

    Examples
    --------
    >>> fronts = [[(10, 1.0), (20, 0.2), (40, 0.0)], [(10, 0.5), (20, 0.4), (40, 0.1)]]
    >>> allocate(fronts, 60)  # 20 + 40: 0.2 + 0.1, better than 40 + 20 (0.4) or 20 + 20 (0.6)
    [1, 2]
    """
    w = [1.0] * len(fronts) if weights is None else [float(v) for v in weights]
    if sum(min(p for p, _ in f) for f in fronts) > budget:
        return None
    cheapest = [min(range(len(f)), key=lambda i: (f[i][0], f[i][1])) for f in fronts]
    best: list[int] | None = None
    for choice in [_dp(fronts, budget, w, grid), *incumbents, cheapest]:
        if choice is None or objective(fronts, w, choice)[0] > budget:
            continue
        if best is None or objective(fronts, w, choice)[1] < objective(fronts, w, best)[1]:
            best = list(choice)
    assert best is not None  # the cheapest options fit
    return _upgrade(fronts, w, best, budget)


def _dp(
    fronts: Sequence[Sequence[tuple[int, float]]], budget: int, w: list[float], grid: int
) -> list[int] | None:
    """The exact optimum with costs in units: exact units of ``g``, the gcd of every option's
    count, when ``budget // g <= grid``; else costs rounded up to units of ``budget / grid`` (in
    integers, ``ceil(n_params * grid / budget)``, so ``sum cost <= grid`` still implies
    ``sum n_params <= budget``)."""
    g = 0
    for front in fronts:
        for p, _ in front:
            g = gcd(g, p)
    g = max(g, 1)
    exact = budget // g <= grid
    n_units = budget // g if exact else grid

    def cost(p: int) -> int:
        return p // g if exact else -(-p * grid // budget)

    n = n_units + 1
    value = np.zeros(n)  # value[u]: best objective of the layers so far within u units
    picks: list[np.ndarray] = []
    for j, front in enumerate(fronts):
        new = np.full(n, np.inf)
        pick = np.full(n, -1, dtype=np.int64)
        for i, (p, e2) in enumerate(front):
            c = cost(p)
            if c > n_units:
                continue
            cand = np.full(n, np.inf)
            cand[c:] = value[: n - c] + w[j] * e2
            better = cand < new
            new = np.where(better, cand, new)
            pick = np.where(better, i, pick)
        value = new
        picks.append(pick)
    if not np.isfinite(value[-1]):
        return None
    u = n_units  # walk back: layer j used its option's cost
    choice = [0] * len(fronts)
    for j in range(len(fronts) - 1, -1, -1):
        choice[j] = int(picks[j][u])
        u -= cost(fronts[j][choice[j]][0])
    return choice


def _upgrade(
    fronts: Sequence[Sequence[tuple[int, float]]],
    w: list[float],
    choice: list[int],
    budget: int,
) -> list[int]:
    """Spend what the rounding left: the best single-layer switch that fits, while one helps."""
    choice = list(choice)
    used = objective(fronts, w, choice)[0]
    while True:
        best = None
        for j, front in enumerate(fronts):
            p0, e0 = front[choice[j]]
            for i, (p, e2) in enumerate(front):
                gain = w[j] * (e0 - e2)
                if gain > 0 and used - p0 + p <= budget and (best is None or gain > best[0]):
                    best = (gain, j, i)
        if best is None:
            return choice
        _, j, i = best
        used += fronts[j][i][0] - fronts[j][choice[j]][0]
        choice[j] = i
