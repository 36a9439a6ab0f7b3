"""compare(): one row per family and ratio, equal budgets, exact errors, JSON and plot export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sekron
from sekron.compare import FAMILIES, compare
from sekron.compare._table import _LABELS
from sekron.testing import rel_error, tolerance


@pytest.fixture(scope="module")
def table():
    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    # refine=0: the greedy search and each family's default fit (the rows are reproducible
    # from decompose and the structures); the joint-fit stage is tested below
    return W, compare(W, compression=(2, 4, 300), progress=False, refine=0)


def test_every_family_and_ratio_has_a_row(table) -> None:
    W, tab = table
    assert tab.families == FAMILIES
    assert tab.compressions == (2.0, 4.0, 300.0)
    assert len(tab.rows) == len(FAMILIES) * 3
    for r in tab.rows:
        assert r.budget == int(W.size / r.compression)
        if r.rel_error is None:
            assert r.reason  # a "—" cell says why
        else:
            assert r.n_params is not None and r.n_params <= r.budget
            assert 0.0 <= r.rel_error <= 1.0 + 1e-12


def test_tiny_budget_gives_reasons_not_crashes(table) -> None:
    _, tab = table
    assert tab["sekron", 300].rel_error is None  # budget 1: no structure fits
    assert tab["tucker", 300].rel_error is None
    assert "—" in str(tab)


def test_sekron_rows_are_exact_and_best_of_sekron(table) -> None:
    W, tab = table
    for c in (2, 4):
        row, gk = tab["sekron", c], tab["gkpd", c]
        assert row.rel_error <= gk.rel_error + 1e-12  # the search includes every 2-factor split
        assert len(gk.shapes) == 2
        st = sekron.decompose(W, row.shapes, rank=row.ranks, form=row.form)
        assert abs(rel_error(st.to_tensor(), W) - row.rel_error) <= tolerance(W.dtype)
        assert st.n_params == row.n_params


def test_family_rows_match_their_structures(table) -> None:
    W, tab = table
    for c in (2, 4):
        tt = tab["tt", c]
        st = sekron.structures.TT().fit(W, max_params=tt.budget)
        assert tt.rel_error == pytest.approx(st.rel_error) and tt.n_params == st.n_params
        cp = tab["cp", c]
        assert cp.n_params == cp.ranks[0] * sum(W.shape)
        t2 = tab["tucker2", c]
        assert t2.n_params == sekron.structures.Tucker2().n_params(W.shape, t2.ranks)


def test_json_schema(table, tmp_path) -> None:
    _, tab = table
    path = tmp_path / "rows.json"
    text = tab.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["tensor_shape"] == [8, 6, 3, 3]
    keys = {
        "family",
        "compression",
        "budget",
        "n_params",
        "rel_error",
        "shapes",
        "ranks",
        "form",
        "reason",
        "own_ranks",
        "notation",
        "cut_short",
        "seconds",
        "refined",
        "greedy_error",
        "macs",
        "over_mac_budget",
    }
    assert data["effort"] == tab.effort()
    assert data["max_macs"] is None
    for row in data["rows"]:
        assert set(row) == keys
        assert row["family"] in FAMILIES
        if row["rel_error"] is not None:
            assert isinstance(row["shapes"], list) and isinstance(row["ranks"], list)


def test_plot_is_png(table, tmp_path) -> None:
    _, tab = table
    out = tmp_path / "cmp.png"
    tab.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tucker2_needs_four_modes() -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 4))
    tab = compare(W, compression=2, families=("sekron", "tucker2"), progress=False)
    assert tab["tucker2", 2].rel_error is None and "4-way" in tab["tucker2", 2].reason
    assert tab["sekron", 2].rel_error is not None


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"compression": 1}, ValueError, r"compression\[0\] must be a finite number > 1"),
        ({"compression": (2, 0.5)}, ValueError, r"compression\[1\]"),
        ({"compression": "2"}, TypeError, "compression must be a number"),
        ({"families": ("svd",)}, ValueError, "families must be a non-empty subset"),
        ({"max_factors": 1}, ValueError, "max_factors must be an int >= 2"),
    ],
)
def test_validation(kwargs, exc, match) -> None:
    W = np.ones((4, 4, 3))
    with pytest.raises(exc, match=match):
        compare(W, progress=False, **kwargs)


# -- the certificate of each ratio is search's own (issue #13, item 2) -------------------------
def test_each_ratios_bound_is_searchs_bound_for_that_ratio_alone() -> None:
    W = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    # with max_seconds: one search per ratio, each with its own certificate
    kw = {"families": ("sekron",), "progress": False, "threads": 1, "refine": 0}
    tab = compare(W, compression=(2, 4), max_seconds=600, **kw)
    for c, res in zip(tab.compressions, tab.searches, strict=True):
        alone = sekron.search(W, compression=c, progress=False, threads=1, refine=0)
        assert res is not None
        assert res.bound == alone.bound  # one shared search gave 0.7782 at 4x, search 0.7763
        assert res.best.rel_error == alone.best.rel_error
        assert tab["sekron", c].rel_error == alone.best.rel_error
    # without: one greedy stage shared by the ratios, complete, so each ratio is certified
    shared = compare(W, compression=(2, 4), **kw)
    for c, res in zip(shared.compressions, shared.searches, strict=True):
        assert res is not None and res.certified and res.n_open == 0
        assert shared["sekron", c].rel_error == tab["sekron", c].rel_error


# -- the whole run: progress and max_seconds (issue #13, item 1) -------------------------------
def test_progress_covers_every_search_and_fit() -> None:
    W = np.random.default_rng(1).standard_normal((8, 6, 3, 3))
    calls: list[tuple[int, int]] = []
    fams = ("sekron", "tt", "cp", "tucker")
    compare(W, compression=(2, 4), families=fams, progress=lambda d, t: calls.append((d, t)))
    total = 2 + 3 * 2  # one search per ratio, one fit per other family and ratio
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_max_seconds_bounds_the_family_fits() -> None:
    W = np.random.default_rng(2).standard_normal((32, 16, 3, 3))
    fams = ("sekron", "cp", "tucker")
    tab = compare(W, compression=(2,), families=fams, max_seconds=1e-3, progress=False)
    full = compare(W, compression=(2,), families=fams[1:], progress=False)
    for fam in fams[1:]:
        cut, done = tab[fam, 2], full[fam, 2]
        assert cut.cut_short and not done.cut_short  # stopped, and said so
        assert cut.own_ranks == done.own_ranks and cut.n_params == done.n_params
        # fewer sweeps of a method that never increases the error: no better than converged
        assert done.rel_error - 1e-12 <= cut.rel_error <= 1.0
    assert "cut short" in str(tab)


# -- the table (issue #13, item 5) -------------------------------------------------------------
@pytest.fixture(scope="module")
def wide():
    """A table with many ratios, a layer name and every kind of row."""
    W = np.random.default_rng(3).standard_normal((16, 8, 3, 3))
    comps = (1.5, 2, 3, 4, 6, 8, 12, 16, 2000)
    return W, compare(W, compression=comps, progress=False, name="features.3.conv", threads=1)


def test_table_fits_100_columns_and_marks_the_best(wide) -> None:
    W, tab = wide
    text = str(tab)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "features.3.conv" in text.splitlines()[0]
    cells = _error_cells(text)
    for c in tab.compressions:
        errs = {f: tab[f, c].rel_error for f in tab.families if tab[f, c].rel_error is not None}
        best = min(errs.values(), default=None)
        for f in tab.families:
            cell = cells[_LABELS[f], f"{c:g}x"]
            if f in errs:
                assert cell.startswith(f"{errs[f]:.4f}")
                assert cell.endswith("*") == (errs[f] <= best), (f, c)
            else:
                assert cell.startswith("—")


def _error_cells(text: str) -> dict[tuple[str, str], str]:
    """``{(family label, "4x"): cell text}`` from the error block(s) of ``str(table)``."""
    out: dict[tuple[str, str], str] = {}
    cols: list[tuple[int, str]] = []
    for line in text.split("* best at that ratio")[0].splitlines():
        if line.startswith("family "):  # a block's header: where each ratio's column starts
            cols = [(m.start(), m.group()) for m in re.finditer(r"\S+x", line)]
        elif cols and line.strip() and not line.startswith("-"):
            label = line[: cols[0][0]].strip()
            for (pos, name), nxt in zip(cols, [*cols[1:], (None, "")], strict=True):
                out[label, name] = line[pos : nxt[0]].strip()
    return out


def test_table_shows_own_notation_and_parameters_used(wide) -> None:
    W, tab = wide
    text = str(tab)
    for c in (2, 4):
        cp, tucker, tr = tab["cp", c], tab["tucker", c], tab["tr", c]
        assert cp.notation == f"rank {cp.own_ranks[0]}" and cp.notation in text
        assert len(tucker.own_ranks) == W.ndim  # one rank per mode
        assert sekron.structures.Tucker().n_params(W.shape, tucker.own_ranks) == tucker.n_params
        assert len(tr.own_ranks) == W.ndim
        assert sekron.structures.TR().n_params(W.shape, tr.own_ranks) == tr.n_params
        for f in tab.families:
            assert f"{tab[f, c].n_params:,}" in text  # the parameters actually used
    assert "r=" not in text


def test_table_never_cuts_a_reason(wide) -> None:
    _, tab = wide
    flat = " ".join(str(tab).split())
    reasons = {r.reason for r in tab.rows if r.rel_error is None}
    assert reasons  # 2000x leaves no family a fit
    for reason in reasons:
        assert " ".join(reason.split()) in flat


def test_compare_table_is_immutable(wide) -> None:
    import dataclasses

    _, tab = wide
    with pytest.raises(dataclasses.FrozenInstanceError):
        tab.compressions = (2.0,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tab.rows[0].rel_error = 0.0


# -- the plot (issue #13, item 6) ------------------------------------------------------------
def test_plot_keeps_every_family_visible_and_names_the_layer(wide, tmp_path) -> None:
    _, tab = wide
    fig = tab.plot(tmp_path / "p.png")
    ax = fig.axes[0]
    styles = [(ln.get_marker(), str(ln.get_linestyle())) for ln in ax.get_lines()]
    assert len(styles) == len(tab.families)
    assert len(set(m for m, _ in styles)) == len(styles)  # one marker per family
    assert len(set(s for _, s in styles)) > 1
    assert "features.3.conv" in ax.get_title()
    assert tab.plot(title="layer 7").axes[0].get_title() == "layer 7"
    out = tmp_path / "noext"
    tab.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # written where asked
    with pytest.raises(ValueError, match="path 'x.txt' has the extension 'txt'"):
        tab.plot("x.txt")


# -- scale (issue #10, kind 1) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "scale"),
    [("float64", 1e200), ("float64", 1e-200), ("float32", 1e20), ("float32", 1e-20)],
)
def test_compare_errors_do_not_depend_on_scale(dtype, scale) -> None:
    base = np.random.default_rng(4).standard_normal((8, 6, 3, 3)).astype(dtype)
    W = (base.astype(np.float64) * scale).astype(dtype)
    # the family fits; the SeKron and GKPD rows are search's (scale-safe in sekron.search)
    fams = ("tt", "tr", "cp", "tucker", "tucker2")
    kw = {"compression": (2, 4), "progress": False, "families": fams}
    ref, out = compare(base, **kw), compare(W, **kw)
    tol = 1e-3 if dtype == "float32" else 1e-6
    for a, b in zip(ref.rows, out.rows, strict=True):
        assert (a.family, a.compression) == (b.family, b.compression)
        assert b.rel_error is not None and np.isfinite(b.rel_error)
        assert abs(a.rel_error - b.rel_error) <= tol, (a.family, a.compression)


def test_progress_in_a_log_file_has_no_carriage_returns(capsys) -> None:
    W = np.random.default_rng(5).standard_normal((8, 6, 3, 3))
    compare(W, compression=(2, 4), families=("sekron", "cp"), progress=True)
    err = capsys.readouterr().err  # not a terminal
    assert "\r" not in err
    lines = err.splitlines()
    # the family fits first (the searches start from them), then the greedy search of every
    # ratio at once and the joint fits of each ratio
    assert len(lines) == 5 and lines[1].startswith("sekron compare 1/4: CP at 4x")
    assert lines[2].startswith("sekron compare 2/4: SeKron greedy search, every ratio")
    assert lines[-1].startswith("sekron compare 3/4: SeKron joint fits at 4x")


# -- the joint-fit stage (issue #9) --------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(8, 6, 3, 3), (6, 4, 3, 2), (12, 4, 2, 2)]),
    compression=st.sampled_from([2.0, 3.0, 5.0]),
)
def test_searched_sekron_is_at_most_every_family_that_embeds_at_equal_count(
    seed, shape, compression
) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    fams = ("sekron", "gkpd", "tt", "cp", "tucker2")
    tab = compare(W, compression=compression, families=fams, progress=False, refine=6)
    row = tab["sekron", compression]
    assert row.n_params <= row.budget
    assert row.refined or row.rel_error == row.greedy_error  # a joint fit, or the greedy best
    for fam in fams[1:]:
        other = tab[fam, compression]
        if other.rel_error is not None:
            assert row.rel_error <= other.rel_error + 1e-12, fam
    # the row's error is its fit's measured error
    fit = tab.searches[0].best.to_sekron()
    assert fit.shapes == row.shapes and fit.ranks == row.ranks and fit.n_params == row.n_params
    assert abs(rel_error(fit.to_tensor(), W) - row.rel_error) <= tolerance(W.dtype)
    # the greedy search's best is reported beside it, and never beats the joint fit
    assert row.greedy_error == tab.searches[0].greedy_best.rel_error >= row.rel_error - 1e-12


def test_table_and_json_state_the_effort(tmp_path) -> None:
    W = np.random.default_rng(7).standard_normal((8, 6, 3, 3))
    tab = compare(W, compression=(2,), families=("sekron", "tt", "cp"), progress=False, refine=4)
    effort = tab.effort()
    assert tab.sweeps == 4 and "4 ALS sweeps of joint fits" in effort
    assert "TT: TT-SVD, then 4 ALS sweeps" in effort and "4 iterations of CP-ALS" in effort
    assert " ".join(str(tab).split()).count(" ".join(("effort: " + effort).split())) == 1
    assert json.loads(tab.to_json())["effort"] == tab.effort()
    # TT is TT-SVD then the same sweeps: never worse than TT-SVD alone
    plain = sekron.structures.TT().fit(W, max_params=tab["tt", 2].budget)
    assert tab["tt", 2].rel_error <= plain.rel_error + 1e-12


def test_sekron_alone_is_the_search_with_its_own_family_starts() -> None:
    W = np.random.default_rng(8).standard_normal((8, 6, 3, 3))
    tab = compare(W, compression=(3,), families=("sekron",), progress=False, refine=4, threads=1)
    alone = sekron.search(W, compression=3, progress=False, refine=4, threads=1)
    assert tab["sekron", 3].rel_error == alone.best.rel_error
    assert {c.source for c in tab.searches[0].refined} >= {"cp", "tt", "tucker2"}


def test_a_budget_only_a_deeper_structure_fits_gets_its_row() -> None:
    # 8x8: every 2-factor split needs >= 16 parameters at rank 1, (4)(4)(4) only 12: the shared
    # greedy stage must not drop a budget of 13 as too small
    W = np.random.default_rng(9).standard_normal((8, 8))
    tab = compare(W, compression=(2, 64 / 13), families=("sekron", "gkpd"), progress=False)
    row, alone = tab["sekron", 64 / 13], sekron.search(W, max_params=13, progress=False)
    assert row.rel_error == alone.best.rel_error and row.n_params <= 13
    assert tab["gkpd", 64 / 13].rel_error is None  # no 2-factor split fits
