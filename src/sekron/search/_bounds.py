"""Certified lower bounds on a configuration's error, and the Pareto front of the candidates.

A nested structure of ranks (R_1..R_{S-1}) has rank at most R_1 in the unfolding
``(a1 | rest)`` and at most R_1⋯R_{S-1} in ``(a1 ∘ .. ∘ a_{S-1} | a_S)``; a chain has rank R_k
in ``(a1 ∘ .. ∘ ak | rest)``. Eckart-Young on those spectra bounds the error of every ranks
within a budget from below (all values here are squared absolute errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _ranks
from .._typing import Form
from ._kernels import Spectrum
from ._results import Candidate

__all__ = ["lower2", "pareto_front", "partial_nested_bound2"]


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates not dominated in (n_params, rel_error), lowest error first.

    Examples
    --------
    >>> from sekron.search import Candidate, pareto_front
    >>> a = Candidate(((2,), (2,)), "nested", (1,), 4, 0.5)
    >>> b = Candidate(((2,), (2,)), "nested", (2,), 8, 0.1)
    >>> c = Candidate(((2,), (2,)), "chain", (2,), 9, 0.2)
    >>> [x.rel_error for x in pareto_front([a, b, c])]
    [0.1, 0.5]
    """
    order = sorted(cands, key=lambda c: (c.rel_error, c.n_params))
    front: list[Candidate] = []
    best_params = None
    for c in order:
        if best_params is None or c.n_params < best_params:
            front.append(c)
            best_params = c.n_params
    return front


def lower2(
    first: Spectrum, last: Spectrum, form: Form, d: Sequence[int], caps: Sequence[int], budget: int
) -> float:
    """Certified lower bound on the squared error of any ranks of a configuration within budget.

    ``first`` is the spectrum of ``(a1 | rest)``, ``last`` that of ``(a1..a_{S-1} | a_S)``. Any
    structure has rank <= R_1 in the first and rank <= P (nested: R_1⋯R_{S-1}; chain:
    R_{S-1}) in the last; Eckart-Young on both, minimised over R_1 with the largest last rank
    the budget then allows.
    """
    R1 = np.arange(1, caps[0] + 1)
    rest = budget - R1 * d[0] - sum(d[1:-2])
    if form == "nested":
        # P = R_1⋯R_{S-1}: Σ_{k>=2} P_k d_k <= rest and P_k <= P, so P (d_{S-1} + d_S) <= rest;
        # and P is a multiple of R_1
        P = rest // (d[-2] + d[-1]) // R1 * R1
    else:
        # R_{S-1} (R_{S-2} d_{S-1} + d_S) <= rest, R_{S-2} >= 1 (= R_1 when S = 3)
        left: Any = R1 if len(d) == 3 else 1
        P = rest // (left * d[-2] + d[-1])
    ok = P >= 1
    if not ok.any():
        return np.inf
    t1 = first.tails_at(R1[ok])
    t2 = last.tails_at(P[ok])
    return float(np.min(np.maximum(t1, t2)))


def partial_nested_bound2(
    tail1: np.ndarray, sv2: np.ndarray, d: Sequence[int], budget: int
) -> float:
    """Lower bound on the squared error of a nested 3-factor tree at any ranks within budget,
    from its level-1 tail and the first ``k = len(sv2)`` level-2 branches only.

    For R_1 <= k this is the exact error at the largest R_2 the budget allows (the error falls
    as R_2 grows); for R_1 > k the branches not yet computed are bounded by 0.
    """
    k, m = sv2.shape
    R1 = np.arange(1, tail1.shape[0] + 1)
    R2 = np.minimum(m, (budget - R1 * d[0]) // (R1 * (d[1] + d[2])))
    ok = R2 >= 1
    if not ok.any():
        return np.inf
    R1, R2 = R1[ok], R2[ok]
    # tails[r, j] = Σ_{i >= j} sv2[r, i]: branch r's squared error at rank j (j = 0..m); C[q, j]
    # sums tails[r, j] over the first q branches
    tails = np.concatenate([_ranks.suffix_sums(sv2), np.zeros((k, 1))], axis=1)
    C = np.concatenate([np.zeros((1, m + 1)), np.cumsum(tails, axis=0)])
    return float(np.min(tail1[R1 - 1] + C[np.minimum(R1, k), R2]))
