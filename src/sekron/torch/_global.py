"""``compress(..., allocation="global")``: one parameter budget shared out across the layers.

Three phases, the first and last one task per layer (top-level functions of picklable data,
so an executor can run them):

1. :func:`front_task`: the layer's greedy search at a ladder of budgets (ratios ``c/4 .. 4c``,
   ``sqrt(2)`` apart, one run sharing every SVD), within its MAC budget; the union of the
   candidates is its exact error-vs-parameters front (errors from singular values);
2. :func:`sekron.torch._allocation.allocate`: a knapsack over those fronts minimising the
   summed (weighted) squared relative error within the model's budget, the sum of the
   per-layer budgets ``numel_l / c``;
3. :func:`refine_task`: the joint-fit stage of the search at the layer's allocated count, from
   the greedy candidates within it (its error is at most the allocated candidate's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from torch import nn

from .._validation import _type_name, budget_from_compression, check_number
from ._allocation import allocate, uniform_choice
from ._policy import (
    Factorized,
    FactorizeOptions,
    as_float64_array,
    search_greedy,
    search_joint,
    search_note,
)

__all__ = ["allocate_globally", "check_allocation", "front_task", "refine_task"]

#: The budgets of a layer's front: ``numel / (c * step)``.
RATIO_STEPS = tuple(2 ** (k / 2) for k in range(-4, 5))

Mapper = Callable[[Callable[..., Any], Sequence[Any], Mapping[str, Any]], Sequence[Any]]


class LayerFront(NamedTuple):
    """A layer's greedy candidates over the budget ladder and its run at the largest budget."""

    candidates: tuple[Any, ...]  # every greedy Candidate evaluated, at any budget
    front: tuple[Any, ...]  # their Pareto front (n_params, rel_error), lowest error first
    result: Any  # the SearchResult at the largest budget (certificate, template)


def check_allocation(
    model: nn.Module, options: FactorizeOptions, allocation: str, weights: object
) -> dict[str, float] | None:
    """The checked per-layer weights (None: all 1) of a checked ``allocation``."""
    if allocation == "global" and options.structure != "search":
        raise ValueError(
            "allocation='global' needs structure='search' (it shares a budget over the "
            f"layers' searched fronts); got structure={options.structure!r}."
        )
    if weights is None:
        return None
    if allocation != "global":
        raise ValueError(
            f"weights applies to allocation='global' only; got allocation={allocation!r}."
        )
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weights must be a dict {{layer name: weight}}; got {_type_name(weights)}."
        )
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    out = {}
    for name, w in weights.items():
        if name not in convs:
            raise ValueError(
                f"weights names {name!r}, which is not an nn.Conv2d of the model; its conv "
                f"layers are {convs}."
            )
        out[name] = check_number(w, f"weights[{name!r}]", at_least=0.0)
    return out


def front_task(task: Any, *, options: FactorizeOptions) -> LayerFront | str:
    """Phase 1 for one layer (``task``: name, weight, shapes), or why it cannot be factorized."""
    from ..search._bounds import pareto_front

    assert options.compression is not None
    numel = int(task.weight.numel())
    ratios = [options.compression * s for s in RATIO_STEPS if options.compression * s > 1]
    budgets = sorted({budget_from_compression(r, numel) for r in ratios}, reverse=True)
    try:
        results = search_greedy(as_float64_array(task.weight), options, budgets)
    except ValueError as exc:
        return f"cannot factorize: {exc}"
    found = [r for r in results if r is not None]
    seen: dict[Any, Any] = {}
    for r in found:
        for c in r.all:
            seen.setdefault((c.shapes, c.form, c.ranks), c)
    cands = tuple(seen.values())
    return LayerFront(cands, tuple(pareto_front(cands)), found[0])


def refine_task(item: tuple[Any, LayerFront, int], *, options: FactorizeOptions) -> Factorized:
    """Phase 3 for one layer: the joint fits at its allocated count ``item[2]``, from the
    greedy candidates within it."""
    from ..search._bounds import pareto_front

    task, lf, budget = item
    within = tuple(c for c in lf.candidates if c.n_params <= budget)
    greedy = replace(lf.result, front=tuple(pareto_front(within)), all=within, budget=budget)
    res = search_joint(lf.result.all[0]._tensor, options, greedy)
    return Factorized(res.best.to_sekron(), *search_note(lf.result, options.max_seconds))


def allocate_globally(
    tasks: Sequence[Any],
    options: FactorizeOptions,
    weights: Mapping[str, float] | None,
    run: Mapper,
) -> list[Factorized | str]:
    """Every layer's factorization under one budget; ``run(fn, items, shared)`` maps a phase's
    task function over its items (in this process or on an executor)."""
    assert options.compression is not None
    fronts = list(run(front_task, tasks, {"options": options}))
    live = [i for i, f in enumerate(fronts) if isinstance(f, LayerFront)]
    out: list[Factorized | str] = [f if isinstance(f, str) else "" for f in fronts]
    if not live:
        return out
    options_l = [[(c.n_params, c.rel_error**2) for c in fronts[i].front] for i in live]
    own = [budget_from_compression(options.compression, int(tasks[i].weight.numel())) for i in live]
    w = [1.0 if weights is None else weights.get(tasks[i].name, 1.0) for i in live]
    uniform = uniform_choice(options_l, own)
    choice = allocate(options_l, sum(own), w, incumbents=[uniform] if uniform else [])
    if choice is None:
        for i in live:
            out[i] = "cannot factorize: no structure of every layer fits the model's budget"
        return out
    items = [
        (tasks[i], fronts[i], fronts[i].front[k].n_params)
        for i, k in zip(live, choice, strict=True)
    ]
    for i, done in zip(live, run(refine_task, items, {"options": options}), strict=True):
        out[i] = done
    return out
