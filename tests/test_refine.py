"""sekron.refine: ALS from any warm start never increases the error; rank growth is exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sekron
from sekron.refinement import _with_ranks
from sekron.testing import sekron_problems, tolerance

TOL64 = tolerance(np.float64)


def measured(W: np.ndarray, s: sekron.SeKronTensor) -> float:
    return float(np.linalg.norm(W - s.to_tensor()) / np.linalg.norm(W))


@given(p=sekron_problems(), sweeps=st.integers(1, 4))
def test_refine_never_increases_the_error_and_reports_it_exactly(p, sweeps) -> None:
    start = sekron.decompose(p.tensor, p.shapes, rank=p.ranks, form=p.form)
    out = sekron.refine(p.tensor, start, sweeps=sweeps)
    assert out.ranks == start.ranks and out.form == start.form and out.shapes == start.shapes
    assert out.rel_error <= start.rel_error + TOL64
    assert abs(out.rel_error - measured(p.tensor, out)) <= TOL64


@given(
    p=sekron_problems(),
    extra=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    seed=st.integers(0, 9),
)
def test_grown_ranks_start_from_the_same_tensor(p, extra, seed) -> None:
    start = sekron.decompose(p.tensor, p.shapes, rank=p.ranks, form=p.form)
    grown = tuple(r + e for r, e in zip(start.ranks, extra, strict=False))
    factors = _with_ranks(list(start.factors), start, grown, np.random.default_rng(seed))
    bigger = sekron.SeKronTensor(factors, start.form)
    assert bigger.ranks == grown
    np.testing.assert_allclose(bigger.to_tensor(), start.to_tensor(), rtol=0, atol=1e-12)
    out = sekron.refine(p.tensor, start, rank=grown, sweeps=2, random_state=seed)
    assert out.ranks == grown
    assert out.rel_error <= start.rel_error + TOL64


def test_ranks_above_the_svd_cap_beat_the_capped_structure() -> None:
    # CP-like nested ranks (R, 1): R = 64 is the level-1 SVD rank of a (64, 16, 3, 3) tensor
    # split (64)(16)(3x3); a larger R is a valid structure and, refined, fits better
    W = np.random.default_rng(3).standard_normal((64, 16, 3, 3))
    shapes = [(64, 1, 1, 1), (1, 16, 1, 1), (1, 1, 3, 3)]
    capped = sekron.decompose(W, shapes, rank=[100, 1], refine=30)
    assert capped.ranks == (64, 1)
    above = sekron.refine(W, capped, rank=[100, 1], sweeps=30, random_state=0)
    assert above.ranks == (100, 1)
    assert above.rel_error < capped.rel_error - 1e-3
    assert abs(above.rel_error - measured(W, above)) <= TOL64


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_refine_is_scale_free(scale: float) -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 4))
    shapes = [(2, 2, 2), (4, 3, 2)]
    ref = sekron.refine(W, sekron.decompose(W, shapes, rank=1), sweeps=3)
    Ws = W * scale
    start = sekron.SeKronTensor(
        [f * (scale if k == 1 else 1.0) for k, f in enumerate(ref.factors)], ref.form
    )
    out = sekron.refine(Ws, start, sweeps=3)
    assert abs(out.rel_error - ref.rel_error) <= 1e-10


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_refine_of_a_start_that_carries_the_scale_in_its_first_factor(scale: float) -> None:
    # a family fit puts the scale into its first factor: Grams of the others must not overflow
    W = np.random.default_rng(1).standard_normal((8, 6, 4))
    shapes = [(2, 1, 2), (2, 3, 1), (2, 2, 2)]
    ref = sekron.refine(W, sekron.decompose(W, shapes, rank=[2, 2]), sweeps=3)
    start = sekron.SeKronTensor(
        [f * (scale if k == 0 else 1.0) for k, f in enumerate(ref.factors)], ref.form
    )
    out = sekron.refine(W * scale, start, sweeps=3)
    unscaled = sekron.refine(W, ref, sweeps=3)
    assert np.isfinite(out.rel_error) and abs(out.rel_error - unscaled.rel_error) <= 1e-10


def test_refine_keeps_kind_dtype_and_device(backend) -> None:
    W = backend.asarray(np.random.default_rng(0).standard_normal((8, 6, 4)), "float32")
    start = sekron.decompose(W, [(2, 2, 2), (4, 3, 2)], rank=2)
    out = sekron.refine(W, start, rank=3, sweeps=2, random_state=0)
    assert out.backend == backend.name and str(out.dtype) == str(W.dtype)
    assert out.rel_error <= start.rel_error + tolerance(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"st": "x"}, TypeError, "st must be a SeKronTensor; got str"),
        ({"sweeps": 0}, ValueError, "sweeps must be an int >= 1; got 0"),
        ({"sweeps": True}, TypeError, "sweeps must be an int >= 1"),
        ({"tol": 1.0}, ValueError, "tol must be a finite number >= 0 and < 1; got 1.0"),
        ({"rank": [1, 2, 3]}, ValueError, "rank has 3 entries but there are 1 levels"),
        ({"shape": (8, 6, 2)}, ValueError, "st has shape"),
        ({"dtype": np.float32}, TypeError, "st's factors are numpy float32"),
    ],
)
def test_refine_validates_its_arguments(kwargs, exc, match) -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 4))
    shapes = [(2, 2, 2), (4, 3, 2)]
    if "shape" in kwargs:
        start = sekron.decompose(W[..., :2], [(2, 2, 1), (4, 3, 2)], rank=1)
    else:
        start = sekron.decompose(W.astype(kwargs.get("dtype", np.float64)), shapes, rank=1)
    args = {k: v for k, v in kwargs.items() if k in ("sweeps", "tol", "rank")}
    with pytest.raises(exc, match=match):
        sekron.refine(W, kwargs.get("st", start), **args)


def test_refined_factors_are_balanced_and_the_tensor_is_unchanged() -> None:
    # a start whose factors differ in scale by 2**40 (what fine-tuning with one learning rate
    # handles badly) comes back with every factor's RMS within a factor of 2 of the others
    W = np.random.default_rng(2).standard_normal((8, 6, 4))
    shapes = [(2, 2, 2), (4, 3, 2)]
    st = sekron.decompose(W, shapes, rank=2)
    skewed = sekron.SeKronTensor([st.factors[0] * 2.0**20, st.factors[1] * 2.0**-20], st.form)
    out = sekron.refine(W, skewed, sweeps=1)
    rms = [np.sqrt(np.mean(np.square(f))) for f in out.factors]
    assert max(rms) / min(rms) <= 4.0
    assert abs(out.rel_error - measured(W, out)) <= TOL64
