"""compare(): at each compression ratio, the best error of every factorization family.

Families: the searched SeKron structure, TT, TR, CP, Tucker, Tucker-2 (4-way tensors) and GKPD
(the best 2-factor SeKron). Each family uses its best ranks under the same parameter budget,
``numel / compression``, counted by its *own* parameter count (structures docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from math import prod
from typing import Any, cast

from .._executor import check_executor
from .._typing import Form
from .._validation import (
    _type_name,
    budget_from_compression,
    check_compression,
    check_forms,
    check_int,
    check_max_seconds,
    check_positive_int,
    check_progress,
    check_tensor,
    check_threads,
)
from ..search._macs import mac_budget
from ._run import Options as _Options
from ._run import ProgressArg as _ProgressArg
from ._run import run as _run
from ._table import FAMILIES, CompareTable, Row

__all__ = [
    "CompareTable",
    "FAMILIES",
    "Row",
    "compare",
]


def _check_compressions(compression: Any) -> tuple[float, ...]:
    items = [compression] if isinstance(compression, int | float) else compression
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not items:
        raise TypeError(
            "compression must be a number > 1 or a non-empty sequence of them; got "
            f"{_type_name(compression)}."
        )
    out = [check_compression(c, f"compression[{i}]") for i, c in enumerate(items)]
    return tuple(sorted(set(out)))


def _n_prime_factors(n: int) -> int:
    """Prime factors of n, with multiplicity (Ω(n))."""
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n, count = n // p, count + 1
        p += 1
    return count + (n > 1)


def _check_options(t: Any, compression: Any, **kw: Any) -> _Options:
    comps = _check_compressions(compression)
    families = kw["families"]
    if isinstance(families, str) or not isinstance(families, Sequence):
        raise TypeError(f"families must be a sequence of names; got {_type_name(families)}.")
    fams = tuple(dict.fromkeys(str(f).lower() for f in families))
    if not fams or any(f not in FAMILIES for f in fams):
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}; got {families!r}.")
    name = kw["name"]
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None; got {_type_name(name)}.")
    shape = tuple(int(v) for v in t.shape)
    numel = prod(shape)
    # no configuration has more non-trivial factors than the mode sizes have prime factors
    max_factors = min(
        check_int(kw["max_factors"], "max_factors", at_least=2),
        max(2, sum(_n_prime_factors(n) for n in shape)),
    )
    if "sekron" not in fams:  # GKPD alone needs only the 2-factor configurations
        max_factors = 2
    return _Options(
        comps,
        tuple(budget_from_compression(c, numel) for c in comps),
        fams,
        max_factors,
        cast(tuple[Form, ...], check_forms(kw["forms"])),
        None if kw["max_configs"] is None else check_positive_int(kw["max_configs"], "max_configs"),
        check_max_seconds(kw["max_seconds"]),
        kw["random_state"],
        check_threads(kw["threads"]),
        name,
        check_progress(kw["progress"]),
        check_int(kw["refine"], "refine", at_least=0),
        check_executor(kw["executor"]),
        mac_budget(kw["max_macs"], kw["mac_compression"], shape),
    )


def compare(
    tensor: Any,
    *,
    compression: float | Sequence[float] = (2, 4, 8, 16),
    max_factors: int = 3,
    families: Sequence[str] = FAMILIES,
    forms: Sequence[Form] = ("nested", "chain"),
    max_configs: int | None = None,
    max_seconds: float | None = None,
    random_state: Any = 0,
    progress: _ProgressArg = None,
    threads: int | None = None,
    name: str | None = None,
    refine: int = 30,
    executor: Executor | None = None,
    max_macs: int | None = None,
    mac_compression: float | None = None,
) -> CompareTable:
    """Best relative error of each factorization family at each compression ratio.

    Parameters
    ----------
    tensor : array
        numpy, torch or jax array (TT, TR, CP, Tucker need >= 2 modes, Tucker-2 exactly 4).
    compression : float or sequence of floats > 1
        Compression ratios; the budget of each is ``floor(numel / compression)`` parameters.
    max_factors : int >= 2
        Largest number of Kronecker factors the SeKron search considers.
    families : sequence of str
        Subset of :data:`FAMILIES`: sekron, gkpd, tt, tr, cp, tucker, tucker2.
    forms, max_configs, threads
        Passed to :func:`sekron.search`.
    max_seconds : float > 0, optional
        Bounds the whole run: half to the searches (equal shares per ratio, each search's
        ``max_seconds``), the rest to the family fits; an iterative fit (CP) that runs out of
        its share stops and its row says ``cut_short``. ``table.searches[i]`` tells whether
        each ratio's best is certified (``bound``, ``n_open``).
    random_state : None, int or Generator
        Seed of the iterative fits (CP, TR, Tucker); the table is deterministic by default.
    progress : bool or callable, optional
        Progress of the whole run, a step per search and per fit: True draws a line on stderr,
        None only when stderr is a terminal; a callable receives ``(done, total)`` steps.
    name : str, optional
        The tensor's name (a layer), shown in the table's header and the plot's title.
    refine : int >= 0
        The effort of every fit (default 30), stated in the table: ALS sweeps of the SeKron
        search's joint-fit stage and after TT's TT-SVD, and the iterations of CP-ALS and HOOI
        (Tucker, Tucker-2). TR is TR-SVD, which does not iterate. ``0``: the greedy SeKron
        search, plain TT-SVD and the other families' default iterations.
    executor : concurrent.futures.Executor, optional
        Runs the family fits as tasks, one per family and ratio (for a Dask cluster,
        ``Client(...).get_executor()``; the tensor is shipped to each worker once), and the
        search's configurations as :func:`sekron.search` does. The table is the local one
        (give ``random_state`` as an int or None: a Generator is drawn from in order locally
        and copied into each task). With ``max_seconds`` each fit gets an equal share of the
        fits' half. None (default): everything runs here.
    max_macs : int >= 1, optional
        For a conv weight ``(F, C, kh, kw)``: the SeKron search runs within this budget of
        MACs per output position of the factorized plan too (:func:`sekron.search`'s
        ``max_macs``, counted as :func:`sekron.torch.sekron_conv_macs` counts them with
        ``in_hw=None``), so its row is the best error within both budgets. The other families,
        GKPD included, are fitted by parameters alone and reported as they come: every row
        shows its plan's MACs (``Row.macs``), and a row above the MAC budget is marked ``!``
        (``Row.over_mac_budget``), not dropped.
    mac_compression : float >= 1, optional
        The MAC budget as a ratio: ``max_macs = floor(F*C*kh*kw / mac_compression)``; 1: no
        more MACs than the dense conv. At most one of ``max_macs`` and ``mac_compression``.

    Returns
    -------
    CompareTable
        ``str(table)``, ``table.to_json()``, ``table.plot(path)``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument; the message names it. Both ``max_macs`` and ``mac_compression``,
        or either for a tensor that is not 4-way.

    Notes
    -----
    The families are fitted first. The SeKron search then runs once per ratio, with the TT, CP
    and Tucker-2 fits of that ratio (those compared) among the warm starts of its joint-fit
    stage, at their own parameter counts (Tucker-2 as the chain (F)(H, W)(C)); ALS never
    increases an error, so the SeKron row is at most the GKPD, TT, CP and Tucker-2 rows. When
    none of TT, CP and Tucker-2 is compared, the search fits its own (as :func:`sekron.search`
    does alone).
    Tucker's and TR's embeddings hold more numbers than their own counts, so they are
    reported as they come. Each ratio's certificate (``bound``) is the one
    :func:`sekron.search` gives for that ratio alone; it is about greedy fits only. GKPD is
    the best 2-factor configuration, which the search evaluates exhaustively. A family that
    cannot meet a budget gets a row with ``rel_error=None`` and a ``reason``, not an
    exception.

    With a MAC budget the search's warm starts are the TT, CP and Tucker-2 fits within it
    (the others cannot be refined within it), so the SeKron row is at most those rows; a
    family row above the MAC budget can have a lower error than the SeKron row (it is
    marked). No structure within both budgets: the SeKron row says so. For a tensor that is
    not 4-way, ``Row.macs`` is None and the table has no MACs column.

    Examples
    --------
    >>> import numpy as np
    >>> from sekron.compare import compare
    >>> W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    >>> table = compare(W, compression=(2, 4), families=("sekron", "tt", "cp"), progress=False)
    >>> table["cp", 4].notation
    'rank 6'
    """
    t, _ = check_tensor(tensor)
    opts = _check_options(
        t,
        compression,
        families=families,
        max_factors=max_factors,
        forms=forms,
        max_configs=max_configs,
        max_seconds=max_seconds,
        random_state=random_state,
        threads=threads,
        progress=progress,
        name=name,
        refine=refine,
        executor=executor,
        max_macs=max_macs,
        mac_compression=mac_compression,
    )
    return _run(t, opts)
