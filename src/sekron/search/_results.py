"""The results of a search: one :class:`Candidate` per evaluated structure, and the
:class:`SearchResult` holding the Pareto front of them (both immutable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from .._typing import Form, Ranks, Shapes
from ..decomposition import decompose
from ..tensor import SeKronTensor
from ._macs import conv_macs

__all__ = ["Candidate", "SearchResult"]


@dataclass(frozen=True)
class Candidate:
    """One evaluated SeKron structure: factor shapes, form and the best ranks within the budget.

    Attributes
    ----------
    shapes : tuple of S tuples of N ints
    form : {"nested", "chain"}
        For S = 2 the two forms coincide; such candidates are reported as ``"nested"``.
    ranks : tuple of S - 1 ints
    n_params : int
        Parameters of the structure at these ranks.
    rel_error : float
        Exact relative Frobenius error ``||W - Ŵ|| / ||W||`` of :meth:`to_sekron`'s result:
        the greedy (one pass of SVDs) error, or for a refined candidate the measured error of
        its joint fit.
    refined : bool
        True for a joint fit of the search's second stage (alternating least squares from a
        warm start); False for a greedy SVD fit.
    source : str
        Where a refined candidate started: ``"greedy"`` (a greedy candidate at its ranks),
        ``"split"`` (a configuration of the greedy top at other ranks), ``"cp"``, ``"tt"``,
        ``"tucker2"``, ``"cp-grouped"`` (the classical families' fits) or ``"warm-start"``
        (given by the caller). ``"greedy"`` for unrefined candidates.
    greedy_error : float or None
        The greedy error of the same structure when the start was a greedy candidate.
    """

    shapes: Shapes
    form: Form
    ranks: Ranks
    n_params: int
    rel_error: float
    refined: bool = False
    source: str = "greedy"
    greedy_error: float | None = None
    _tensor: Any = field(default=None, repr=False, compare=False)
    _fit: SeKronTensor | None = field(default=None, repr=False, compare=False)

    @property
    def n_factors(self) -> int:
        return len(self.shapes)

    @property
    def macs(self) -> int | None:
        """MACs per output position of the factorized conv plan (``sekron.torch.conv2d``;
        :func:`sekron.torch.sekron_conv_macs` with ``in_hw=None``) for a 4-way conv weight
        ``(F, C, kh, kw)``; None for other tensors. The dense conv costs ``F*C*kh*kw``."""
        if len(self.shapes[0]) != 4:
            return None
        return int(conv_macs(self.shapes, self.ranks, self.form))

    def to_sekron(self, tensor: Any = None) -> SeKronTensor:
        """The SeKronTensor this candidate describes.

        A greedy candidate is ``decompose(tensor, shapes, rank=ranks, form=form)``; a refined
        one is its joint fit of the searched tensor, as the search computed it.

        Parameters
        ----------
        tensor : array, optional
            Defaults to the tensor that was searched. A refined candidate takes no other tensor
            (refit it with ``sekron.refine(tensor, candidate.to_sekron())``).

        Raises
        ------
        ValueError
            No tensor to decompose, or another tensor for a refined candidate.
        """
        if self._fit is not None:
            if tensor is not None and tensor is not self._tensor:
                raise ValueError(
                    "this Candidate is a refined fit of the searched tensor; to_sekron() takes "
                    "no other tensor. Refit it with sekron.refine(tensor, candidate.to_sekron())."
                )
            return self._fit
        t = self._tensor if tensor is None else tensor
        if t is None:
            raise ValueError("this Candidate holds no tensor; pass the tensor to to_sekron().")
        return decompose(t, self.shapes, rank=self.ranks, form=self.form)

    def describe(self) -> str:
        """A short text such as ``(16,8,3,1)⊗(8,8,1,3) nested r=(12,)``."""
        shapes = "⊗".join("(" + ",".join(map(str, s)) + ")" for s in self.shapes)
        ranks = ",".join(map(str, self.ranks))
        tag = f", refined from {self.source}" if self.refined else ""
        return f"{shapes} {self.form} r=({ranks}){tag}"


@dataclass(frozen=True, eq=False, repr=False)
class SearchResult(Sequence[Candidate]):
    """The Pareto front (parameters vs error) of the greedy candidates, best first, and the
    joint fits of the second stage.

    ``result[0]`` (also ``result.greedy_best``) has the lowest greedy error within the budget;
    going down the list, the error rises and the parameter count falls. Every greedy candidate
    evaluated (one per configuration and form) is in ``result.all``. ``result.refined`` holds the
    joint fits, lowest error first, and ``result.best`` is the lowest error of either stage.

    A result is immutable.

    Attributes
    ----------
    best : Candidate
        The lowest error found: the best refined candidate when the second stage ran (it is
        never worse than the greedy best, a warm start of it), else the greedy best.
    greedy_best : Candidate
        The lowest greedy error, ``result[0]``.
    front : tuple of Candidate
        The Pareto front of the greedy candidates, lowest error first (what indexing the
        result gives).
    refined : tuple of Candidate
        The joint fits of the second stage (``refine`` sweeps), lowest error first; empty when
        ``refine=0`` or the search was interrupted.
    sweeps : int
        ALS sweeps of the second stage (0: greedy only).
    all : tuple of Candidate
        All evaluated candidates, in evaluation order.
    budget : int
        The parameter budget ``max_params`` (numel / compression when given a compression).
    max_macs : int or None
        The MAC budget per output position (``max_macs``, or ``numel / mac_compression``);
        every candidate's :attr:`Candidate.macs` is within it. None without one.
    tensor_shape : tuple of int
    n_configs : int
        Configurations (shapes x form) considered after the budget and ``max_configs`` filters.
    n_pruned : int
        Configurations skipped because their certified lower bound could not beat the best error
        (before their evaluation, or part-way through a nested 3-factor tree).
    interrupted : bool
        True when the search was stopped by KeyboardInterrupt; the result holds what was found.
    timed_out : bool
        True when ``max_seconds`` ran out before every configuration was evaluated or pruned.
    bound : float
        Certified lower bound on the relative error of every configuration that was *not*
        evaluated (pruned, or left when stopped early); ``inf`` when every one was evaluated.
        No structure of a skipped configuration, at any ranks within the budget, can have a
        lower error than this (Eckart-Young on unfoldings, see :mod:`sekron.search`).
    certified : bool
        ``greedy_best.rel_error <= bound``: the greedy best is the best *greedy* fit over all
        configurations, not only the evaluated ones. Always true after a complete search. It is
        a statement about greedy fits only: it says nothing about joint (refined) fits, whose
        errors can be lower.
    n_open : int
        Configurations left unevaluated by a stopped search (``max_seconds``, or Ctrl-C) whose
        certified lower bound is below the best error found: only these could still beat it.
        0 after a complete search, and whenever the best is certified.
    seconds : float
        Wall time of the search.
    kernel_seconds : float
        Wall time spent inside its SVD, Gram and eigenvalue kernels (level-1 spectra and
        remainders, deeper levels); ``seconds - kernel_seconds`` is the bookkeeping.
    """

    front: tuple[Candidate, ...]
    all: tuple[Candidate, ...]
    budget: int
    tensor_shape: tuple[int, ...]
    n_configs: int
    n_pruned: int
    interrupted: bool
    seconds: float
    timed_out: bool = False
    bound: float = float("inf")
    n_open: int = 0
    kernel_seconds: float = 0.0
    refined: tuple[Candidate, ...] = ()
    sweeps: int = 0
    max_macs: int | None = None

    @overload
    def __getitem__(self, i: int) -> Candidate: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Candidate, ...]: ...
    def __getitem__(self, i: int | slice) -> Candidate | tuple[Candidate, ...]:
        return self.front[i]

    def __len__(self) -> int:
        return len(self.front)

    @property
    def best(self) -> Candidate:
        if self.refined and self.refined[0].rel_error <= self.front[0].rel_error:
            return self.refined[0]
        return self.front[0]

    @property
    def greedy_best(self) -> Candidate:
        return self.front[0]

    @property
    def certified(self) -> bool:
        return self.front[0].rel_error <= self.bound * (1 + 1e-12)

    def __repr__(self) -> str:
        head = (
            f"SearchResult for shape {self.tensor_shape}, budget {self.budget:,} params"
            + ("" if self.max_macs is None else f" and {self.max_macs:,} MACs/position")
            + ": "
            f"{len(self)} on the front of {len(self.all)} evaluated"
            + (f" ({self.n_pruned} pruned)" if self.n_pruned else "")
            + (", INTERRUPTED" if self.interrupted else "")
            + (", TIME LIMIT" if self.timed_out else "")
        )
        if not self.certified:
            head += (
                f"\n  not certified: {self.n_open:,} configurations left unevaluated may reach "
                f"greedy rel. error {self.bound:.4f}"
            )
        conv = len(self.tensor_shape) == 4  # a conv weight: each plan's MACs per position

        def line(c: Candidate) -> str:
            macs = f"  {c.macs:>11,} MACs" if conv else ""
            return f"  {c.rel_error:.4f}  {c.n_params:>10,} params{macs}  {c.describe()}"

        lines = [head]
        if self.refined:
            lines.append(f"  joint fits ({self.sweeps} ALS sweeps), best first:")
            lines += [line(c) for c in self.refined[:5]]
            lines.append("  greedy fits (one pass of SVDs), the Pareto front:")
        lines += [line(c) for c in self.front[:10]]
        if len(self) > 10:
            lines.append(f"  ... {len(self) - 10} more")
        return "\n".join(lines)
