"""Public API surface, backends (kind/dtype in = kind/dtype out), global state, autograd."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sekron
from sekron._backend import backend_name_of, to_numpy
from sekron.testing import assert_close, tolerance

SHAPES = [(2, 2, 3, 1), (2, 3, 1, 3), (2, 1, 1, 1)]


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(sekron).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    modules_in_all = {n for n in sekron.__all__ if inspect.ismodule(getattr(sekron, n))}
    assert public == set(sekron.__all__) - modules_in_all - {"__version__"}
    assert list(sekron.__all__) == sorted(sekron.__all__)
    for name in sekron.__all__:
        assert hasattr(sekron, name), name


@pytest.mark.parametrize("form", ["nested", "chain"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kind_and_dtype_follow_the_input(backend, form: str, dtype: str) -> None:
    if dtype == "float64" and not backend.supports_float64:
        pytest.skip("jax without x64 has no float64 arrays")
    W = backend.asarray(np.random.default_rng(0).standard_normal((8, 6, 3, 3)), dtype)
    st = sekron.decompose(W, SHAPES, rank=[2, 2], form=form)
    assert st.backend == backend.name
    assert all(backend_name_of(f) == backend.name for f in st.factors)
    assert all(str(f.dtype).endswith(dtype) for f in st.factors)
    out = st.to_tensor()
    assert backend_name_of(out) == backend.name
    assert str(out.dtype).endswith(dtype)
    assert tuple(out.shape) == (8, 6, 3, 3)


def test_factor_layouts_follow_the_spec() -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    nested = sekron.decompose(W, SHAPES, rank=[3, 2])
    assert [f.shape for f in nested.factors] == [
        (3, 2, 2, 3, 1),
        (3, 2, 2, 3, 1, 3),
        (3, 2, 2, 1, 1, 1),
    ]
    chain = sekron.decompose(W, SHAPES, rank=[3, 2], form="chain")
    assert [f.shape for f in chain.factors] == [
        (1, 3, 2, 2, 3, 1),
        (3, 2, 2, 3, 1, 3),
        (2, 1, 2, 1, 1, 1),
    ]
    assert nested.n_params == sum(f.size for f in nested.factors)
    assert chain.n_params == sum(f.size for f in chain.factors)


def test_to_tensor_equals_explicit_sum_of_np_kron_chains() -> None:
    """Oracle for the planned einsum: the definition of both forms, term by term."""
    rng = np.random.default_rng(1)
    nested = sekron.random_sekron(SHAPES, [3, 2], random_state=rng)
    A1, A2, A3 = nested.factors
    ref = sum(np.kron(A1[a], np.kron(A2[a, b], A3[a, b])) for a in range(3) for b in range(2))
    assert_close(nested.to_tensor(), ref)
    chain = sekron.random_sekron(SHAPES, [3, 2], form="chain", random_state=rng)
    C1, C2, C3 = chain.factors
    ref = sum(np.kron(C1[0, a], np.kron(C2[a, b], C3[b, 0])) for a in range(3) for b in range(2))
    assert_close(chain.to_tensor(), ref)


def test_repr_pickle_and_immutability() -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    st = sekron.decompose(W, SHAPES, rank=[2, 2])
    assert repr(st).startswith(
        "nested SeKronTensor of shape (8, 6, 3, 3): 3 factors, ranks (2, 2), "
    )
    assert f"{st.n_params:,} params" in repr(st)
    back = pickle.loads(pickle.dumps(st))
    assert back.rel_error == st.rel_error and back.ranks == st.ranks and back.form == st.form
    np.testing.assert_array_equal(back.to_tensor(), st.to_tensor())
    with pytest.raises(AttributeError):
        st.ranks = (1, 1)  # type: ignore[misc]
    built = sekron.SeKronTensor(st.factors)
    assert built.rel_error is None
    assert "error" not in repr(built)


def test_deprecated_error_names_still_work_and_warn() -> None:
    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    st = sekron.decompose(W, SHAPES, rank=[2, 2])
    with pytest.warns(DeprecationWarning, match="rel_error"):
        assert st.error == st.rel_error
    with pytest.warns(DeprecationWarning, match="rel_error"):
        old = sekron.SeKronTensor(st.factors, error=0.25)
    assert old.rel_error == 0.25


def test_to_tensor_is_differentiable_in_the_factors() -> None:
    torch = pytest.importorskip("torch")
    for form in ("nested", "chain"):
        st = sekron.random_sekron(
            [(2, 1, 2), (1, 3, 2)], 2, form=form, backend="pytorch", random_state=0
        )
        leaves = [f.clone().requires_grad_(True) for f in st.factors]

        def fn(*fs, form=form):
            return sekron.SeKronTensor(list(fs), form).to_tensor()

        assert torch.autograd.gradcheck(fn, tuple(leaves))


def test_decompose_of_a_tensor_requiring_grad_returns_leaf_factors() -> None:
    torch = pytest.importorskip("torch")
    data = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    W = torch.tensor(data, requires_grad=True)
    st = sekron.decompose(W, SHAPES, rank=[2, 2])
    assert not any(f.requires_grad for f in st.factors)
    assert abs(
        st.rel_error - np.linalg.norm(data - to_numpy(st.to_tensor())) / np.linalg.norm(data)
    ) <= tolerance(torch.float64)


def test_the_active_tensorly_backend_is_respected_not_changed() -> None:
    pytest.importorskip("torch")
    import tensorly as tl
    import torch

    W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
    with tl.backend_context("pytorch"):
        st = sekron.decompose(W, SHAPES, rank=2)  # numpy in: numpy out, whatever is active
        assert tl.get_backend() == "pytorch"
    assert isinstance(st.factors[0], np.ndarray)
    st_t = sekron.decompose(torch.from_numpy(W), SHAPES, rank=2)
    assert isinstance(st_t.factors[0], torch.Tensor)
    assert tl.get_backend() == "numpy"


def test_import_and_calls_change_no_global_state() -> None:
    code = textwrap.dedent(
        """
        import numpy as np, tensorly as tl
        import torch, jax  # importing jax itself draws from numpy's global RNG: not ours
        np.random.seed(123)
        state = np.random.get_state()[1].copy()
        torch.manual_seed(5)
        torch_state = torch.random.get_rng_state().clone()
        x64 = jax.config.read("jax_enable_x64")
        import sekron, sekron.torch, sekron.testing
        W = np.random.default_rng(0).standard_normal((8, 6, 3, 3))
        sekron.decompose(W, [(4, 2, 3, 1), (2, 3, 1, 3)], rank=2, svd="randomized")
        sekron.decompose(torch.from_numpy(W), [(4, 2, 3, 1), (2, 3, 1, 3)], rank=2)
        sekron.decompose(jax.numpy.asarray(W), [(4, 2, 3, 1), (2, 3, 1, 3)], rank=2)
        sekron.random_sekron([(2,), (3,)], 1)
        assert tl.get_backend() == "numpy", tl.get_backend()
        assert (np.random.get_state()[1] == state).all(), "numpy global RNG changed"
        assert torch.equal(torch.random.get_rng_state(), torch_state), "torch RNG changed"
        assert jax.config.read("jax_enable_x64") == x64, "jax x64 changed"
        print("ok")
        """
    )
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_random_sekron_backends_and_dtypes(backend) -> None:
    dtype = "float64" if backend.supports_float64 else "float32"
    st = sekron.random_sekron(SHAPES, [2, 2], backend=backend.name, dtype=dtype, random_state=0)
    assert st.backend == backend.name
    assert str(st.dtype).endswith(dtype)
    ref = sekron.random_sekron(SHAPES, [2, 2], random_state=0)
    assert_close(to_numpy(st.to_tensor()), ref.to_tensor(), rtol=tolerance(dtype))
