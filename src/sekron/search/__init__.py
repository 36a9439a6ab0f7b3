"""search(): the SeKron factor shapes, form and ranks with the lowest error within a budget.

Every configuration is scored by its *exact* error computed from singular values (theory docs); the
full tensor is never rebuilt. The expensive parts are shared:

- **Level 1.** The singular values of R(W) for ``(a1 | rest)`` do not depend on how ``rest``
  splits into later factors (that is a column permutation), so each first-factor shape ``a1`` is
  decomposed once, at the largest rank any configuration starting with it can afford. These are
  also the spectra of every 2-factor configuration and of every unfolding
  ``(a1 ∘ .. ∘ ak | rest)`` that the chain form needs.
- **Lower bounds.** A nested structure of ranks (R_1..R_{S-1}) has rank at most R_1 in the
  unfolding ``(a1 | rest)`` and at most R_1⋯R_{S-1} in ``(a1 ∘ .. ∘ a_{S-1} | a_S)``; a chain has
  rank R_k in ``(a1 ∘ .. ∘ ak | rest)``. Eckart-Young on those (already computed) spectra gives a
  certified lower bound on each configuration's error within the budget. Configurations with
  S >= 3 are evaluated in increasing order of that bound, and those whose bound cannot beat the
  best error found so far are skipped (``exhaustive=True`` evaluates all of them).
- **Trees given up part-way.** A nested 3-factor tree computes its level-2 branches in growing
  chunks, largest level-1 singular value first. After each chunk, the exact errors of the ranks
  whose branches are all in, and for larger R_1 the level-1 tail plus the branches so far,
  bound every rank choice within the budget; once that bound cannot beat the best error, the
  rest of the tree is skipped (counted as pruned).
- **Deeper levels** are one batched SVD per level, capped at the ranks that fit the budget.

- **Joint fits.** A second stage refines a shortlist of warm starts by alternating least
  squares and ranks it by the refined error (``_joint``); its errors are measured, and the
  certificate above is about greedy fits only.

Layout: ``_configs`` (configuration enumeration), ``_bounds`` (lower bounds, Pareto front),
``_kernels`` (the array work), ``_parallel`` (worker threads, BLAS limits), ``_results``
(:class:`Candidate`, :class:`SearchResult`), ``_phases`` (one greedy run, phase by phase),
``_remote`` (the deeper configurations as tasks on an executor, replayed in the local order),
``_joint`` (the joint-fit stage) and ``_api`` (:func:`search`).
"""

from ._api import search
from ._bounds import pareto_front
from ._configs import enumerate_configs
from ._results import Candidate, SearchResult

__all__ = ["Candidate", "SearchResult", "enumerate_configs", "pareto_front", "search"]
