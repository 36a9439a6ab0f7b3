"""compress's policy (issue #15): MAC budgets in the search, no silent cap (cut-short layers are
reported), and one parameter budget allocated over the model's layers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sekron.search import search
from sekron.search._macs import conv_macs

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sekron.torch import SeKronConv2d, compress, count_macs, sekron_conv_macs  # noqa: E402
from sekron.torch._allocation import allocate, objective, uniform_choice  # noqa: E402
from sekron.torch._counting import _stage_kernel_macs  # noqa: E402

conv_shapes = st.tuples(
    st.sampled_from([4, 6, 8, 12]),
    st.sampled_from([2, 4, 6, 8]),
    st.sampled_from([1, 3]),
    st.sampled_from([1, 3]),
)


# ----------------------------------------------------------------------------------------------
# MACs in the search
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["nested", "chain"])
def test_conv_macs_equals_the_counted_plan_on_every_rank_grid(form):
    shapes = ((4, 2, 3, 1), (2, 3, 1, 3), (2, 2, 1, 1))
    R1, R2 = np.meshgrid(np.arange(1, 6), np.arange(1, 5), indexing="ij")
    table = conv_macs(shapes, (R1, R2), form)
    for r1, r2 in itertools.product(range(1, 6), range(1, 5)):
        want = sum(_stage_kernel_macs(shapes, (r1, r2), form))
        assert table[r1 - 1, r2 - 1] == want == conv_macs(shapes, (r1, r2), form)


@settings(max_examples=25, deadline=None)
@given(shape=conv_shapes, c=st.sampled_from([1.5, 3.0]), m=st.sampled_from([1.0, 2.0, 4.0]))
def test_search_result_within_the_mac_budget(shape, c, m):
    W = np.random.default_rng(sum(shape)).standard_normal(shape)
    try:
        res = search(W, compression=c, mac_compression=m, progress=False, refine=3, threads=1)
    except ValueError as exc:  # nothing fits both budgets: said so, naming both
        assert "max_macs" in str(exc) or "budget" in str(exc)
        return
    budget = int(W.size / m)
    assert res.max_macs == budget
    for cand in (*res.all, *res.refined):
        assert cand.macs is not None and cand.macs <= budget
        assert cand.n_params <= res.budget
        assert cand.macs == sekron_conv_macs(cand.shapes, cand.ranks, cand.form)
    # the best is the best greedy error among the structures within both budgets
    unconstrained = search(W, compression=c, progress=False, refine=0, threads=1)
    fits = [x for x in unconstrained.all if x.macs <= budget]
    if fits:
        assert res.greedy_best.rel_error <= min(x.rel_error for x in fits) + 1e-9


def test_chosen_macs_equal_count_macs_of_the_built_layer():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False).double()
    res = search(conv.weight.detach(), compression=3, mac_compression=2, progress=False)
    best = res.best
    layer = SeKronConv2d(best.to_sekron(), None, padding=1)
    # stride 1, "same" padding: every stage runs at the output resolution
    assert count_macs(layer.double(), (1, 8, 5, 7)) == best.macs * 5 * 7
    assert best.macs <= 8 * 12 * 9 // 2


def test_mac_budget_prunes_what_a_parameter_budget_alone_keeps():
    W = np.random.default_rng(0).standard_normal((16, 16, 3, 3))
    free = search(W, compression=2, progress=False, refine=0, threads=1)
    assert max(c.macs for c in free.all) > W.size  # some structures cost more than dense
    tight = search(W, compression=2, mac_compression=1, progress=False, refine=0, threads=1)
    assert all(c.macs <= W.size for c in tight.all)
    assert "MACs/position" in repr(tight)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"max_macs": 10, "mac_compression": 2}, ValueError, "at most one of max_macs"),
        ({"max_macs": 0}, ValueError, "max_macs must be a positive int"),
        ({"max_macs": 2.5}, TypeError, "max_macs must be a positive int"),
        ({"mac_compression": 0.5}, ValueError, "mac_compression must be a finite number >= 1"),
        ({"mac_compression": "2"}, TypeError, "mac_compression must be a finite number"),
        ({"max_macs": 1}, ValueError, "fits both the budget of"),
    ],
)
def test_search_mac_budget_errors(kwargs, exc, match):
    W = np.ones((4, 4, 3, 3))
    with pytest.raises(exc, match=match):
        search(W, compression=2, progress=False, **kwargs)


def test_mac_budget_needs_a_conv_weight():
    with pytest.raises(ValueError, match=r"applies to a conv weight of shape \(F, C, kh, kw\)"):
        search(np.ones((8, 8)), compression=2, mac_compression=1, progress=False)
    res = search(np.ones((8, 8)), compression=2, progress=False, refine=0)
    assert res.best.macs is None and res.max_macs is None


# ----------------------------------------------------------------------------------------------
# compress: MAC default, cut-short layers, options
# ----------------------------------------------------------------------------------------------
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3))


def test_compress_default_never_costs_more_macs_than_dense():
    _, report = compress(_model(), compression=2, min_params=0, progress=False)
    assert report.replaced
    for r in report:
        assert r.macs_after <= r.macs_before
        assert r.macs_after == sekron_conv_macs(r.shapes, r.ranks, r.form)


def test_compress_mac_compression_halves_the_plan():
    _, report = compress(_model(), compression=2, mac_compression=2, min_params=0, progress=False)
    for r in report:
        assert r.replaced and 2 * r.macs_after <= r.macs_before


def test_a_layer_cut_short_is_reported_with_its_certificate():
    _, report = compress(_model(), compression=2, max_seconds=1e-9, min_params=0, progress=False)
    for r in report:
        assert r.replaced and r.cut_short
        assert "cut short at max_seconds=1e-09; " in r.search_note
        assert "configurations left may reach greedy rel. error" in r.search_note or (
            "certified" in r.search_note
        )
    assert "search cut short" in str(report) and "at max_seconds=1e-09" in str(report)
    assert report.to_dicts()[0]["cut_short"] is True
    _, full = compress(_model(), compression=2, max_seconds=None, min_params=0, progress=False)
    assert "max_seconds" not in str(full)
    for r in full:  # only the 3-factor configurations beyond the searched ones, if any
        assert not r.cut_short or r.search_note.startswith("cut short: 200 most balanced of")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"structure": "cp", "mac_compression": 2}, ValueError, "mac_compression applies to"),
        ({"structure": "gkpd", "max_seconds": 5}, ValueError, "max_seconds applies to"),
        ({"mac_compression": 0.9}, ValueError, "mac_compression must be a finite number >= 1"),
        ({"max_seconds": 0}, ValueError, "max_seconds must be a finite number > 0"),
        ({"allocation": "best"}, ValueError, "allocation must be one of"),
        ({"allocation": "global", "structure": "cp"}, ValueError, "needs structure='search'"),
        ({"weights": {"0": 1.0}}, ValueError, "weights applies to allocation='global' only"),
        ({"allocation": "global", "weights": [1]}, TypeError, "weights must be a dict"),
        ({"allocation": "global", "weights": {"7": 1}}, ValueError, "not an nn.Conv2d"),
        ({"allocation": "global", "weights": {"0": -1}}, ValueError, r"weights\['0'\] must"),
        ({"executor": object()}, TypeError, "executor must be"),
    ],
)
def test_compress_policy_errors_before_any_work(kwargs, exc, match, monkeypatch):
    import sekron.torch._compress as _compress_module

    def fail(*args, **kwargs):
        raise AssertionError("factorized a layer before validating")

    monkeypatch.setattr(_compress_module, "factorize_weight", fail)
    with pytest.raises(exc, match=match):
        compress(_model(), min_params=0, progress=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# global allocation
# ----------------------------------------------------------------------------------------------
@st.composite
def fronts_and_ratio(draw):
    n_layers = draw(st.integers(1, 4))
    fronts = []
    for _ in range(n_layers):
        k = draw(st.integers(1, 6))
        params = sorted(draw(st.sets(st.integers(1, 400), min_size=k, max_size=k)))
        errs = sorted(draw(st.lists(st.floats(0, 1), min_size=k, max_size=k)), reverse=True)
        fronts.append(list(zip(params, errs, strict=True)))
    own = [draw(st.integers(min(p for p, _ in f), 450)) for f in fronts]
    weights = draw(st.lists(st.floats(0, 3), min_size=n_layers, max_size=n_layers))
    return fronts, own, weights


@settings(max_examples=80, deadline=None)
@given(case=fronts_and_ratio(), grid=st.sampled_from([7, 64, 4096]))
def test_global_allocation_within_budget_and_never_worse_than_uniform(case, grid):
    fronts, own, w = case
    budget = sum(own)
    uniform = uniform_choice(fronts, own)
    assert uniform is not None
    choice = allocate(fronts, budget, w, incumbents=[uniform], grid=grid)
    params, err = objective(fronts, w, choice)
    assert params <= budget
    assert err <= objective(fronts, w, uniform)[1] + 1e-12
    # without the uniform incumbent too (the DP alone, then its fix-up)
    alone = allocate(fronts, budget, w, grid=grid)
    assert objective(fronts, w, alone)[0] <= budget
    if grid == 4096:  # exact here (budget <= 1800): the optimum over every allocation
        best = min(
            objective(fronts, w, c)[1]
            for c in itertools.product(*(range(len(f)) for f in fronts))
            if objective(fronts, w, c)[0] <= budget
        )
        assert objective(fronts, w, alone)[1] <= best + 1e-12


def test_allocate_says_when_nothing_fits():
    assert allocate([[(5, 0.1)], [(5, 0.2)]], 9) is None


def test_compress_global_allocation_within_the_model_budget():
    model = _model()
    _, uni = compress(model, compression=3, min_params=0, progress=False)
    _, glo = compress(model, compression=3, allocation="global", min_params=0, progress=False)
    budget = sum(int(r.shape[0] * r.shape[1] * r.shape[2] * r.shape[3] / 3) for r in glo)
    assert glo.replaced == ["0", "2"]
    assert sum(r.params_after - 16 for r in glo) <= budget  # the factors (bias 16 each)
    assert all(r.macs_after <= r.macs_before for r in glo)
    _, weighted = compress(
        model,
        compression=3,
        allocation="global",
        weights={"0": 100.0},
        min_params=0,
        progress=False,
    )
    assert sum(r.params_after - 16 for r in weighted) <= budget


def test_a_layer_with_more_3_factor_configurations_than_searched_is_cut_short():
    model = nn.Sequential(nn.Conv2d(64, 64, 3))
    _, report = compress(model, compression=4, max_seconds=None, progress=False)
    assert report[0].cut_short
    assert "most balanced of" in report[0].search_note
    assert "3-factor configurations" in str(report)
