"""compare(..., max_macs=, mac_compression=) and ``sekron compare --max-macs/--mac-compression``
(issue #15): the SeKron search runs within the MAC budget, every other family is reported as
it comes with its plan's MACs, and a row above the budget is marked, not dropped."""

from __future__ import annotations

import json
import re
from itertools import permutations
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sekron.cli import main
from sekron.compare import compare
from sekron.search import search
from sekron.torch import sekron_conv_macs

FAMS = ("sekron", "gkpd", "tt", "cp", "tucker2")


def _plan_macs(family, shapes, ranks, form, own_ranks) -> int:
    """A row's plan, counted by sekron.torch (Tucker-2 as its chain (F)(kh, kw)(C), CP in its
    cheapest factor order)."""
    if family == "tucker2":
        f, c, h, w = (prod(s[i] for s in shapes) for i in range(4))
        chain = ((f, 1, 1, 1), (1, 1, h, w), (1, c, 1, 1))
        return sekron_conv_macs(chain, tuple(own_ranks), "chain")
    shapes = tuple(map(tuple, shapes))
    if family == "cp":  # its terms are outer products: the cheapest factor order
        orders = permutations(shapes)
        return min(sekron_conv_macs(order, tuple(ranks), "nested") for order in orders)
    return sekron_conv_macs(shapes, tuple(ranks), form)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(8, 6, 3, 3), (6, 4, 3, 2), (12, 4, 2, 2), (16, 8, 1, 1)]),
    compression=st.sampled_from([2.0, 3.0, 5.0]),
    mac_compression=st.sampled_from([1.0, 2.0, 4.0]),
)
def test_searched_row_within_the_mac_budget_and_every_row_counted(
    seed, shape, compression, mac_compression
) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    tab = compare(
        W,
        compression=compression,
        mac_compression=mac_compression,
        families=FAMS,
        progress=False,
        refine=4,
        threads=1,
    )
    budget = int(prod(shape) / mac_compression)
    assert tab.max_macs == budget
    [res] = tab.searches
    row = tab["sekron", compression]
    if res is None:  # no structure within both budgets: the row says so
        assert row.rel_error is None and "both budgets" in row.reason
        return
    assert res.max_macs == budget
    for cand in (*res.all, *res.refined):  # every searched candidate, counted independently
        assert sekron_conv_macs(cand.shapes, cand.ranks, cand.form) <= budget
    assert row.macs == sekron_conv_macs(row.shapes, row.ranks, row.form) <= budget
    for fam in FAMS:
        other = tab[fam, compression]
        if other.rel_error is None:
            continue
        plan = _plan_macs(fam, other.shapes, other.ranks, other.form, other.own_ranks)
        assert other.macs == plan, fam
        assert other.over_mac_budget == (other.macs > budget), fam
        if not other.over_mac_budget:  # a warm start (or a 2-factor split) within both budgets
            assert row.rel_error <= other.rel_error + 1e-12, fam


def test_gkpd_and_the_families_are_reported_as_they_come() -> None:
    W = np.random.default_rng(1).standard_normal((16, 8, 3, 3))
    kw = {"compression": (2, 4), "families": ("sekron", "gkpd", "cp"), "progress": False}
    plain = compare(W, refine=3, **kw)
    tab = compare(W, refine=3, mac_compression=1, **kw)
    for c in (2, 4):
        for fam in ("gkpd", "cp"):  # the same fit, marked when its plan is above the budget
            a, b = plain[fam, c], tab[fam, c]
            assert (a.rel_error, a.shapes, a.ranks, a.macs) == (
                b.rel_error,
                b.shapes,
                b.ranks,
                b.macs,
            )
            assert not a.over_mac_budget and b.over_mac_budget == (b.macs > W.size)
        assert tab["sekron", c].macs <= W.size and not tab["sekron", c].over_mac_budget
    # at 4x the best 2-factor split costs more MACs than the dense conv: kept, and marked
    gkpd = tab["gkpd", 4]
    assert gkpd.macs > W.size and gkpd.over_mac_budget
    text = str(tab)
    assert re.search(rf"{gkpd.rel_error:.4f}( \*)? !", text) and f"{gkpd.macs:,} !" in text
    assert "! plan above the MAC budget (1,152 per position)" in text
    assert "1,152 MACs per position" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    doc = json.loads(tab.to_json())
    assert doc["max_macs"] == W.size
    assert [r["over_mac_budget"] for r in doc["rows"]] == [r.over_mac_budget for r in tab.rows]


def test_a_tight_mac_budget_changes_the_searched_structure() -> None:
    W = np.random.default_rng(1).standard_normal((16, 8, 3, 3))
    free = compare(W, compression=2, families=("sekron",), progress=False, refine=0)
    tight = compare(
        W, compression=2, families=("sekron",), progress=False, refine=0, mac_compression=4
    )
    assert free["sekron", 2].macs > W.size // 4  # the parameter budget alone goes above it
    assert tight["sekron", 2].macs <= W.size // 4
    assert tight["sekron", 2].rel_error >= free["sekron", 2].rel_error


def test_macs_column_only_for_conv_weights() -> None:
    W = np.random.default_rng(2).standard_normal((8, 6, 3, 3))
    conv = compare(W, compression=2, families=("sekron", "cp"), progress=False, refine=0)
    assert "MACs" in str(conv) and all(r.macs is not None for r in conv.rows)
    flat = compare(W.reshape(8, 6, 9), compression=2, families=("sekron", "cp"), progress=False)
    assert "MACs" not in str(flat) and all(r.macs is None for r in flat.rows)
    assert json.loads(flat.to_json())["rows"][0]["macs"] is None


@pytest.mark.parametrize(
    ("shape", "kwargs", "exc", "match"),
    [
        ((8, 6, 3, 3), {"max_macs": 10, "mac_compression": 2}, ValueError, "at most one of"),
        ((8, 6, 3, 3), {"max_macs": 0}, ValueError, "max_macs must be a positive int"),
        ((8, 6, 3, 3), {"max_macs": 2.5}, TypeError, "max_macs must be a positive int"),
        ((8, 6, 3, 3), {"mac_compression": 0.5}, ValueError, "mac_compression must be a finite"),
        ((8, 6, 3, 3), {"mac_compression": "2"}, TypeError, "mac_compression must be a finite"),
        ((8, 6, 9), {"mac_compression": 1}, ValueError, r"applies to a conv weight .* \(8, 6, 9\)"),
    ],
)
def test_mac_budget_errors(shape, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        compare(np.ones(shape), compression=2, progress=False, **kwargs)


# -- the command line ---------------------------------------------------------------------------
def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_mac_compression_end_to_end(tmp_path, capsys) -> None:
    W = np.random.default_rng(3).standard_normal((16, 8, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", W)
    js = tmp_path / "rows.json"
    argv = ["compare", str(tmp_path / "w.npy"), "--compression", "2", "4", "--refine", "2"]
    argv += ["--mac-compression", "2", "--json", str(js), "--no-progress"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "MACs" in out and f"{W.size // 2:,} MACs per position" in out
    doc = json.loads(js.read_text())
    assert doc["options"]["mac_compression"] == 2.0 and doc["options"]["max_macs"] is None
    assert [s["max_macs"] for s in doc["layers"][0]["searches"]] == [W.size // 2] * 2
    for r in doc["rows"]:
        keys = ("family", "shapes", "ranks", "form", "own_ranks")
        assert r["macs"] == _plan_macs(*(r[k] for k in keys))
        assert r["over_mac_budget"] == (r["macs"] > W.size // 2)
        if r["family"] == "sekron":
            assert r["macs"] <= W.size // 2


def test_cli_max_macs_reaches_compare(tmp_path, capsys) -> None:
    W = np.random.default_rng(4).standard_normal((8, 4, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", W)
    js = tmp_path / "rows.json"
    argv = ["compare", str(tmp_path / "w.npy"), "--compression", "2", "--families", "sekron"]
    code, _, err = _run([*argv, "--max-macs", "100", "--json", str(js), "--no-progress"], capsys)
    assert code == 0, err
    [row] = json.loads(js.read_text())["rows"]
    assert row["macs"] <= 100


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--max-macs", "0"], ["--max-macs must be >= 1"]),
        (["--max-macs", "1.5"], ["not an int"]),
        (["--mac-compression", "0.5"], ["--mac-compression must be a number >= 1"]),
        (["--mac-compression", "inf"], ["--mac-compression must be a number >= 1"]),
        (["--max-macs", "9", "--mac-compression", "2"], ["not allowed with argument"]),
        (["--mac-compression", "1", "--key", "flat"], ["--mac-compression applies to 4-D", "flat"]),
    ],
)
def test_cli_mac_budget_errors_are_one_line_exit_2(tmp_path, capsys, extra, needles) -> None:
    np.savez(tmp_path / "m.npz", conv=np.ones((8, 4, 3, 3)), flat=np.ones((8, 4, 3)))
    code, _, err = _run(["compare", str(tmp_path / "m.npz"), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sekron: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_cheapest_cp_order_is_the_same_tensor_at_cp_s_own_cost() -> None:
    from sekron.search._joint import cheapest_cp
    from sekron.structures import CP

    W = np.random.default_rng(5).standard_normal((16, 8, 3, 3))
    cp = CP().fit(W, max_params=400, random_state=0)
    cheap = cheapest_cp(cp)
    r = cp.ranks[0]
    assert cheap.n_params == cp.n_params and cheap.ranks == cp.ranks
    np.testing.assert_allclose(cheap.to_tensor(), cp.to_tensor(), atol=1e-12)
    assert sekron_conv_macs(cheap.shapes, cheap.ranks, "nested") == r * (16 + 8 + 3 + 3)
    assert sekron_conv_macs(cp.shapes, cp.ranks, "nested") > r * (16 + 8 + 3 + 3)
    # the search alone, within a MAC budget only the cheap order meets: that start is in it
    budget = sekron_conv_macs(cheap.shapes, cheap.ranks, "nested")
    res = search(W, max_params=400, max_macs=budget, progress=False, refine=2, threads=1)
    assert any(c.source == "cp" for c in res.refined)
    assert all(c.macs <= budget for c in (*res.all, *res.refined))
    # a MAC budget below the CP fit's plan: its largest terms, as many as fit, are a start
    half = budget // 2
    res = search(W, max_params=400, max_macs=half, progress=False, refine=2, threads=1)
    [start] = [c for c in res.refined if c.source == "cp"]
    assert start.ranks[0] == half // (16 + 8 + 3 + 3) and start.macs <= half
    truncated = cheapest_cp(cp, half)
    assert truncated.ranks[0] == start.ranks[0] and truncated.n_params < cp.n_params
