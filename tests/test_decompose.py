"""Property suite for decompose (theory docs): identities, bounds, recovery, rank selection."""

from __future__ import annotations

import itertools
from math import prod

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sekron
from sekron._backend import to_numpy
from sekron._plan import factor_sizes, full_ranks, n_params
from sekron.testing import (
    Problem,
    assert_close,
    kron_shapes,
    rel_error,
    sekron_problems,
    tolerance,
)

TOL64 = tolerance(np.float64)


def measured(W: np.ndarray, st_: sekron.SeKronTensor) -> float:
    return rel_error(st_.to_tensor(), W)


# -- oracles: the slow, obvious paths -------------------------------------------------------------
def nested_error_oracle(W: np.ndarray, shapes, ranks) -> float:
    """Explicit recursion with one np.linalg.svd per branch and the path-product formula."""
    d = [int(np.prod(s)) for s in shapes]
    T = sekron.rearrange(W, shapes)

    def rec(block: np.ndarray, level: int) -> float:
        if level == len(d) - 1:
            return 0.0
        M = block.reshape(d[level], -1)
        U, s, Vh = np.linalg.svd(M, full_matrices=False)
        R = min(ranks[level], s.size)
        err2 = float(np.sum(s[R:] ** 2))
        for r in range(R):
            # branch r carries sigma_r; its subtree error scales with sigma_r^2
            err2 += s[r] ** 2 * rec(Vh[r], level + 1)
        return err2

    norm2 = float(np.sum(W**2))
    return float(np.sqrt(rec(T, 0) / norm2)) if norm2 else 0.0


def unfolding_errors(W: np.ndarray, shapes, ranks) -> list[float]:
    """ε_k: best rank-R_k error of the k-th unfolding of R(W), relative."""
    T = sekron.rearrange(W, shapes)
    d = [int(np.prod(s)) for s in shapes]
    out = []
    norm = np.linalg.norm(W)
    for k, R in enumerate(ranks):
        s = np.linalg.svd(T.reshape(prod(d[: k + 1]), -1), compute_uv=False)
        out.append(float(np.sqrt(np.sum(s[R:] ** 2)) / norm))
    return out


# -- identities and exactness ---------------------------------------------------------------------
@given(p=sekron_problems())
def test_reported_error_equals_measured(p: Problem) -> None:
    st_ = sekron.decompose(p.tensor, p.shapes, p.ranks, form=p.form)
    assert st_.rel_error is not None
    assert abs(st_.rel_error - measured(p.tensor, st_)) <= TOL64


@given(p=sekron_problems(forms=("nested",)))
def test_nested_error_identity_matches_branch_by_branch_oracle(p: Problem) -> None:
    st_ = sekron.decompose(p.tensor, p.shapes, p.ranks)
    assert abs(st_.rel_error - nested_error_oracle(p.tensor, p.shapes, st_.ranks)) <= TOL64


def test_full_ranks_are_exact(backend, float_dtype) -> None:
    @settings(max_examples=backend.max_examples)
    @given(p=sekron_problems())
    def check(p: Problem) -> None:
        W = backend.asarray(p.tensor, float_dtype)
        st_ = sekron.decompose(W, p.shapes, form=p.form)
        if p.form == "nested":
            assert st_.ranks == full_ranks(p.shapes, p.form)
        assert_close(st_.to_tensor(), W)
        assert st_.rel_error <= tolerance(float_dtype)

    check()


@given(
    ks=kron_shapes(min_factors=2, max_factors=2, max_modes=3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_two_factors_error_is_eckart_young_tail(ks, seed: int, data) -> None:
    W = np.random.default_rng(seed).standard_normal(ks.tensor_shape)
    s = np.linalg.svd(sekron.rearrange(W, ks.shapes), compute_uv=False)
    R = data.draw(st.integers(1, s.size))
    expected = np.sqrt(np.sum(s[R:] ** 2)) / np.linalg.norm(W)
    for form in ("nested", "chain"):
        st_ = sekron.decompose(W, ks.shapes, R, form=form)
        assert abs(st_.rel_error - expected) <= TOL64


@given(
    ks=kron_shapes(min_factors=2, max_factors=2, max_modes=3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_two_factors_no_competitor_of_same_shapes_and_rank_does_better(ks, seed: int, data) -> None:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(ks.tensor_shape)
    d = factor_sizes(ks.shapes)
    R = data.draw(st.integers(1, min(d)))
    best = sekron.decompose(W, ks.shapes, R).rel_error
    T = sekron.rearrange(W, ks.shapes)
    norm = np.linalg.norm(W)
    for _ in range(5):
        # random first factors, second factors fitted by least squares: the strongest
        # competitor given the first ones
        A = rng.standard_normal((d[0], R))
        Bls = np.linalg.lstsq(A, T, rcond=None)[0]
        competitor = np.linalg.norm(T - A @ Bls) / norm
        assert competitor >= best - TOL64
        pure = sekron.random_sekron(ks.shapes, R, random_state=rng).to_tensor()
        assert np.linalg.norm(W - pure) / norm >= best - TOL64


@given(p=sekron_problems(forms=("chain",), max_factors=4))
def test_chain_error_bounds(p: Problem) -> None:
    st_ = sekron.decompose(p.tensor, p.shapes, p.ranks, form="chain")
    eps = unfolding_errors(p.tensor, p.shapes, st_.ranks)
    assert max(eps) <= st_.rel_error + TOL64
    assert st_.rel_error <= np.sqrt(np.sum(np.square(eps))) + TOL64
    assert st_.rel_error <= np.sqrt(len(p.shapes) - 1) * max(eps) + TOL64
    # the lower bound holds for ANY chain of those ranks: a random chain can't beat it
    rnd = sekron.random_sekron(p.shapes, st_.ranks, form="chain", random_state=0).to_tensor()
    assert rel_error(rnd, p.tensor) >= max(eps) - TOL64


@given(p=sekron_problems(max_factors=4), data=st.data())
def test_more_rank_never_raises_the_error_nor_the_chain_bound(p: Problem, data) -> None:
    """Nested: one more rank at any level keeps every kept branch of the smaller fit and
    decomposes one more, so the error never rises. Chain (TT-SVD): one more last rank keeps
    every earlier step and discards less at the last; one more earlier rank can raise the
    error (the example below), but never above the smaller ranks' upper bound
    sqrt(sum eps_k**2) (theory docs), since each eps_k only falls with its rank."""
    base = sekron.decompose(p.tensor, p.shapes, p.ranks, form=p.form)
    k = data.draw(st.integers(0, len(p.ranks) - 1))
    bigger = list(base.ranks)
    bigger[k] += 1
    more = sekron.decompose(p.tensor, p.shapes, bigger, form=p.form)
    if p.form == "nested" or k == len(p.ranks) - 1:
        assert more.rel_error <= base.rel_error + TOL64
    else:
        eps = unfolding_errors(p.tensor, p.shapes, base.ranks)
        assert more.rel_error <= np.sqrt(np.sum(np.square(eps))) + TOL64


def test_chain_error_can_rise_with_an_earlier_rank() -> None:
    """TT-SVD is not monotone in an earlier rank: keeping one more term at step 1 changes the
    matrix step 2 truncates. Found by a seed search over small chains (113 of 13,230 one-rank
    raises rose, each at an earlier rank); the test above once asserted monotonicity for every
    form and rank. Nested fits of the same tensor do not rise."""
    W = np.random.default_rng(8).standard_normal(16)
    shapes = [(2,), (2,), (2,), (2,)]
    small = sekron.decompose(W, shapes, [1, 2, 1], form="chain")
    more = sekron.decompose(W, shapes, [2, 2, 1], form="chain")
    assert (small.ranks, more.ranks) == ((1, 2, 1), (2, 2, 1))
    assert more.rel_error > small.rel_error + 0.01  # one more rank, a larger error
    eps = unfolding_errors(W, shapes, small.ranks)
    assert more.rel_error <= np.sqrt(np.sum(np.square(eps)))
    nested = [sekron.decompose(W, shapes, r).rel_error for r in ([1, 2, 1], [2, 2, 1])]
    assert nested[1] <= nested[0]


# -- planted tensors ------------------------------------------------------------------------------
def test_planted_chain_is_recovered_at_its_ranks(backend, float_dtype) -> None:
    @settings(max_examples=backend.max_examples)
    @given(
        ks=kron_shapes(min_factors=2, max_factors=4, max_modes=3),
        seed=st.integers(0, 2**16),
        data=st.data(),
    )
    def check(ks, seed, data) -> None:
        ranks = data.draw(st.tuples(*(st.integers(1, 3) for _ in range(len(ks.shapes) - 1))))
        planted = sekron.random_sekron(ks.shapes, ranks, form="chain", random_state=seed)
        W = backend.asarray(to_numpy(planted.to_tensor()), float_dtype)
        st_ = sekron.decompose(W, ks.shapes, ranks, form="chain")
        assert_close(st_.to_tensor(), W, rtol=10 * tolerance(float_dtype))
        assert st_.rel_error <= 10 * tolerance(float_dtype)

    check()


@given(
    ks=kron_shapes(min_factors=3, max_factors=4, max_modes=3, max_side=3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_planted_nested_is_recovered_at_cumulative_ranks(ks, seed, data) -> None:
    ranks = data.draw(st.tuples(*(st.integers(1, 3) for _ in range(len(ks.shapes) - 1))))
    W = sekron.random_sekron(ks.shapes, ranks, random_state=seed).to_tensor()
    cumulative = tuple(int(np.prod(ranks[: k + 1])) for k in range(len(ranks)))
    st_ = sekron.decompose(W, ks.shapes, cumulative)
    assert st_.rel_error <= TOL64
    assert rel_error(st_.to_tensor(), W) <= TOL64


@pytest.mark.parametrize("seed", range(10))
def test_planted_nested_needs_refine_at_its_own_ranks(seed: int) -> None:
    shapes = [(4, 4, 3, 1), (4, 4, 1, 3), (4, 4, 1, 1)]
    ranks = (3, 2)
    W = sekron.random_sekron(shapes, ranks, random_state=seed).to_tensor()
    greedy = sekron.decompose(W, shapes, ranks)
    assert greedy.rel_error > 1e-3  # the level-1 SVD mixes the branches
    refined = sekron.decompose(W, shapes, ranks, refine=60)
    assert refined.rel_error <= 1e-6
    assert abs(refined.rel_error - measured(W, refined)) <= TOL64


@given(p=sekron_problems(max_factors=3), sweeps=st.integers(1, 4))
def test_refine_never_increases_the_error(p: Problem, sweeps: int) -> None:
    base = sekron.decompose(p.tensor, p.shapes, p.ranks, form=p.form)
    refined = sekron.decompose(p.tensor, p.shapes, p.ranks, form=p.form, refine=sweeps)
    assert refined.rel_error <= base.rel_error + TOL64
    assert abs(refined.rel_error - measured(p.tensor, refined)) <= TOL64
    assert refined.ranks == base.ranks


# -- rank selection: tol and max_params -----------------------------------------------------------
def all_rank_tuples(shapes, form):
    return itertools.product(*(range(1, f + 1) for f in full_ranks(shapes, form)))


@given(p=sekron_problems(max_factors=3, max_size=600), tol=st.floats(0.01, 0.99))
def test_tol_is_never_violated(p: Problem, tol: float) -> None:
    st_ = sekron.decompose(p.tensor, p.shapes, form=p.form, tol=tol)
    assert st_.rel_error <= tol + TOL64
    assert measured(p.tensor, st_) <= tol + TOL64


@given(p=sekron_problems(forms=("nested",), max_factors=3, max_size=300), tol=st.floats(0.01, 0.99))
def test_nested_tol_gives_the_cheapest_ranks(p: Problem, tol: float) -> None:
    chosen = sekron.decompose(p.tensor, p.shapes, tol=tol)
    for R in all_rank_tuples(p.shapes, "nested"):
        if n_params(p.shapes, R, "nested") < chosen.n_params:
            assert sekron.decompose(p.tensor, p.shapes, R).rel_error > tol - TOL64


@given(p=sekron_problems(max_factors=3, max_size=600), data=st.data())
def test_max_params_is_never_exceeded(p: Problem, data) -> None:
    lo = sum(factor_sizes(p.shapes))
    budget = data.draw(st.integers(lo, max(lo, prod(p.tensor.shape) * 2)))
    st_ = sekron.decompose(p.tensor, p.shapes, form=p.form, max_params=budget)
    assert st_.n_params <= budget
    assert abs(st_.rel_error - measured(p.tensor, st_)) <= TOL64


@given(p=sekron_problems(forms=("nested",), max_factors=3, max_size=300), data=st.data())
def test_nested_max_params_gives_the_lowest_error(p: Problem, data) -> None:
    lo = sum(factor_sizes(p.shapes))
    budget = data.draw(st.integers(lo, max(lo, prod(p.tensor.shape))))
    chosen = sekron.decompose(p.tensor, p.shapes, max_params=budget)
    for R in all_rank_tuples(p.shapes, "nested"):
        if n_params(p.shapes, R, "nested") <= budget:
            assert sekron.decompose(p.tensor, p.shapes, R).rel_error >= chosen.rel_error - TOL64


def test_rank_acts_as_a_cap_with_tol_and_max_params() -> None:
    W = np.random.default_rng(0).standard_normal((16, 16, 3, 3))
    shapes = [(4, 4, 3, 1), (4, 4, 1, 3)]
    st_ = sekron.decompose(W, shapes, rank=5, max_params=10**6)
    assert st_.ranks == (5,)
    with pytest.raises(ValueError, match="tol=0.01 cannot be met with the rank cap rank=\\(2,\\)"):
        sekron.decompose(W, shapes, rank=2, tol=0.01)
    with pytest.raises(ValueError, match="tol=0.01 cannot be met.*rank=\\(2, 2\\)"):
        sekron.decompose(
            W, [(4, 4, 3, 1), (4, 4, 1, 3), (1, 1, 1, 1)], rank=2, tol=0.01, form="chain"
        )


def test_ranks_above_full_rank_are_capped() -> None:
    W = np.random.default_rng(0).standard_normal((6, 4))
    st_ = sekron.decompose(W, [(2, 2), (3, 2)], rank=100)
    assert st_.ranks == (4,)
    assert st_.rel_error <= TOL64


# -- svd kernels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("svd", ["exact", "gram", "randomized", "auto"])
@pytest.mark.parametrize("form", ["nested", "chain"])
def test_every_svd_kernel_reports_the_exact_error(svd: str, form: str) -> None:
    rng = np.random.default_rng(1)
    W = rng.standard_normal((32, 32, 3, 3))
    if form == "nested":
        shapes = [(8, 8, 3, 1), (4, 4, 1, 3)]
    else:
        shapes = [(4, 4, 3, 1), (4, 4, 1, 3), (2, 2, 1, 1)]
    st_ = sekron.decompose(W, shapes, rank=4, form=form, svd=svd, random_state=0)
    assert abs(st_.rel_error - measured(W, st_)) <= TOL64
    exact = sekron.decompose(W, shapes, rank=4, form=form, svd="exact")
    if form == "nested":  # S = 2: the exact SVD is optimal, no kernel can beat it
        assert st_.rel_error >= exact.rel_error - TOL64
    if svd != "randomized":
        assert abs(st_.rel_error - exact.rel_error) <= 1e-6


def test_randomized_svd_is_reproducible_with_random_state() -> None:
    W = np.random.default_rng(3).standard_normal((64, 64, 3, 3))
    shapes = [(8, 8, 3, 1), (8, 8, 1, 3)]
    a = sekron.decompose(W, shapes, rank=4, svd="randomized", random_state=7)
    b = sekron.decompose(W, shapes, rank=4, svd="randomized", random_state=7)
    np.testing.assert_array_equal(a.factors[0], b.factors[0])


# -- special inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["nested", "chain"])
def test_all_zero_tensor_gives_zero_error_and_no_nan(backend, form: str) -> None:
    W = backend.asarray(np.zeros((4, 6, 2)))
    st_ = sekron.decompose(W, [(2, 3, 1), (2, 2, 2)], form=form, tol=0.1)
    assert st_.rel_error == 0.0
    assert np.all(np.isfinite(to_numpy(st_.to_tensor())))
    assert np.all(to_numpy(st_.to_tensor()) == 0)


def test_integer_input_is_cast_to_float() -> None:
    W = np.arange(36).reshape(6, 6)
    st_ = sekron.decompose(W, [(2, 3), (3, 2)])
    assert st_.dtype == np.float64
    assert_close(st_.to_tensor(), W.astype(np.float64))


def test_one_dimensional_tensor() -> None:
    w = np.random.default_rng(0).standard_normal(24)
    st_ = sekron.decompose(w, [(2,), (3,), (4,)], rank=[2, 3])
    assert abs(st_.rel_error - measured(w, st_)) <= TOL64


# -- scale: relative errors do not depend on it (issue #10, kind 1) -----------------------------
SCALE_SHAPES = [(2, 2, 2), (2, 3, 1), (2, 1, 2)]
SCALE_BASE = np.random.default_rng(11).standard_normal((8, 6, 4))


def scale_free_rel_error(approx: np.ndarray, W: np.ndarray) -> float:
    """The measured relative error, on both arrays divided by max|W| (no square overflows)."""
    m = np.max(np.abs(W))
    a, w = np.asarray(approx, np.float64) / m, np.asarray(W, np.float64) / m
    return float(np.linalg.norm(a - w) / np.linalg.norm(w))


@settings(max_examples=30, deadline=None)
@given(
    exponent=st.integers(-300, 300),
    form=st.sampled_from(["nested", "chain"]),
    svd=st.sampled_from(["auto", "exact", "gram", "randomized"]),
    rank=st.integers(1, 3),
    refine=st.sampled_from([0, 0, 2]),
)
def test_reported_error_is_scale_free_float64(exponent, form, svd, rank, refine) -> None:
    W = SCALE_BASE * 10.0**exponent
    kw = {"rank": rank, "form": form, "svd": svd, "refine": refine, "random_state": 0}
    st_ = sekron.decompose(W, SCALE_SHAPES, **kw)
    ref = sekron.decompose(SCALE_BASE, SCALE_SHAPES, **kw)
    assert np.isfinite(st_.rel_error) and all(np.isfinite(to_numpy(f)).all() for f in st_.factors)
    assert abs(st_.rel_error - scale_free_rel_error(st_.to_tensor(), W)) <= TOL64
    assert abs(st_.rel_error - ref.rel_error) <= TOL64
    assert 0.5 < st_.rel_error < 1.0  # a random tensor at these ranks is far from exact


def _near_float32_max(base: np.ndarray, exponent: int) -> np.ndarray:
    """``base`` scaled by a power of two so that max|W| is in [2**exponent, 2**(exponent+1))."""
    return (base * np.ldexp(1.0, exponent - int(np.frexp(np.max(np.abs(base)))[1]) + 1)).astype(
        np.float32
    )


@settings(max_examples=25, deadline=None)
@given(
    exponent=st.integers(100, 127),
    constant=st.booleans(),
    form=st.sampled_from(["nested", "chain"]),
    rank=st.integers(1, 3),
    refine=st.sampled_from([0, 2]),
)
@example(exponent=127, constant=True, form="nested", rank=1, refine=0)
@example(exponent=127, constant=False, form="chain", rank=2, refine=2)
def test_float32_near_its_largest_value(exponent, constant, form, rank, refine) -> None:
    """Entries up to float32's 3.4e38: no factor overflows (the last factor once took the whole
    scale: a constant 1.7e38 tensor came back with inf in it, and ``refine`` raised
    OverflowError), and the error is the unit-scale one."""
    base = np.ones((8, 6, 4)) if constant else SCALE_BASE
    W = _near_float32_max(base, exponent)
    kw = {"rank": rank, "form": form, "refine": refine, "random_state": 0}
    st_ = sekron.decompose(W, SCALE_SHAPES, **kw)
    ref = sekron.decompose(base.astype(np.float32), SCALE_SHAPES, **kw)
    assert all(np.isfinite(f).all() for f in st_.factors) and np.isfinite(st_.to_tensor()).all()
    tol32 = tolerance(np.float32)
    assert abs(st_.rel_error - scale_free_rel_error(st_.to_tensor(), W)) <= tol32
    assert abs(st_.rel_error - ref.rel_error) <= tol32
    again = sekron.refine(W, st_, sweeps=2)
    assert all(np.isfinite(f).all() for f in again.factors)
    assert abs(again.rel_error - scale_free_rel_error(again.to_tensor(), W)) <= tol32


@pytest.mark.parametrize("exponent", [-130, 125, 127])
@pytest.mark.parametrize("constant", [False, True])
def test_float32_at_both_ends_on_every_backend(backend, exponent, constant) -> None:
    """Near float32's largest value and below its smallest normal one, on every backend: the
    scale is applied in steps the dtype holds as normal numbers (jax on the CPU flushes a
    subnormal float32 multiplier such as 2**-127 to zero: decompose returned NaN factors with
    error 0, refine zeros with error 1; a subnormal input's scale 2**130 is inf in float32)."""
    if backend.name == "jax" and exponent < -126:
        pytest.skip("jax on the CPU reads subnormal float32 as zero (there max|W| is 0.0)")
    base = np.ones((8, 6, 4)) if constant else SCALE_BASE
    W32 = _near_float32_max(base, exponent)
    W = backend.asarray(W32, "float32")
    for form in ("nested", "chain"):
        st_ = sekron.decompose(W, SCALE_SHAPES, rank=2, form=form, refine=1)
        factors = [to_numpy(f) for f in st_.factors]
        assert all(np.isfinite(f).all() for f in factors)
        down = [
            f.astype(np.float64) * (2.0**-exponent if k == 0 else 1.0)
            for k, f in enumerate(factors)
        ]
        approx = sekron.SeKronTensor(down, form).to_tensor()
        w = W32.astype(np.float64) * 2.0**-exponent
        measured = float(np.linalg.norm(approx - w) / np.linalg.norm(w))
        assert abs(st_.rel_error - measured) <= 1e-4
        again = sekron.refine(W, st_, sweeps=2)
        assert all(np.isfinite(to_numpy(f)).all() for f in again.factors)
        assert again.rel_error <= st_.rel_error + 1e-4


@settings(max_examples=20, deadline=None)
@given(
    exponent=st.integers(-300, 300),
    form=st.sampled_from(["nested", "chain"]),
    tol=st.sampled_from([0.3, 0.5, 0.8]),
)
def test_tol_and_max_params_are_scale_free_float64(exponent, form, tol) -> None:
    W = SCALE_BASE * 10.0**exponent
    st_ = sekron.decompose(W, SCALE_SHAPES, tol=tol, form=form)
    ref = sekron.decompose(SCALE_BASE, SCALE_SHAPES, tol=tol, form=form)
    assert st_.ranks == ref.ranks and st_.rel_error <= tol
    assert scale_free_rel_error(st_.to_tensor(), W) <= tol + TOL64
    by_budget = sekron.decompose(W, SCALE_SHAPES, max_params=120, form=form)
    assert (
        by_budget.ranks
        == sekron.decompose(SCALE_BASE, SCALE_SHAPES, max_params=120, form=form).ranks
    )


@settings(max_examples=20, deadline=None)
@given(
    exponent=st.integers(-30, 30),
    form=st.sampled_from(["nested", "chain"]),
    rank=st.integers(1, 3),
    refine=st.sampled_from([0, 2]),
)
def test_float32_error_is_scale_free_and_matches_float64(exponent, form, rank, refine) -> None:
    W32 = (SCALE_BASE * 10.0**exponent).astype(np.float32)
    st32 = sekron.decompose(W32, SCALE_SHAPES, rank=rank, form=form, refine=refine)
    st64 = sekron.decompose(
        W32.astype(np.float64), SCALE_SHAPES, rank=rank, form=form, refine=refine
    )
    tol32 = tolerance(np.float32)
    assert st32.dtype == np.float32 and all(np.isfinite(f).all() for f in st32.factors)
    assert abs(st32.rel_error - scale_free_rel_error(st32.to_tensor(), W32)) <= tol32
    assert abs(st32.rel_error - st64.rel_error) <= tol32
    tight = sekron.decompose(W32, SCALE_SHAPES, tol=0.5, form=form)
    assert tight.rel_error <= 0.5 and scale_free_rel_error(tight.to_tensor(), W32) <= 0.5 + tol32


@pytest.mark.parametrize("scale", [1e-200, 1e200])
@pytest.mark.parametrize("form", ["nested", "chain"])
def test_issue_examples_at_extreme_scales(backend, form: str, scale: float) -> None:
    base = np.random.default_rng(0).standard_normal((8, 6, 4))
    shapes = [(2, 2, 2), (4, 3, 2)]
    true = sekron.decompose(base, shapes, rank=1, form=form).rel_error  # 0.82
    for dtype, s in (("float32", 1e20 if scale > 1 else 1e-20), ("float64", scale)):
        if dtype == "float64" and not backend.supports_float64:
            continue
        W = backend.asarray(base * s, dtype)
        st_ = sekron.decompose(W, shapes, rank=1, form=form)
        assert abs(st_.rel_error - true) <= tolerance(dtype)
        assert abs(st_.rel_error - scale_free_rel_error(to_numpy(st_.to_tensor()), base * s)) <= (
            tolerance(dtype)
        )
        picked = sekron.decompose(W, shapes, tol=0.5, form=form)
        assert picked.ranks == sekron.decompose(base, shapes, tol=0.5, form=form).ranks
        assert scale_free_rel_error(to_numpy(picked.to_tensor()), base * s) <= 0.5 + tolerance(
            dtype
        )


def test_no_svd_runs_before_the_arguments_are_checked(monkeypatch) -> None:
    import sekron._tree as tree

    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("SVD reached before validation finished")

    monkeypatch.setattr(tree, "truncated_svd", boom)
    big = np.zeros((1024, 1024))
    with pytest.raises(ValueError, match="max_params=3 is too small"):
        sekron.decompose(big, [(32, 32), (32, 32)], max_params=3)
    with pytest.raises(TypeError, match="refine must be a non-negative int"):
        sekron.decompose(big, [(32, 32), (32, 32)], refine="1")
    with pytest.raises(AssertionError, match="SVD reached"):  # the patch is where SVDs run
        sekron.decompose(big, [(32, 32), (32, 32)], rank=1)
