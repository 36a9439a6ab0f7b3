"""The public entry point :func:`search`, and the multi-budget run that :func:`sekron.compare`
shares: check once at the boundary, then run the phases of :mod:`sekron.search._phases`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from functools import partial
from math import prod
from typing import Any, cast

from .._backend import backend_name_of, get_backend, pow2_scale, scale_by
from .._executor import check_executor
from .._svd import METHODS
from .._typing import Form, SVDMethod
from .._validation import (
    budget_from_compression,
    check_bool,
    check_choice,
    check_compression,
    check_forms,
    check_int,
    check_max_seconds,
    check_positive_int,
    check_progress,
    check_tensor,
    check_threads,
)
from ..random import check_random_state
from ..tensor import SeKronTensor
from ._joint import joint_stage
from ._kernels import Kernels, Level1, on_device
from ._macs import mac_budget
from ._parallel import workers
from ._phases import (
    Progress,
    Tally,
    bound_and_order,
    evaluate_deep,
    finish,
    plan_jobs,
    score_two_factor,
    spectra_needed,
)
from ._remote import evaluate_deep_on
from ._results import Candidate, SearchResult

__all__ = ["run_greedy", "search", "with_joint_fits"]

#: Budgets above this act as it (every structure of any tensor fits far below it); the rank
#: arithmetic stays within int64.
MAX_BUDGET = 1 << 62


def search(
    tensor: Any,
    *,
    max_params: int | None = None,
    compression: float | None = None,
    max_factors: int = 3,
    forms: Sequence[Form] = ("nested", "chain"),
    max_configs: int | None = None,
    exhaustive: bool = False,
    max_seconds: float | None = None,
    svd: SVDMethod = "auto",
    random_state: Any = None,
    progress: bool | Callable[[int, int], Any] | None = None,
    threads: int | None = None,
    refine: int = 20,
    warm_starts: Sequence[SeKronTensor] | None = None,
    max_macs: int | None = None,
    mac_compression: float | None = None,
    executor: Executor | None = None,
) -> SearchResult:
    """Search factor shapes, form and ranks for the lowest SeKron error within a parameter budget
    (and, for a conv weight, a budget of multiply-accumulates).

    Two stages: a greedy stage scores every configuration by one pass of SVDs (exact errors,
    certified bounds), then a joint-fit stage refines a shortlist by alternating least squares
    and ranks it by the refined error (``refine=0`` skips it).

    Parameters
    ----------
    tensor : array
        Any N-way numpy, torch or jax array (1-D works: its single mode is factorized).
    max_params : int, optional
        Parameter budget (values above 2**62 act as 2**62). Give exactly one of
        ``max_params`` and ``compression``.
    compression : float > 1, optional
        Budget as a ratio: ``max_params = floor(numel / compression)``.
    max_factors : int >= 2
        Configurations with 2..max_factors factors are considered. Every factor has a size
        >= 2, so no configuration has more factors than the mode sizes have prime factors:
        a larger ``max_factors`` costs nothing.
    forms : sequence of {"nested", "chain"}
        Forms for S >= 3 (for S = 2 they coincide and one candidate is kept).
    max_configs : int, optional
        Keep only this many factor-shape configurations, the most balanced first (smallest
        variance of log factor size).
    exhaustive : bool
        Evaluate every configuration, even those whose certified lower bound cannot beat the best
        error found so far. The best candidate is the same either way; the front may then hold
        more candidates.
    max_seconds : float > 0, optional
        Stop evaluating configurations with S >= 3 after this much wall time (the shared
        level-1 spectra and every 2-factor configuration are always computed; they are exact
        from the spectra alone). Configurations are evaluated most promising first, so a
        stopped search returns the best found so far, with ``result.timed_out`` set and a
        certificate: ``result.bound`` is a certified lower bound on the error of every
        configuration left unevaluated, ``result.certified`` says whether the best is the
        best overall, and ``result.n_open`` counts the unevaluated configurations whose bound
        leaves them a chance to beat it.
    svd : {"auto", "exact", "gram", "randomized"}
        SVD kernel (see :func:`sekron.decompose`). ``"auto"`` uses the Gram kernel for the
        shared level-1 spectra.
    random_state : None, int or numpy Generator
        Seed for ``svd="randomized"``.
    progress : bool or callable, optional
        A progress bar on stderr (tqdm if installed, else a text line). ``None`` shows it only when
        stderr is a terminal; ``False`` disables it; a callable receives ``(done, total)``.
    threads : int >= 1, optional
        Threads for numpy input (default: the CPUs available). The many small factorizations
        are spread over this many worker threads, each with a single-threaded BLAS: for the
        duration of the call BLAS is limited to one thread (threadpoolctl; the caller's setting
        is restored). ``threads=1`` runs everything in the calling thread. torch and jax inputs
        run in the calling thread with their own threading (numpy's BLAS, which solves their
        Grams' eigenvalue problems, is limited to one thread too).
    refine : int >= 0
        ALS sweeps of the joint-fit stage (default 20; 0: greedy only). Its shortlist: the 8
        best greedy candidates at their ranks; for the 8 best configurations with S >= 3,
        lopsided rank splits ((R, 1), (1, R), ..., the free rank as large as the budget
        allows, above a level's SVD rank too) and a ladder of first ranks; the classical
        families' fits at an equal parameter count (CP, TT, Tucker-2 as the chain
        (F)(H, W)(C)), whose factors are one per tensor mode; and the CP fit with its modes
        grouped. Every start gets 5 sweeps, the best 6 the rest. ALS never increases an
        error, so ``result.best`` is never worse than any start: not than the greedy best,
        nor than the CP, TT and Tucker-2 fits within the same budget.
    warm_starts : sequence of SeKronTensor, optional
        Starts for the joint-fit stage in place of the search's own CP, TT and Tucker-2 fits
        (:func:`sekron.compare` passes its family fits, so the searched error is at most
        theirs). Each must have the tensor's shape, kind and dtype and at most ``max_params``
        parameters.
    max_macs : int >= 1, optional
        For a conv weight ``(F, C, kh, kw)``: a budget on the MACs **per output position** of
        the factorized plan that :func:`sekron.torch.conv2d` runs, counted as
        :func:`sekron.torch.sekron_conv_macs` counts them with ``in_hw=None`` (for a stride-1
        conv with "same" padding, :func:`sekron.torch.count_macs` is this times the output
        positions). The dense conv costs ``F*C*kh*kw`` per position. Every candidate, greedy
        and refined, is within both budgets: the result is the best error within both.
    mac_compression : float >= 1, optional
        The MAC budget as a ratio: ``max_macs = floor(F*C*kh*kw / mac_compression)``; 1 means
        "no more MACs than the dense conv". At most one of ``max_macs`` and
        ``mac_compression``.
    executor : concurrent.futures.Executor, optional
        Where the configurations with S >= 3 are evaluated once the level-1 spectra are known:
        one task per first factor (for a Dask cluster, ``Client(...).get_executor()``; the
        tensor and spectra are shipped to each worker once). Each task prunes against the best
        error known when it was sent, and the outcomes are replayed in the local order, so the
        result is the local run's whatever the workers or the order tasks finish in (with
        ``svd="randomized"`` each task draws from its own seed instead). ``threads`` then says
        how each task splits its work (run in one thread: the same numbers as ``threads``
        local threads). None (default): everything runs here.

    Returns
    -------
    SearchResult
        The Pareto front of the greedy candidates, lowest error first, and the joint fits
        (``.refined``); ``.best`` is the lowest error of either, ``.greedy_best`` the greedy
        one. The certificate (``.bound``, ``.certified``, ``.n_open``) is about greedy fits
        only.

    Raises
    ------
    TypeError
        Unsupported array or argument kinds (a bool option given as a string, a masked array).
    ValueError
        Neither or both of ``max_params``/``compression``, ``compression <= 1`` (or too large
        for a float), a budget below the smallest structure, ``max_factors < 2``, NaN or Inf
        in the tensor, a tensor with no configuration at all, or a warm start of another
        shape or above the budget. Both ``max_macs`` and ``mac_compression``, ``max_macs``
        not >= 1, ``mac_compression < 1``, a MAC budget for a tensor that is not 4-way, or no
        structure within both budgets.
    KeyboardInterrupt
        Only when interrupted before any candidate was evaluated. Otherwise Ctrl-C returns what
        was found so far, with ``result.interrupted = True``.

    Notes
    -----
    For each configuration, ranks are chosen from one SVD tree capped at the budget: nested by the
    exact error table of every rank tuple, chain by the certified bound ``Σ_k ε_k²`` (as in
    :func:`sekron.decompose`); each candidate's ``rel_error`` is then the exact error of the
    structure ``decompose(tensor, shapes, rank=ranks, form=form)`` returns, computed from singular
    values. Errors are scale-free: the tensor is scaled once by an exact power of two, so
    entries near the float range's ends (1e±300 in float64, 1e±30 in float32) score like any
    other. S = 2 is globally optimal per configuration (Eckart-Young); for S >= 3 it is the
    paper's recursive SVD, not a joint optimum.

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.search import search
    >>> W = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    >>> res = search(W, compression=4, progress=False)
    >>> res.best.n_params <= W.size // 4
    True
    >>> st = res.best.to_sekron()
    >>> abs(st.rel_error - res.best.rel_error) < 1e-8
    True
    """
    t, backend = check_tensor(tensor)
    if (max_params is None) == (compression is None):
        raise ValueError(
            "give exactly one of max_params and compression; got "
            f"max_params={max_params!r}, compression={compression!r}."
        )
    if max_params is not None:
        budget = min(check_positive_int(max_params, "max_params"), MAX_BUDGET)
    else:
        budget = budget_from_compression(check_compression(compression), prod(t.shape))
    sweeps = check_int(refine, "refine", at_least=0)
    macs = mac_budget(max_macs, mac_compression, tuple(int(v) for v in t.shape))
    starts = None if warm_starts is None else _check_warm_starts(warm_starts, t, backend, budget)
    seconds = check_max_seconds(max_seconds)
    rng = check_random_state(random_state)
    n_threads = check_threads(threads)
    pool = check_executor(executor)
    start = time.perf_counter()
    found = run_greedy(
        t,
        [budget],
        max_factors=check_int(max_factors, "max_factors", at_least=2),
        forms=check_forms(forms),
        max_configs=None if max_configs is None else check_positive_int(max_configs, "max_configs"),
        svd=cast(SVDMethod, check_choice(svd, "svd", METHODS)),
        random_state=rng,
        exhaustive=check_bool(exhaustive, "exhaustive"),
        progress=check_progress(progress),
        max_seconds=seconds,
        threads=n_threads,
        max_macs=macs,
        executor=pool,
    )[0]
    if found is None:
        raise ValueError(
            f"no configuration fits the budget of {budget:,} parameters for shape {tuple(t.shape)}."
        )
    greedy = found
    deadline = None if seconds is None else start + seconds
    return with_joint_fits(
        t,
        tensor,
        greedy,
        sweeps=sweeps,
        warm_starts=starts,
        rng=rng,
        deadline=deadline,
        threads=n_threads,
    )


def with_joint_fits(
    t: Any,
    tensor: Any,
    greedy: SearchResult,
    *,
    sweeps: int,
    warm_starts: Sequence[SeKronTensor] | None,
    rng: Any,
    deadline: float | None,
    threads: int,
) -> SearchResult:
    """``greedy`` (a checked tensor ``t``'s greedy result) with the joint-fit stage's
    candidates; ``tensor`` is what the candidates keep (the caller's array). Starts above
    ``greedy.max_macs`` are left out."""
    if not sweeps or greedy.interrupted:
        return greedy
    start = time.perf_counter()
    try:
        joint = joint_stage(
            t,
            greedy.all,
            greedy.budget,
            sweeps=sweeps,
            warm_starts=warm_starts,
            random_state=int(rng.integers(2**31)),
            deadline=deadline,
            threads=threads,
            max_macs=greedy.max_macs,
        )
    except KeyboardInterrupt:
        return replace(greedy, interrupted=True)
    refined = tuple(
        Candidate(
            r.st.shapes,
            r.st.form,
            r.st.ranks,
            r.st.n_params,
            float(r.st.rel_error or 0.0),
            refined=True,
            source=r.source,
            greedy_error=r.greedy_error,
            _tensor=tensor,
            _fit=r.st,
        )
        for r in joint
    )
    return replace(
        greedy,
        refined=refined,
        sweeps=sweeps,
        seconds=greedy.seconds + (time.perf_counter() - start),
        timed_out=greedy.timed_out or (deadline is not None and time.perf_counter() > deadline),
    )


def _check_warm_starts(
    warm_starts: object, t: Any, backend: str, budget: int
) -> list[SeKronTensor]:
    if isinstance(warm_starts, str | bytes) or not isinstance(warm_starts, Sequence):
        raise TypeError(
            f"warm_starts must be a sequence of SeKronTensor; got {type(warm_starts).__name__}."
        )
    out = []
    for i, st in enumerate(warm_starts):
        if not isinstance(st, SeKronTensor):
            raise TypeError(f"warm_starts[{i}] must be a SeKronTensor; got {type(st).__name__}.")
        if tuple(st.shape) != tuple(t.shape):
            raise ValueError(
                f"warm_starts[{i}] has shape {tuple(st.shape)} but the tensor has shape "
                f"{tuple(t.shape)}."
            )
        if st.backend != backend or str(st.dtype) != str(t.dtype):
            raise TypeError(
                f"warm_starts[{i}] is {st.backend} {st.dtype} but the tensor is {backend} "
                f"{t.dtype}; give warm starts of the tensor's kind and dtype."
            )
        if st.n_params > budget:
            raise ValueError(
                f"warm_starts[{i}] has {st.n_params:,} parameters, above the budget {budget:,}."
            )
        out.append(st)
    return out


def run_greedy(
    t: Any,
    budgets: Sequence[int],
    *,
    max_factors: int,
    forms: tuple[str, ...],
    max_configs: int | None,
    svd: SVDMethod,
    random_state: Any,
    exhaustive: bool,
    progress: bool | Callable[[int, int], Any] | None,
    max_seconds: float | None = None,
    threads: int = 1,
    max_macs: int | None = None,
    max_deep_configs: int | None = None,
    executor: Executor | None = None,
) -> list[SearchResult | None]:
    """Search a checked tensor at several budgets at once, sharing every SVD; one SearchResult
    per budget (None where no configuration fits it; ValueError when none fits the largest).
    The options are :func:`search`'s, checked (``random_state`` may be any
    :func:`sekron.random.check_random_state` input; a Generator is used as it is; ``max_macs``
    the checked MAC budget per output position of a 4-way tensor, or None;
    ``max_deep_configs`` caps the configurations with 3 or more factors only, most balanced
    first, keeping every 2-factor one)."""
    start = time.perf_counter()
    deadline = None if max_seconds is None else start + max_seconds
    shape = tuple(int(s) for s in t.shape)
    budgets = tuple(budgets)
    jobs = plan_jobs(shape, budgets, max_factors, forms, max_configs, max_macs, max_deep_configs)
    need = spectra_needed(jobs, budgets)
    heads = {job.shapes[0] for job in jobs if len(job.d) > 2}
    backend = backend_name_of(t)
    assert backend is not None
    # errors are scale-free, squares are not: score s·W with s an exact power of two
    scale = pow2_scale(t)
    scaled = scale_by(t, scale)  # (t itself at scale 1)
    tallies = [Tally(b, max_macs, sum(1 for j in jobs if j.caps[i])) for i, b in enumerate(budgets)]
    # the jobs not evaluated yet, in the order they will be: 2-factor ones first
    pending = deque(sorted(jobs, key=lambda j: len(j.d) > 2))
    pbar = Progress(len(jobs) + len(need), progress)
    interrupted = timed_out = False
    with workers(threads, backend) as pool:
        rng = check_random_state(random_state)
        kern = Kernels(get_backend(backend), svd, rng, pool, on_device(t))
        level1 = Level1(scaled, kern, need, heads)
        try:
            level1.compute(pbar.update)
            score_two_factor(pending, level1, tallies, t, pbar)
            pending = deque(bound_and_order(list(pending), level1, budgets))
            deep: Callable[..., bool] = evaluate_deep
            if executor is not None:  # one task per first factor
                deep = partial(evaluate_deep_on, executor, threads=threads)
            timed_out = deep(
                pending, level1, tallies, t, exhaustive=exhaustive, deadline=deadline, progress=pbar
            )
        except KeyboardInterrupt:
            interrupted = True
            if not any(tally.found for tally in tallies):
                pbar.close()
                raise
    pbar.close()
    return finish(
        tallies,
        pending,
        level1,
        shape,
        interrupted=interrupted,
        timed_out=timed_out,
        seconds=time.perf_counter() - start,
    )
