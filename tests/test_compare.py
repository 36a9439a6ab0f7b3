"""compare(): one row per family and ratio, equal budgets, exact errors, JSON and plot export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sekron
from sekron.compare import FAMILIES, compare
from sekron.testing import rel_error, tolerance


@pytest.fixture(scope="module")
def table():
    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    return W, compare(W, compression=(2, 4, 300), progress=False)


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
    }
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
