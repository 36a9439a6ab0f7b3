"""kron equals the backends' own kron; R is inverted exactly; R turns ⊗ into ∘."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sekron
from sekron._backend import to_numpy
from sekron.testing import KronShapes, kron_shapes


def test_kron_equals_native_kron_for_two(backend) -> None:
    @settings(max_examples=backend.max_examples)
    @given(ks=kron_shapes(min_factors=2, max_factors=2, max_modes=4), seed=st.integers(0, 2**16))
    def check(ks: KronShapes, seed: int) -> None:
        compare_with_native_kron(backend, ks, seed)

    check()


def compare_with_native_kron(backend, ks: KronShapes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in ks.shapes)
    A, Bm = backend.asarray(a), backend.asarray(b)
    got = sekron.kron(A, Bm)
    if backend.name == "numpy":
        native = np.kron(A, Bm)
    elif backend.name == "pytorch":
        import torch

        native = torch.kron(A, Bm)
    else:
        import jax.numpy as jnp

        native = jnp.kron(A, Bm)
    assert type(got) is type(native)
    np.testing.assert_array_equal(to_numpy(got), to_numpy(native))


@given(ks=kron_shapes(min_factors=3, max_factors=4, max_modes=3), seed=st.integers(0, 2**16))
def test_kron_is_associative_and_matches_np_kron_chain(ks: KronShapes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in ks.shapes]
    ref = arrays[0]
    for a in arrays[1:]:
        ref = np.kron(ref, a)
    np.testing.assert_allclose(sekron.kron(*arrays), ref, rtol=1e-13, atol=0)
    right = sekron.kron(arrays[0], sekron.kron(*arrays[1:]))
    np.testing.assert_allclose(right, ref, rtol=1e-13, atol=0)


def test_kron_indexing_convention_first_factor_is_slowest() -> None:
    A = np.arange(6.0).reshape(2, 3)
    B = np.arange(1.0, 5.0).reshape(2, 2)
    K = sekron.kron(A, B)
    for i in range(4):
        for j in range(6):
            assert K[i, j] == A[i // 2, j // 2] * B[i % 2, j % 2]


def test_rearrange_is_inverted_exactly(backend) -> None:
    @settings(max_examples=backend.max_examples)
    @given(ks=kron_shapes(max_factors=4, max_modes=4), seed=st.integers(0, 2**16))
    def check(ks: KronShapes, seed: int) -> None:
        W = backend.asarray(np.random.default_rng(seed).standard_normal(ks.tensor_shape))
        T = sekron.rearrange(W, ks.shapes)
        assert tuple(T.shape) == tuple(int(np.prod(s)) for s in ks.shapes)
        back = sekron.unrearrange(T, ks.shapes)
        np.testing.assert_array_equal(to_numpy(back), to_numpy(W))

    check()


@given(ks=kron_shapes(max_factors=4, max_modes=3), seed=st.integers(0, 2**16))
def test_rearrange_turns_kron_into_outer_product(ks: KronShapes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in ks.shapes]
    T = sekron.rearrange(sekron.kron(*arrays), ks.shapes)
    outer = arrays[0].ravel()
    for a in arrays[1:]:
        outer = np.multiply.outer(outer, a.ravel())
    np.testing.assert_allclose(T, outer, rtol=1e-13, atol=1e-300)


def test_kron_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one array"):
        sekron.kron()
    with pytest.raises(ValueError, match="same number of modes; got ndims \\[2, 3\\]"):
        sekron.kron(np.ones((2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(TypeError, match="arrays\\[1\\] must be a numpy.ndarray.*got list"):
        sekron.kron(np.ones((2, 2)), [[1.0]])


def test_rearrange_bad_input() -> None:
    with pytest.raises(ValueError, match="mode 1: prod\\(s\\[1\\] for s in shapes\\) == 6"):
        sekron.rearrange(np.ones((4, 8)), [(2, 2), (2, 3)])
    with pytest.raises(ValueError, match="T has shape \\(4, 5\\) but shapes give R\\(W\\) shape"):
        sekron.unrearrange(np.ones((4, 5)), [(2, 2), (2, 2)])


@settings(max_examples=40, deadline=None)
@given(
    ks=kron_shapes(max_factors=4, max_side=3),
    form=st.sampled_from(["nested", "chain"]),
    rank=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_rearranged_products_equal_the_einsum(
    ks: KronShapes, form: str, rank: int, seed: int
) -> None:
    """R(Ŵ) by the matrix-product chain equals the einsum of the reconstruction equation (the
    contraction it replaced), on numpy and torch; on torch it comes out contiguous."""
    import opt_einsum

    from sekron._plan import factor_sizes, reconstruction_equation

    torch = pytest.importorskip("torch")
    st_np = sekron.random_sekron(ks.shapes, rank, form=form, random_state=seed)
    d = factor_sizes(st_np.shapes)
    n_modes = len(ks.shapes[0])
    flat = [
        f.reshape(f.shape[: f.ndim - n_modes] + (dk,))
        for f, dk in zip(st_np.factors, d, strict=True)
    ]
    expected = opt_einsum.contract(reconstruction_equation(len(flat), form), *flat)
    got = st_np.to_rearranged()
    assert got.shape == tuple(d)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # torch factors as non-contiguous views (a transposed copy, transposed back)
    views = [
        torch.from_numpy(f.T.copy()).permute(*range(f.ndim - 1, -1, -1)) for f in st_np.factors
    ]
    st_t = sekron.SeKronTensor(views, form=form)
    got_t = st_t.to_rearranged()
    assert got_t.is_contiguous() and got_t.dtype == torch.float64
    np.testing.assert_allclose(
        to_numpy(got_t), expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max()
    )


@pytest.mark.parametrize("form", ["nested", "chain"])
def test_rearranged_products_under_jax_jit(form: str) -> None:
    """The matrix-product chain traces under ``jax.jit`` and gives the einsum's R(Ŵ)."""
    jax = pytest.importorskip("jax")
    import opt_einsum

    from sekron._plan import factor_sizes, reconstruction_equation

    shapes = [(2, 3, 1), (3, 2, 2), (2, 2, 3)]
    st_np = sekron.random_sekron(shapes, 2, form=form, random_state=1, dtype="float32")
    d = factor_sizes(st_np.shapes)
    flat = [
        f.reshape(f.shape[: f.ndim - 3] + (dk,)) for f, dk in zip(st_np.factors, d, strict=True)
    ]
    expected = opt_einsum.contract(reconstruction_equation(3, form), *flat)

    def build(*factors: Any) -> Any:
        return sekron.SeKronTensor(list(factors), form=form).to_rearranged()

    got = jax.jit(build)(*(jax.numpy.asarray(f) for f in st_np.factors))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
