"""search(): enumeration, budget, Pareto front, exact errors, pruning, interruption, validation."""

from __future__ import annotations

from itertools import product
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sekron
from sekron.search import enumerate_configs, pareto_front
from sekron.search import search as _search
from sekron.testing import rel_error, tolerance


def search(*args, **kwargs):
    """The greedy stage alone (refine=0): these tests are about its exact errors, certified
    bounds and Pareto front. The joint-fit stage is tested in tests/test_joint.py."""
    kwargs.setdefault("refine", 0)
    return _search(*args, **kwargs)


def _divisor_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [
        s
        for s in product(*(range(1, w + 1) for w in shape))
        if all(w % v == 0 for w, v in zip(shape, s, strict=True))
    ]


def _brute_force_count(shape: tuple[int, ...], S: int) -> int:
    """Every S-tuple of factor shapes multiplying out to ``shape``, no factor all ones."""
    cands = [s for s in _divisor_shapes(shape) if any(v > 1 for v in s)]
    count = 0
    for combo in product(cands, repeat=S):
        if all(prod(c[n] for c in combo) == shape[n] for n in range(len(shape))):
            count += 1
    return count


small_shapes = st.lists(st.integers(1, 8), min_size=1, max_size=3).map(tuple)


@given(shape=small_shapes, S=st.integers(2, 3))
def test_enumeration_matches_brute_force(shape: tuple[int, ...], S: int) -> None:
    got = list(enumerate_configs(shape, S))
    assert len(got) == len(set(got)) == _brute_force_count(shape, S)
    for shapes in got:
        assert len(shapes) == S
        assert all(any(v > 1 for v in s) for s in shapes)


tensors = st.tuples(
    st.sampled_from([(8, 6), (8, 4, 3), (6, 4, 2), (4, 4, 3, 3), (2, 8, 3), (12, 8)]),
    st.integers(0, 2**16),
    st.sampled_from([2.0, 3.0]),
    st.sampled_from([("nested", "chain"), ("nested",), ("chain",)]),
)


@settings(max_examples=15)
@given(case=tensors)
def test_front_is_pareto_within_budget_and_errors_are_exact(case) -> None:
    shape, seed, c, forms = case
    W = np.random.default_rng(seed).standard_normal(shape)
    res = search(W, compression=c, forms=forms, progress=False, exhaustive=True)
    budget = int(W.size / c)
    assert res.budget == budget
    assert len(res) >= 1 and res.best is res[0]
    for cand in res.all:
        assert cand.n_params <= budget
        assert cand.form in forms or len(cand.shapes) == 2
    # front: sorted by error, strictly falling params, nothing in .all dominates a front member
    errs = [x.rel_error for x in res]
    params = [x.n_params for x in res]
    assert errs == sorted(errs) and all(a > b for a, b in zip(params, params[1:], strict=False))
    for f in res:
        for x in res.all:
            assert not (x.n_params <= f.n_params and x.rel_error < f.rel_error - 1e-12), (f, x)
    assert res.best.rel_error == min(x.rel_error for x in res.all)
    # the reported errors equal decompose's and the measured error
    tol = tolerance(W.dtype)
    for cand in [*res[:3], *res.all[:: max(1, len(res.all) // 4)]]:
        st_ = cand.to_sekron()
        assert st_.shapes == cand.shapes and st_.ranks == cand.ranks
        assert st_.n_params == cand.n_params
        assert abs(st_.rel_error - cand.rel_error) <= tol
        assert abs(rel_error(st_.to_tensor(), W) - cand.rel_error) <= tol


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), c=st.sampled_from([2.0, 4.0, 6.0]))
def test_two_factor_best_beats_every_specific_configuration(seed: int, c: float) -> None:
    W = np.random.default_rng(seed).standard_normal((8, 6, 3))
    res = search(W, compression=c, max_factors=2, progress=False)
    budget = int(W.size / c)
    for shapes in enumerate_configs(W.shape, 2):
        if sum(prod(s) for s in shapes) > budget:
            continue
        other = sekron.decompose(W, shapes, max_params=budget)
        assert res.best.rel_error <= other.rel_error + tolerance(W.dtype)


@pytest.mark.parametrize("c", [2.0, 4.0])
def test_every_three_factor_error_equals_decompose(c: float) -> None:
    # both forms of one configuration share level-2 work (the chain sums the nested level's
    # Grams when d3 <= d2): every candidate must still equal decompose's exact error
    W = np.random.default_rng(3).standard_normal((8, 6, 4))
    res = search(W, compression=c, exhaustive=True, progress=False)
    tol = tolerance(W.dtype)
    three = [x for x in res.all if len(x.shapes) == 3]
    assert {x.form for x in three} == {"nested", "chain"}
    assert any(prod(x.shapes[2]) <= prod(x.shapes[1]) for x in three)
    assert any(prod(x.shapes[2]) > prod(x.shapes[1]) for x in three)
    for x in three:
        st_ = sekron.decompose(W, x.shapes, rank=x.ranks, form=x.form)
        assert abs(st_.rel_error - x.rel_error) <= tol, x


@pytest.mark.parametrize("c", [2.0, 5.0])
def test_pruning_keeps_the_best(c: float) -> None:
    W = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
    full = search(W, compression=c, exhaustive=True, progress=False)
    fast = search(W, compression=c, progress=False)
    assert full.n_pruned == 0
    assert len(fast.all) + fast.n_pruned == len(full.all)
    assert fast.best.rel_error == pytest.approx(full.best.rel_error, abs=1e-12)


def test_planted_structure_is_found() -> None:
    shapes = ((4, 2, 3, 1), (2, 4, 1, 3))
    planted = sekron.random_sekron(shapes, 2, random_state=0).to_tensor()
    res = search(planted, compression=4, max_factors=2, progress=False)
    assert res.best.rel_error <= tolerance(planted.dtype)


def test_max_configs_prefers_balanced() -> None:
    W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    res = search(W, compression=4, max_configs=7, progress=False, exhaustive=True)
    configs = {c.shapes for c in res.all}
    assert len(configs) <= 7
    assert res.n_configs <= 7 * 2


def test_torch_and_float32_inputs() -> None:
    torch = pytest.importorskip("torch")
    W = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    res = search(W, compression=3, progress=False)
    st_ = res.best.to_sekron()
    assert st_.backend == "pytorch" and st_.dtype == W.dtype
    assert abs(st_.rel_error - res.best.rel_error) <= tolerance(W.dtype)


def test_one_dimensional_tensors() -> None:
    v = np.random.default_rng(0).standard_normal(64)
    res = search(v, compression=2, progress=False)
    assert res.best.n_params <= 32
    assert abs(res.best.to_sekron().rel_error - res.best.rel_error) <= tolerance(v.dtype)
    with pytest.raises(ValueError, match="no SeKron configuration"):
        search(np.ones(7), compression=2, progress=False)


def test_interrupt_returns_best_so_far() -> None:
    W = np.random.default_rng(0).standard_normal((8, 8, 3, 3))
    full = search(W, compression=4, progress=False, exhaustive=True)
    calls = {"n": 0}

    def stop_late(done: int, total: int) -> None:
        calls["n"] += 1
        if done == total - 5:
            raise KeyboardInterrupt

    res = search(W, compression=4, progress=stop_late, exhaustive=True)
    assert res.interrupted and 0 < len(res.all) < len(full.all)
    assert res.best.rel_error >= full.best.rel_error - 1e-12

    def stop_early(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(W, compression=4, progress=stop_early)


@pytest.mark.parametrize("c", [2.0, 4.0])
def test_time_limit_returns_a_valid_certificate(c: float) -> None:
    W = np.random.default_rng(2).standard_normal((8, 8, 3, 3))
    full = search(W, compression=c, progress=False, exhaustive=True)
    assert not full.timed_out and full.bound == np.inf and full.certified
    deep_best = min(x.rel_error for x in full.all if len(x.shapes) >= 3)
    # a limit that runs out before the first configuration with S >= 3
    res = search(W, compression=c, progress=False, exhaustive=True, max_seconds=1e-9)
    assert res.timed_out and not res.interrupted
    assert res.all and all(len(x.shapes) == 2 for x in res.all)
    assert {x.shapes for x in res.all} == {x.shapes for x in full.all if len(x.shapes) == 2}
    # the bound is below every skipped configuration's error, and certifies only when it may
    assert res.bound <= deep_best + 1e-12
    assert res.certified == (res.best.rel_error <= res.bound * (1 + 1e-12))
    if not res.certified:
        assert "not certified" in repr(res)
    # n_open counts the unevaluated configurations that could still win: at least every one
    # whose true error beats the best found, at most every unevaluated one
    deep = [x for x in full.all if len(x.shapes) >= 3]
    beats = sum(x.rel_error < res.best.rel_error * (1 - 1e-9) for x in deep)
    assert beats <= res.n_open <= len(deep)
    assert (res.n_open == 0) == res.certified
    if not res.certified:
        assert f"{res.n_open:,} configurations left unevaluated" in repr(res)
    # pruning alone never leaves the best uncertified
    pruned = search(W, compression=c, progress=False)
    assert pruned.certified and pruned.bound >= full.best.rel_error - 1e-12
    assert full.n_open == pruned.n_open == 0


def test_time_limit_counts_the_configurations_that_could_still_win() -> None:
    # a planted nested structure A ⊗ (B1 ⊗ C1 + B2 ⊗ C2) that no 2-factor structure within the
    # budget comes near: stopped before any 3-factor configuration, the best found is poor
    rng = np.random.default_rng(3)
    M = sum(np.kron(rng.standard_normal((4, 4)), rng.standard_normal((4, 4))) for _ in range(2))
    W = np.kron(rng.standard_normal((3, 3)), M) + 1e-3 * rng.standard_normal((48, 48))
    full = search(W, max_params=100, progress=False, exhaustive=True)
    res = search(W, max_params=100, progress=False, exhaustive=True, max_seconds=1e-9)
    deep = [x for x in full.all if len(x.shapes) >= 3]
    beats = sum(x.rel_error < res.best.rel_error * (1 - 1e-9) for x in deep)
    assert full.best.rel_error < 0.01 < res.best.rel_error and beats > 0
    assert not res.certified and beats <= res.n_open < len(deep)
    assert f"{res.n_open:,} configurations left unevaluated" in repr(res)


def test_worker_threads_give_the_same_search_and_restore_blas(monkeypatch) -> None:
    import importlib

    from threadpoolctl import threadpool_info, threadpool_limits

    # split every stack and single Gram across the workers, however small
    monkeypatch.setattr(importlib.import_module("sekron.search._parallel"), "PARALLEL_MIN_SIZE", 0)

    def blas() -> list[tuple[str, int]]:
        return [(i["prefix"], i["num_threads"]) for i in threadpool_info()]

    W = np.random.default_rng(5).standard_normal((32, 16, 3, 3))
    # two BLAS threads to start from (the suite's xdist workers start with one; see conftest)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas()
        one = search(W, compression=4, threads=1, exhaustive=True, progress=False)
        three = search(W, compression=4, threads=3, exhaustive=True, progress=False)
        # spectra one at a time when a copy of the tensor per worker would not fit the budget
        monkeypatch.setattr(importlib.import_module("sekron.search._kernels"), "SPECTRA_BYTES", 0)
        lean = search(W, compression=4, threads=3, exhaustive=True, progress=False)
        assert blas() == before
    for other in (three, lean):
        assert [(x.shapes, x.form, x.ranks) for x in one.all] == [
            (x.shapes, x.form, x.ranks) for x in other.all
        ]
        for x, y in zip(one.all, other.all, strict=True):
            assert x.rel_error == pytest.approx(y.rel_error, abs=1e-12)


def test_exact_svd_scores_a_planted_kronecker_product_to_rounding() -> None:
    # svd="exact" takes singular values from SVDs, not Grams (whose eigenvalues carry an
    # absolute error of about eps * ||W||², i.e. a relative error near sqrt(eps))
    rng = np.random.default_rng(6)
    W = np.kron(rng.standard_normal((4, 6, 3)), rng.standard_normal((4, 2, 1)))
    res = search(W, max_params=W.size // 2, svd="exact", progress=False, threads=1)
    planted = [x for x in res.all if x.shapes == ((4, 6, 3), (4, 2, 1))]
    assert len(planted) == 1 and planted[0].rel_error < 1e-12
    assert res.best.rel_error < 1e-12 and res.best.to_sekron().rel_error < 1e-12


def test_progress_callback_counts_to_total() -> None:
    seen: list[tuple[int, int]] = []
    W = np.random.default_rng(0).standard_normal((4, 4, 3))
    search(W, compression=2, progress=lambda d, t: seen.append((d, t)))
    assert (
        seen
        and seen[-1][0] == seen[-1][1]
        and [d for d, _ in seen] == list(range(1, len(seen) + 1))
    )


def test_text_progress_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    W = np.random.default_rng(0).standard_normal((4, 4, 3))
    search(W, compression=2, progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "sekron search" in out.err


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, ValueError, "exactly one of max_params and compression"),
        ({"max_params": 10, "compression": 2}, ValueError, "exactly one"),
        ({"compression": 1.0}, ValueError, "compression must be a finite number > 1"),
        ({"compression": "2"}, TypeError, "compression must be a finite number > 1; got '2'"),
        ({"max_params": 0}, ValueError, "max_params must be a positive int"),
        ({"max_params": 5}, ValueError, "below the smallest SeKron structure"),
        ({"compression": 2, "max_factors": 1}, ValueError, "max_factors must be an int >= 2"),
        ({"compression": 2, "forms": ("tt",)}, ValueError, "form must be 'nested' or 'chain'"),
        ({"compression": 2, "max_configs": 0}, ValueError, "max_configs must be a positive"),
        ({"compression": 2, "svd": "fast"}, ValueError, "svd must be one of"),
        ({"compression": 2, "max_seconds": 0}, ValueError, "max_seconds must be a finite"),
        (
            {"compression": 2, "max_seconds": "1"},
            TypeError,
            "max_seconds must be a finite number > 0; got '1'",
        ),
        ({"compression": 2, "threads": 0}, ValueError, "threads must be an int >= 1"),
    ],
)
def test_validation(kwargs, exc, match) -> None:
    W = np.random.default_rng(0).standard_normal((8, 8, 3))
    with pytest.raises(exc, match=match):
        search(W, progress=False, **kwargs)


def test_bad_tensor_kind() -> None:
    with pytest.raises(TypeError, match="tensor must be"):
        search([[1.0, 2.0]], compression=2)


def test_pareto_front_helper() -> None:
    from sekron.search import Candidate

    a = Candidate(((2,), (2,)), "nested", (1,), 4, 0.5)
    b = Candidate(((2,), (2,)), "nested", (2,), 8, 0.1)
    c = Candidate(((2,), (2,)), "chain", (2,), 9, 0.2)  # dominated by b
    assert pareto_front([a, b, c]) == [b, a]
    with pytest.raises(ValueError, match="holds no tensor"):
        a.to_sekron()


def test_result_repr_and_sequence() -> None:
    W = np.random.default_rng(0).standard_normal((8, 4, 3))
    res = search(W, compression=2, progress=False)
    assert "SearchResult for shape (8, 4, 3)" in repr(res)
    assert list(res[:1]) == [res.best]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(1, 6),
    st.integers(2, 7),
    st.integers(2, 7),
    st.integers(0, 2**31 - 1),
)
def test_partial_nested_bound_is_below_the_exact_optimum(M1, k, d2, d3, seed) -> None:
    # the bound from the first k level-2 branches never exceeds the best error of any ranks
    # within the budget, and equals it once every branch is in
    from sekron import _ranks
    from sekron.search._bounds import partial_nested_bound2 as _partial_nested_bound2

    rng = np.random.default_rng(seed)
    k = min(k, M1)
    m = min(d2, d3)
    d = (M1, d2, d3)
    sig2 = np.sort(rng.random(M1) ** 3)[::-1]
    rest1 = float(rng.random())
    tail1 = _ranks.tail(sig2, np.asarray(rest1))
    sv2 = np.sort(rng.random((M1, m)) ** 3, axis=1)[:, ::-1] * sig2[:, None]
    E = _ranks.nested_error_table([sig2, sv2], [np.asarray(rest1), np.zeros(M1)])
    P = _ranks.params_table(d, (M1, m), "nested")
    for budget in rng.integers(M1 + d2 + d3, M1 * (M1 + d2 * d3) + 2, size=4):
        feasible = E[P <= budget]
        best = feasible.min() if feasible.size else np.inf
        assert _partial_nested_bound2(tail1, sv2[:k], d, int(budget)) <= best * (1 + 1e-12)
        assert _partial_nested_bound2(tail1, sv2, d, int(budget)) == pytest.approx(best)


@pytest.mark.parametrize("c", [2.0, 8.0])
def test_giving_up_on_trees_part_way_keeps_the_best_and_prunes_more(c, monkeypatch) -> None:
    import importlib

    from sekron.data.digits_cnn import WEIGHTS_PATH

    mod = importlib.import_module("sekron.search._bounds")
    with np.load(WEIGHTS_PATH.with_suffix(".npz"), allow_pickle=False) as data:
        # a trained (64, 32, 3, 3) conv weight, in float64 so that every path agrees to rounding
        W = data["features.5.weight"].astype(np.float64)
    full = search(W, compression=c, exhaustive=True, progress=False)
    fast = search(W, compression=c, progress=False)
    # the same search without giving up part-way (the partial bound never beats the best)
    monkeypatch.setattr(mod, "partial_nested_bound2", lambda *a: -np.inf)
    whole = search(W, compression=c, progress=False)
    tol = 1e-12
    assert fast.best.rel_error == pytest.approx(full.best.rel_error, abs=tol)
    assert fast.certified and whole.certified
    assert fast.n_pruned > whole.n_pruned
    assert len(fast.all) + fast.n_pruned == len(full.all) == len(whole.all) + whole.n_pruned
    # every configuration evaluated has the exhaustive search's error
    exact = {(x.shapes, x.form): x.rel_error for x in full.all}
    for x in fast.all:
        assert x.rel_error == pytest.approx(exact[(x.shapes, x.form)], abs=tol)


# -- issue #10: unbounded work (kind 5) and scale (kind 1) ---------------------------------------
def test_factor_count_is_capped_by_the_prime_factors_without_enumerating_the_rest(
    monkeypatch,
) -> None:
    import importlib

    mod = importlib.import_module("sekron.search._configs")
    assert mod.max_factors_of((8, 8)) == 6 and mod.max_factors_of((7, 1)) == 1
    calls = 0
    inner = mod._configs

    def counting(shape, parts):
        nonlocal calls
        calls += 1
        return inner(shape, parts)

    monkeypatch.setattr(mod, "_configs", counting)
    counts = {S: sum(1 for _ in enumerate_configs((8, 8), S)) for S in range(1, 101)}
    assert all(counts[S] == 0 for S in range(7, 101)) and counts[6] > 0
    # every node of the recursion lies on the path of a configuration it yields
    assert calls <= sum(S * n for S, n in counts.items())
    W = np.random.default_rng(2).standard_normal((8, 8))
    many = search(W, compression=2, max_factors=100, exhaustive=True, progress=False)
    six = search(W, compression=2, max_factors=6, exhaustive=True, progress=False)
    assert many.n_configs == six.n_configs
    assert [(x.shapes, x.form, x.ranks, x.rel_error) for x in many.all] == [
        (x.shapes, x.form, x.ranks, x.rel_error) for x in six.all
    ]


@pytest.mark.parametrize("svd", ["auto", "exact", "randomized"])
@pytest.mark.parametrize(
    ("dtype", "scale"),
    [("float64", 1e-250), ("float64", 1e250), ("float32", 1e-25), ("float32", 1e25)],
)
def test_search_errors_are_scale_free(dtype: str, scale: float, svd: str) -> None:
    W = np.random.default_rng(4).standard_normal((8, 6, 4))
    kw = {"compression": 3, "exhaustive": True, "progress": False, "svd": svd, "random_state": 0}
    ref = search(W.astype(dtype), **kw)
    res = search((W * scale).astype(dtype), **kw)
    tol = tolerance(dtype)
    assert [(x.shapes, x.form, x.ranks) for x in res.all] == [
        (x.shapes, x.form, x.ranks) for x in ref.all
    ]
    for x, y in zip(res.all, ref.all, strict=True):
        assert abs(x.rel_error - y.rel_error) <= tol
    assert 0.1 < res.best.rel_error < 1.0
    assert abs(res.best.to_sekron().rel_error - res.best.rel_error) <= tol


def test_search_of_a_scaled_torch_tensor() -> None:
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(4).standard_normal((8, 6, 4))
    ref = search(W, compression=3, progress=False)
    res = search(torch.tensor(W * 1e25, dtype=torch.float32), compression=3, progress=False)
    assert abs(res.best.rel_error - ref.best.rel_error) <= tolerance(np.float32)


def test_kernel_seconds_are_part_of_the_wall_time() -> None:
    W = np.random.default_rng(0).standard_normal((16, 8, 3))
    res = search(W, compression=3, threads=1, exhaustive=True, progress=False)
    assert 0.0 < res.kernel_seconds <= res.seconds


def test_a_torch_search_runs_numpy_blas_on_one_thread_and_restores_it() -> None:
    # the Grams' eigenvalue problems of a torch search are numpy's: with numpy's default BLAS
    # threads a busy 2-core machine compressed the digits CNN's largest layer 5x slower
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> list[tuple[str, int]]:
        return [
            (i["prefix"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"
        ]

    during: list[list[tuple[str, int]]] = []
    W = torch.from_numpy(np.random.default_rng(5).standard_normal((16, 8, 3, 3)))

    def progress(done: int, total: int) -> None:
        # every 20th report and the last (threadpool_info walks every loaded library: calling it
        # on each of about 1,500 reports took 10 of the test's 11 s)
        if done % 20 == 0 or done == total:
            during.append(blas())

    # two BLAS threads to start from (the suite's xdist workers start with one; see conftest)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas()
        assert before and all(n == 2 for _, n in before)
        search(W, compression=4, refine=0, progress=progress)
        assert blas() == before
    assert len(during) > 5 and all(n == 1 for seen in during for _, n in seen)
