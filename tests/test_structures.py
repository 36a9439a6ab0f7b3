"""sekron.structures: each structure's own fit, embedded exactly, and its own parameter count."""

from __future__ import annotations

import itertools
import threading
from math import prod
from typing import Any

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.decomposition import parafac, partial_tucker, tensor_ring, tensor_train, tucker

import sekron
from sekron.structures import (
    CP,
    GKPD,
    TR,
    TT,
    BudgetTooSmall,
    FitResult,
    General,
    Tucker,
    Tucker2,
    balanced_split,
    get_structure,
)
from sekron.testing import assert_close, rel_error, tolerance

ALL = [TT(), TR(), CP(), Tucker(), Tucker2(), GKPD()]


def numpy_fit(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with tl.backend_context("numpy"):
        return fn(*args, **kwargs)


def usable(t: list[int], kept: int = 1) -> list[int]:
    """Tucker ranks above ``kept * prod(other ranks)`` cannot be used: cap them (a fixed point)."""
    while any(t[k] > kept * prod(t[:k] + t[k + 1 :]) for k in range(len(t))):
        t = [min(t[k], kept * prod(t[:k] + t[k + 1 :])) for k in range(len(t))]
    return t


shapes3 = st.lists(st.integers(1, 5), min_size=3, max_size=4).map(tuple)


# -- lookup ------------------------------------------------------------------------------------
def test_get_structure() -> None:
    for s in ALL:
        assert get_structure(s.name) == s
        assert get_structure(s.name.upper()) == s
        assert get_structure(s) is s
    g = General([(2, 1), (2, 3)])
    assert get_structure(g) is g
    with pytest.raises(ValueError, match="unknown structure 'ttm'; known names are"):
        get_structure("ttm")
    with pytest.raises(TypeError, match="structure name or a Structure; got int"):
        get_structure(3)  # type: ignore[arg-type]


def test_structures_are_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        CP().n_iter_max = 5  # type: ignore[misc]
    assert len({GKPD(), GKPD([(2, 2), (2, 2)]), General([(2, 2), (2, 2)], form="chain")}) == 3


# -- parameter counts against TensorLy's own factor sizes -------------------------------------
@settings(max_examples=25)
@given(shape=shapes3, r=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_counts_match_tensorly_factor_sizes(shape: tuple, r: int, seed: int) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    n = len(shape)
    tk = numpy_fit(tucker, W, rank=usable([min(r, s) for s in shape]), n_iter_max=1)
    assert Tucker().n_params(shape, r) == tk.core.size + sum(f.size for f in tk.factors)
    tt = numpy_fit(tensor_train, W, rank=[1, *([r] * (n - 1)), 1])
    assert TT().n_params(shape, r) == sum(f.size for f in tt.factors)
    r_cp = min(r, min(prod(shape) // s for s in shape))  # every tensor is CP at this rank
    cp = numpy_fit(parafac, W, r_cp, n_iter_max=1, init="random", random_state=seed)
    assert CP().n_params(shape, r) == sum(f.size for f in cp.factors) == r_cp * sum(shape)
    if r * r <= min(shape[0], prod(shape[1:])):
        tr = numpy_fit(tensor_ring, W, rank=r)
        assert TR().n_params(shape, r) == sum(f.size for f in tr.factors)
    rf, rc = usable([min(r, shape[0]), min(r + 1, shape[1])], prod(shape[2:]))
    (core, factors), _ = numpy_fit(partial_tucker, W, rank=[rf, rc], modes=[0, 1], n_iter_max=1)
    assert Tucker2().n_params(shape, (r, r + 1)) == core.size + sum(f.size for f in factors)


@settings(max_examples=15)
@given(shape=shapes3, r=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fits_are_embeddings_with_measured_error(shape: tuple, r: int, seed: int) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    for s in ALL:
        if s.name == "tr" and r * r > min(shape[0], prod(shape[1:])):
            continue
        out = s.fit(W, rank=r, random_state=seed)
        assert out.shapes == s.shapes_for(shape)
        assert abs(out.rel_error - rel_error(out.to_tensor(), W)) <= tolerance("float64")
        if s.name in ("tt", "cp", "gkpd"):  # their own count is the embedding's count
            assert out.n_params == s.n_params(shape, r)


# -- each fit is the embedding of the structure's own algorithm (oracles) ---------------------
def test_fits_equal_tensorly_algorithms(backend: Any, float_dtype: str) -> None:
    W64 = np.random.default_rng(1).standard_normal((4, 5, 3, 3))
    W = backend.asarray(W64, float_dtype)
    rtol = tolerance(float_dtype) if float_dtype == "float64" else 2e-2
    cases = {
        "cp": (CP().fit(W, rank=3), tl.cp_to_tensor(numpy_fit(parafac, W64, 3, tol=1e-8))),
        "tucker": (
            Tucker().fit(W, rank=(2, 3, 2, 2)),
            tl.tucker_to_tensor(numpy_fit(tucker, W64, rank=[2, 3, 2, 2], tol=1e-8)),
        ),
        "tr": (TR().fit(W, rank=2), tl.tr_to_tensor(numpy_fit(tensor_ring, W64, rank=2))),
        "tt": (
            TT().fit(W, rank=(3, 4, 3)),
            tl.tt_to_tensor(numpy_fit(tensor_train, W64, [1, 3, 4, 3, 1])),
        ),
    }
    (core, factors), _ = numpy_fit(partial_tucker, W64, rank=[3, 2], modes=[0, 1], tol=1e-8)
    expected = numpy_fit(tl.tenalg.multi_mode_dot, core, factors, modes=[0, 1])
    cases["tucker2"] = (Tucker2().fit(W, rank=(3, 2)), expected)
    for name, (out, expected) in cases.items():
        assert out.backend == backend.name, name
        assert str(out.dtype) == str(W.dtype), name
        assert_close(out.to_tensor(), expected, rtol=rtol)


def test_full_ranks_are_exact(backend: Any, float_dtype: str) -> None:
    W = backend.asarray(np.random.default_rng(2).standard_normal((4, 6, 2, 3)), float_dtype)
    for s in (TT(), Tucker(), Tucker2(), GKPD(), General([(2, 3, 1, 3), (2, 2, 2, 1)], "chain")):
        out = s.fit(W)
        assert out.rel_error <= tolerance(float_dtype), s.name
        assert_close(out.to_tensor(), W)


def test_tucker2_embedding_layout() -> None:
    W = np.random.default_rng(3).standard_normal((6, 4, 3, 3))
    out = Tucker2().fit(W, rank=(3, 2))
    assert out.shapes == ((6, 1, 1, 1), (1, 4, 1, 1), (1, 1, 3, 3))
    assert out.ranks == (3, 2)
    back = sekron.to_tensorly(out)  # a Tucker with identity factors on the kept modes
    assert back.rank == (3, 2, 3, 3)
    assert_close(tl.tucker_to_tensor(back), out.to_tensor())


# -- budgets ----------------------------------------------------------------------------------
@settings(max_examples=15)
@given(shape=shapes3, frac=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_budgets_are_respected(shape: tuple, frac: float, seed: int) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    budget = max(int(frac * prod(shape)), sum(shape) + 1)
    for s in (TT(), CP(), Tucker(), Tucker2(), GKPD()):
        try:
            out = s.fit(W, max_params=budget, random_state=0)
        except ValueError as exc:
            assert "too small" in str(exc)
            continue
        if s.name in ("tt", "cp", "gkpd"):
            assert out.n_params <= budget
        elif s.name == "tucker2":
            assert Tucker2().n_params(shape, out.ranks) <= budget
        else:  # Tucker: the embedding shows t_1..t_{N-1}; t_N >= 1
            assert Tucker().n_params(shape, (*out.ranks, 1)) <= budget
    r_cp = budget // sum(shape)
    assert CP().fit(W, max_params=budget, random_state=0).ranks[0] == r_cp


def test_tucker_budget_minimises_the_hosvd_bound() -> None:
    W = np.random.default_rng(4).standard_normal((3, 4, 5)) + np.einsum(
        "i,j,k->ijk", np.arange(3.0), np.ones(4), np.arange(5.0)
    )
    budget = 40

    def tail(mode: int, t: int) -> float:
        M = np.moveaxis(W, mode, 0).reshape(W.shape[mode], -1)
        s = np.linalg.svd(M, compute_uv=False)
        return float((s[t:] ** 2).sum())

    best = min(
        (sum(tail(k, t[k]) for k in range(3)), t)
        for t in itertools.product(*(range(1, n + 1) for n in W.shape))
        if usable(list(t)) == list(t)
        and prod(t) + sum(a * b for a, b in zip(t, W.shape, strict=True)) <= budget
    )
    out = Tucker().fit(W, max_params=budget)
    assert out.ranks == best[1][:2]
    assert Tucker().n_params(W.shape, best[1]) <= budget


def test_tr_budget_takes_the_largest_uniform_rank() -> None:
    W = np.random.default_rng(5).standard_normal((9, 4, 4))
    budget = TR().n_params(W.shape, 2) + 1
    assert TR().n_params(W.shape, 3) > budget
    assert TR().fit(W, max_params=budget).ranks == (4, 2)


def test_balanced_split() -> None:
    assert balanced_split((64, 64, 3, 3)) == ((8, 8, 3, 1), (8, 8, 1, 3))
    for shape in [(12, 10, 7), (1, 5), (16,)]:
        a, b = balanced_split(shape)
        assert tuple(x * y for x, y in zip(a, b, strict=True)) == shape


# -- the caller's TensorLy backend is untouched ------------------------------------------------
def test_fit_restores_the_thread_backend() -> None:
    pytest.importorskip("torch")
    W = np.random.default_rng(6).standard_normal((3, 4, 5))
    seen: list[str] = []

    def worker() -> None:
        tl.set_backend("pytorch", local_threadsafe=True)  # this thread only
        CP().fit(W, rank=2, random_state=0)
        seen.append(tl.get_backend())

    before = tl.get_backend()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == ["pytorch"]
    assert tl.get_backend() == before  # other threads never saw a change
    with tl.backend_context("pytorch"):
        TR().fit(W, rank=1)
        Tucker().fit(W, rank=2)
        assert tl.get_backend() == "pytorch"
    assert tl.get_backend() == before


def test_random_state_makes_cp_deterministic() -> None:
    W = np.random.default_rng(7).standard_normal((3, 4, 5))
    s = CP(init="random", n_iter_max=5)
    a, b = s.fit(W, rank=2, random_state=3), s.fit(W, rank=2, random_state=3)
    for x, y in zip(a.factors, b.factors, strict=True):
        np.testing.assert_array_equal(x, y)


# -- errors ------------------------------------------------------------------------------------
def test_errors() -> None:
    W = np.random.default_rng(8).standard_normal((4, 4, 4))
    with pytest.raises(ValueError, match="at most one of rank and max_params"):
        TT().fit(W, rank=2, max_params=100)
    with pytest.raises(ValueError, match="CP needs rank or max_params"):
        CP().fit(W)
    with pytest.raises(ValueError, match="TR needs rank or max_params"):
        TR().fit(W)
    with pytest.raises(ValueError, match="q_0 \\* q_1 <= min"):
        TR().fit(W, rank=3)
    with pytest.raises(ValueError, match="rank has 3 entries but TT of 3 modes"):
        TT().fit(W, rank=(1, 2, 4))
    with pytest.raises(ValueError, match="Tucker2 needs a tensor of at least 3 modes"):
        Tucker2().fit(np.ones((3, 3)))
    with pytest.raises(ValueError, match="max_params=5 is too small for CP"):
        CP().fit(W, max_params=5)
    with pytest.raises(ValueError, match="GKPD has S = 2 factors"):
        GKPD([(2, 1), (2, 1), (1, 4)])
    with pytest.raises(ValueError, match="rank\\[0\\] and rank\\[-1\\] are both q_0"):
        TR().n_params((4, 4, 4), (1, 2, 2, 2))
    with pytest.raises(TypeError, match="tensor must be a numpy.ndarray"):
        Tucker().fit([[1.0]])


# -- the fit result: the family's own ranks and count -----------------------------------------
OWN_RANKS = {  # the rank notation of each family at rank r for a tensor of n modes
    "tt": lambda r, n: (r,) * (n - 1),
    "cp": lambda r, n: (r,),
    "tucker": lambda r, n: (r,) * n,
    "tucker2": lambda r, n: (r, r),
    "gkpd": lambda r, n: (r,),
}


@settings(max_examples=10)
@given(shape=st.lists(st.integers(3, 5), min_size=3, max_size=4).map(tuple), r=st.integers(1, 2))
def test_fit_result_has_the_familys_own_ranks_and_count(shape: tuple, r: int) -> None:
    W = np.random.default_rng(0).standard_normal(shape)
    for s in [*ALL, General([(1,) * (len(shape) - 1) + (shape[-1],), shape[:-1] + (1,)])]:
        if s.name == "tr" and r * r > shape[0]:
            continue
        fit = s.fit_result(W, rank=r, random_state=0)
        assert isinstance(fit, FitResult) and fit.structure == s
        assert fit.n_params == s.n_params(shape, fit.ranks)  # its own count at its own ranks
        if s.name in OWN_RANKS:
            assert fit.ranks == OWN_RANKS[s.name](r, len(shape))
        if s.name == "tr":  # the ring ranks q_0..q_{N-1}, not the embedding's (q_0 q_1, ..)
            assert len(fit.ranks) == len(shape) and fit.ranks[:2] == (r, r)
        assert fit.rel_error == fit.embedding.rel_error
        np.testing.assert_array_equal(
            fit.embedding.to_tensor(), s.fit(W, rank=r, random_state=0).to_tensor()
        )
    assert CP().fit_result(W, rank=r).describe_ranks() == f"rank {r}"
    assert Tucker().fit_result(W, rank=r).describe_ranks().count(",") == len(shape) - 1


@settings(max_examples=10)
@given(shape=shapes3, frac=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_budget_fits_use_at_most_the_budget_in_their_own_count(
    shape: tuple, frac: float, seed: int
) -> None:
    W = np.random.default_rng(seed).standard_normal(shape)
    budget = max(int(frac * prod(shape)), 1)
    for s in ALL:
        if s.min_modes > len(shape):
            continue
        if budget < s.min_params(shape):
            with pytest.raises(BudgetTooSmall) as info:
                s.fit_result(W, max_params=budget)
            assert (info.value.budget, info.value.smallest) == (budget, s.min_params(shape))
            continue
        fit = s.fit_result(W, max_params=budget, random_state=0)
        assert fit.n_params <= budget
        assert fit.n_params == s.n_params(shape, fit.ranks)


# -- degenerate tensors: every family returns its exact fit (issue #10, kind 8) ----------------
def _degenerate() -> dict[str, tuple[np.ndarray, int]]:
    """name: (tensor, its CP rank)."""
    rng = np.random.default_rng(11)
    u = [rng.standard_normal((n, 2)) for n in (6, 4, 5)]
    return {
        "zero": (np.zeros((6, 4, 5)), 0),
        "constant": (np.full((6, 4, 5), -2.5), 1),
        "rank-1": (np.einsum("i,j,k->ijk", u[0][:, 0], u[1][:, 0], u[2][:, 0]), 1),
        "rank-2": (np.einsum("ir,jr,kr->ijk", *u), 2),
        "rank-1 int": (np.ones((6, 4, 5), dtype=np.int64) * 3, 1),
    }


@pytest.mark.parametrize("name", list(_degenerate()))
def test_degenerate_tensors_get_exact_fits(name: str) -> None:
    W, cp_rank = _degenerate()[name]
    tol = 1e-6  # ALS converges to tol=1e-8 in the relative error
    for R in (1, 2, 3, 4):
        fit = CP().fit_result(W, rank=R, random_state=0)
        if R >= cp_rank:
            assert fit.rel_error <= tol, (name, R)
        assert np.isfinite(fit.rel_error)
        assert abs(fit.rel_error - rel_error(fit.embedding.to_tensor(), W)) <= tol or not W.any()
    low = max(cp_rank, 1)
    for s in (TT(), Tucker(), Tucker2(), TR()):
        if s.name == "tr" and low > 1:
            continue
        fit = s.fit_result(W, rank=low, random_state=0)
        assert fit.rel_error <= tolerance("float64"), (name, s.name)
    if cp_rank <= 1 and name != "rank-1":  # zero and constant tensors are Kronecker rank 1
        assert GKPD().fit(W, rank=1).rel_error <= tolerance("float64")
    assert CP().fit(W, max_params=10 * sum(W.shape)).rel_error <= tol


def test_cp_of_the_zero_tensor_is_zero() -> None:
    out = CP().fit(np.zeros((6, 4, 5)), rank=1)
    assert out.rel_error == 0.0
    assert not np.asarray(out.to_tensor()).any()


# -- scale: the error does not depend on the tensor's scale (issue #10, kind 1) ----------------
SCALED = [TT(), TR(), CP(), Tucker(), Tucker2(), GKPD(), General([(2, 2, 1, 3), (3, 2, 3, 1)])]


@settings(max_examples=12)
@given(exponent=st.integers(-200, 200), k=st.integers(0, len(SCALED) - 1))
def test_fits_are_scale_invariant_float64(exponent: int, k: int) -> None:
    _check_scale(SCALED[k], "float64", 10.0**exponent)


@settings(max_examples=12)
@given(exponent=st.integers(-20, 20), k=st.integers(0, len(SCALED) - 1))
def test_fits_are_scale_invariant_float32(exponent: int, k: int) -> None:
    _check_scale(SCALED[k], "float32", 10.0**exponent)


@pytest.mark.parametrize("s", SCALED, ids=lambda s: s.name)
def test_fits_at_extreme_scales(s: Any) -> None:
    for dtype, exponents in (("float64", (-200, 200)), ("float32", (-20, 20))):
        for e in exponents:
            _check_scale(s, dtype, 10.0**e)


def _check_scale(s: Any, dtype: str, scale: float) -> None:
    base = np.random.default_rng(12).standard_normal((6, 4, 3, 3)).astype(dtype)
    W = (base.astype(np.float64) * scale).astype(dtype)
    rank = 1 if s.name == "tr" else 2
    ref = s.fit_result(base, rank=rank, random_state=0)
    out = s.fit_result(W, rank=rank, random_state=0)
    assert np.isfinite(out.rel_error) and 0.0 < out.rel_error < 1.0
    assert abs(out.rel_error - ref.rel_error) <= (1e-3 if dtype == "float32" else 1e-6)
    # the reported error is the measured one: measure on the rescaled reconstruction
    back = np.asarray(out.embedding.to_tensor(), np.float64) / scale
    measured = rel_error(back, W.astype(np.float64) / scale)
    assert abs(out.rel_error - measured) <= 10 * tolerance(dtype)


@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=5),
    rank=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_cp_mttkrp_equals_the_unfolding_times_the_khatri_rao_product(shape, rank, seed) -> None:
    """The MTTKRP contracts mode by mode without forming the Khatri-Rao product (which held
    gigabytes for a 512x512x3x3 weight); oracle: TensorLy's unfolding_dot_khatri_rao."""
    from sekron.structures._cp import _mttkrp

    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape)
    factors = [rng.standard_normal((n, rank)) for n in shape]
    for mode in range(len(shape)):
        with tl.backend_context("numpy"):
            want = tl.tenalg.unfolding_dot_khatri_rao(X, (None, factors), mode)
        got = _mttkrp(X, factors, mode)
        assert got.shape == (shape[mode], rank)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * (1 + np.abs(want).max()))


@pytest.mark.parametrize("name", ["tt", "tr", "cp", "tucker", "tucker2", "gkpd"])
def test_fits_of_float32_near_its_largest_value_stay_finite(name: str) -> None:
    """The fit runs on W scaled into [0.5, 1) and the scale goes back into the first factor;
    near float32's 3.4e38 one factor cannot hold it (CP's came back with inf entries, its
    reported error computed on the scaled fit: a silent wrong answer)."""
    base = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    W = (base / np.max(np.abs(base)) * 2.0**127).astype(np.float32)
    fit = get_structure(name).fit_result(W, max_params=W.size // 2, random_state=0)
    factors = fit.embedding.factors
    assert all(np.isfinite(f).all() for f in factors)
    # measured on the float64 embedding divided by 2**127 (CP's rank-one terms are larger than
    # W where they cancel: in float32 at this scale they overflow however they are summed)
    down = [f.astype(np.float64) * (2.0**-127 if k == 0 else 1.0) for k, f in enumerate(factors)]
    approx = sekron.SeKronTensor(down, fit.embedding.form).to_tensor()
    measured = rel_error(approx, W.astype(np.float64) * 2.0**-127)
    assert abs(fit.rel_error - measured) <= tolerance(np.float32)
