"""from_tensorly / to_tensorly: every embedding against TensorLy's own reconstruction."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly import random as tlr
from tensorly.cp_tensor import CPTensor
from tensorly.tr_tensor import TRTensor
from tensorly.tt_tensor import TTTensor
from tensorly.tucker_tensor import TuckerTensor

import sekron
from sekron._backend import _thread_backend, backend_name_of, to_numpy
from sekron._embeddings import _one_mode_shapes as one_mode_shapes
from sekron.testing import assert_close, tolerance


class NumpyOnly:
    """The numpy case of conftest's Backend helper, for the hypothesis tests."""

    name = "numpy"

    @staticmethod
    def asarray(data: Any, dtype: str = "float64") -> Any:
        return np.asarray(data, dtype=dtype)


TO_TENSOR = {
    CPTensor: tl.cp_to_tensor,
    TuckerTensor: tl.tucker_to_tensor,
    TTTensor: tl.tt_to_tensor,
    TRTensor: tl.tr_to_tensor,
}


def reconstruct(obj: Any, backend: str) -> Any:
    """TensorLy's own reconstruction, under the backend of obj's arrays, for this thread only
    and without importing TensorLy's jax backend module (``tl.backend_context("jax")`` does,
    which switches jax_enable_x64 on for the whole process)."""
    with _thread_backend(backend):
        return TO_TENSOR[type(obj)](obj)


def convert(obj: Any, backend: Any, dtype: str) -> Any:
    """A numpy TensorLy object with its arrays moved to ``backend``."""
    if isinstance(obj, CPTensor):
        factors = [backend.asarray(f, dtype) for f in obj.factors]
        return CPTensor((backend.asarray(obj.weights, dtype), factors))
    if isinstance(obj, TuckerTensor):
        factors = [backend.asarray(f, dtype) for f in obj.factors]
        return TuckerTensor((backend.asarray(obj.core, dtype), factors))
    return type(obj)([backend.asarray(f, dtype) for f in obj.factors])


@st.composite
def tensorly_objects(draw: Any) -> Any:
    """A random numpy CP, Tucker, TT or TR tensor with 2-4 small modes."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4)))
    kind = draw(st.sampled_from(["cp", "tucker", "tt", "tr"]))
    seed = draw(st.integers(0, 2**31 - 1))
    n = len(shape)
    with tl.backend_context("numpy"):
        if kind == "cp":
            return tlr.random_cp(shape, draw(st.integers(1, 4)), random_state=seed)
        if kind == "tucker":
            rank = [draw(st.integers(1, s)) for s in shape]
            return tlr.random_tucker(shape, rank, random_state=seed)
        if kind == "tt":
            rank = [1, *(draw(st.integers(1, 3)) for _ in range(n - 1)), 1]
            return tlr.random_tt(shape, rank, random_state=seed)
        q = [draw(st.integers(1, 3)) for _ in range(n)]
        rng = np.random.default_rng(seed)  # random_tr warns for matrices; build the cores here
        cores = [rng.standard_normal((q[k], shape[k], q[(k + 1) % n])) for k in range(n)]
        return TRTensor(cores)


FIXED = {
    "cp": lambda: tlr.random_cp((3, 4, 2, 3), 3, random_state=0),
    "tucker": lambda: tlr.random_tucker((3, 4, 2, 3), [2, 3, 2, 2], random_state=0),
    "tt": lambda: tlr.random_tt((3, 4, 2, 3), [1, 2, 3, 2, 1], random_state=0),
    "tr": lambda: tlr.random_tr((3, 4, 2, 3), [2, 3, 2, 2, 2], random_state=0),
}


def check_embedding(obj: Any, backend: Any, dtype: str) -> None:
    moved = convert(obj, backend, dtype)
    expected = reconstruct(moved, backend.name)
    forms = ["chain", "nested"] if isinstance(obj, TTTensor) else [None]
    for form in forms:
        stn = sekron.from_tensorly(moved, form=form)
        assert stn.backend == backend.name
        assert str(stn.dtype) == str(moved.factors[0].dtype)
        assert stn.shapes == one_mode_shapes(tuple(obj.shape))
        assert_close(stn.to_tensor(), expected)
        # round trip: SeKron -> TensorLy -> reconstruction, arrays staying on the backend
        back = sekron.to_tensorly(stn)
        assert all(backend_name_of(f) == backend.name for f in back.factors)
        assert_close(reconstruct(back, backend.name), expected)


@pytest.mark.parametrize("kind", sorted(FIXED))
def test_embedding_equals_tensorly_on_every_backend(
    backend: Any, float_dtype: str, kind: str
) -> None:
    with tl.backend_context("numpy"):
        obj = FIXED[kind]()
    check_embedding(obj, backend, float_dtype)


@given(obj=tensorly_objects())
def test_embedding_equals_tensorly_reconstruction(obj: Any) -> None:
    check_embedding(obj, NumpyOnly(), "float64")


@settings(max_examples=25)
@given(obj=tensorly_objects())
def test_embedding_parameter_counts(obj: Any) -> None:
    stn = sekron.from_tensorly(obj)
    n = tuple(obj.shape)
    if isinstance(obj, CPTensor):
        assert stn.ranks == (obj.rank,) + (1,) * (len(n) - 2)
        assert stn.n_params == obj.rank * sum(n) == sum(f.size for f in obj.factors)
    elif isinstance(obj, TTTensor):
        assert stn.form == "chain"
        assert stn.ranks == tuple(obj.rank[1:-1])
        assert stn.n_params == sum(f.size for f in obj.factors)
    elif isinstance(obj, TuckerTensor):
        t = obj.rank
        assert stn.ranks == tuple(t[:-1])
        expected = sum(prod(t[: k + 1]) * n[k] for k in range(len(n) - 1)) + prod(t[:-1]) * n[-1]
        assert stn.n_params == expected
    else:
        q = [f.shape[0] for f in obj.factors]
        assert stn.ranks == (q[0] * q[1], *q[2:])


@given(obj=tensorly_objects())
def test_round_trip_keeps_the_type(obj: Any) -> None:
    backend = NumpyOnly()
    moved = obj
    back = sekron.to_tensorly(sekron.from_tensorly(moved))
    if isinstance(obj, CPTensor | TTTensor):
        assert type(back) is type(obj)
        assert back.rank == obj.rank
    elif isinstance(obj, TuckerTensor) and any(t > 1 for t in obj.rank[1:-1]):
        assert isinstance(back, TuckerTensor)
        assert back.rank[:-1] == obj.rank[:-1]
    form = "nested" if isinstance(obj, TTTensor) else None
    for kind in ("cp", "tt", "tr"):
        converted = sekron.to_tensorly(sekron.from_tensorly(moved, form=form), kind=kind)
        assert_close(reconstruct(converted, backend.name), reconstruct(moved, backend.name))


@pytest.mark.parametrize("ranks", [(2, 3), (3, 5)])
def test_chain_equals_tensorly_tensor_train(backend: Any, float_dtype: str, ranks: tuple) -> None:
    W = backend.asarray(np.random.default_rng(sum(ranks)).standard_normal((4, 5, 6)), float_dtype)
    ours = sekron.decompose(W, one_mode_shapes((4, 5, 6)), rank=ranks, form="chain")
    assert ours.ranks == ranks
    with _thread_backend(backend.name):
        theirs = tl.decomposition.tensor_train(W, rank=[1, *ranks, 1])
        expected = tl.tt_to_tensor(theirs)
    assert_close(ours.to_tensor(), expected)
    assert_close(reconstruct(sekron.to_tensorly(ours), backend.name), expected)


def test_tucker2_layout_converts_to_tucker(backend: Any, float_dtype: str) -> None:
    rng = np.random.default_rng(0)
    A1 = backend.asarray(rng.standard_normal((3, 6, 1, 1, 1)), float_dtype)
    U = rng.standard_normal((1, 2, 1, 5, 1, 1))
    A2 = backend.asarray(np.broadcast_to(U, (3, 2, 1, 5, 1, 1)), float_dtype)
    A3 = backend.asarray(rng.standard_normal((3, 2, 1, 1, 3, 3)), float_dtype)
    stn = sekron.SeKronTensor([A1, A2, A3])
    back = sekron.to_tensorly(stn)
    assert isinstance(back, TuckerTensor)
    assert back.rank == (3, 2, 3, 3)
    assert_close(reconstruct(back, backend.name), stn.to_tensor())
    # the same layout with a factor that depends on r_1 is not Tucker
    A2b = backend.asarray(rng.standard_normal((3, 2, 1, 5, 1, 1)), float_dtype)
    with pytest.raises(ValueError, match="depend on r_k only"):
        sekron.to_tensorly(sekron.SeKronTensor([A1, A2b, A3]))


def test_tucker_last_mode_is_compressed_when_wide() -> None:
    with tl.backend_context("numpy"):
        obj = tlr.random_tucker((3, 4, 9), [2, 2, 2], random_state=0)
    back = sekron.to_tensorly(sekron.from_tensorly(obj))
    assert isinstance(back, TuckerTensor)
    assert back.rank == (2, 2, 4)  # the last factor spans prod(ranks) = 4 < 9 directions
    assert_close(tl.tucker_to_tensor(back), tl.tucker_to_tensor(obj))


def test_generic_nested_lifts_to_tt_and_cp() -> None:
    stn = sekron.random_sekron(one_mode_shapes((3, 4, 2, 3)), (2, 3, 2), random_state=1)
    expected = stn.to_tensor()
    tt = sekron.to_tensorly(stn)
    assert isinstance(tt, TTTensor)
    assert tt.rank == (1, 2, 6, 12, 1)  # lifted: P_k = R_1..R_k
    assert_close(tl.tt_to_tensor(tt), expected)
    cp = sekron.to_tensorly(stn, kind="cp")
    assert cp.rank == 12
    assert_close(tl.cp_to_tensor(cp), expected)
    with pytest.raises(ValueError, match="depends on earlier rank indices"):
        sekron.to_tensorly(stn, kind="tucker")


def test_torch_float32_and_gradients_follow() -> None:
    torch = pytest.importorskip("torch")
    with tl.backend_context("numpy"):
        obj = tlr.random_cp((3, 4, 5), 2, random_state=0)
    weights = torch.tensor(obj.weights, dtype=torch.float32, requires_grad=True)
    factors = [torch.tensor(f, dtype=torch.float32, requires_grad=True) for f in obj.factors]
    stn = sekron.from_tensorly(CPTensor((weights, factors)))
    assert stn.dtype == torch.float32
    stn.to_tensor().sum().backward()
    assert weights.grad is not None and all(f.grad is not None for f in factors)
    assert_close(stn.to_tensor(), tl.cp_to_tensor(obj), rtol=tolerance("float32"))


# -- errors ------------------------------------------------------------------------------------
def test_to_tensorly_explains_multi_mode_factors() -> None:
    W = np.random.default_rng(0).standard_normal((4, 6, 3))
    gkpd = sekron.decompose(W, [(2, 2, 3), (2, 3, 1)], rank=2)
    with pytest.raises(ValueError, match=r"shapes\[0\] = \(2, 2, 3\) spans 3 modes"):
        sekron.to_tensorly(gkpd)
    chain = sekron.decompose(W, [(4, 1, 1), (1, 2, 3), (1, 3, 1)], rank=2, form="chain")
    with pytest.raises(ValueError, match=r"shapes\[1\] = \(1, 2, 3\) spans 2 modes; TT needs"):
        sekron.to_tensorly(chain)
    swapped = sekron.decompose(W, [(1, 6, 1), (4, 1, 1), (1, 1, 3)], rank=2, form="chain")
    with pytest.raises(ValueError, match="holds mode 1; TT needs factor k on mode k"):
        sekron.to_tensorly(swapped)
    tt = sekron.decompose(W, one_mode_shapes((4, 6, 3)), rank=2, form="chain")
    with pytest.raises(ValueError, match="converts to 'tt' or 'tr' only"):
        sekron.to_tensorly(tt, kind="cp")
    with pytest.raises(ValueError, match="kind must be None or one of"):
        sekron.to_tensorly(tt, kind="ttm")
    with pytest.raises(TypeError, match="st must be a SeKronTensor; got numpy.ndarray"):
        sekron.to_tensorly(W)


def test_from_tensorly_errors() -> None:
    with pytest.raises(TypeError, match="CPTensor, TuckerTensor, TTTensor or TRTensor; got numpy"):
        sekron.from_tensorly(np.ones((2, 2)))
    with tl.backend_context("numpy"):
        cp = tlr.random_cp((3, 4), 2, random_state=0)
        tt = tlr.random_tt((3, 4, 2), [1, 2, 2, 1], random_state=0)
    with pytest.raises(ValueError, match="form='chain' embeds a TTTensor only"):
        sekron.from_tensorly(cp, form="chain")
    with pytest.raises(ValueError, match="form must be None, 'chain' or 'nested'"):
        sekron.from_tensorly(tt, form="ring")
    mixed = CPTensor((cp.weights.astype(np.float32), cp.factors))
    with pytest.raises(TypeError, match="must share one dtype"):
        sekron.from_tensorly(mixed)
    one_mode = CPTensor((np.ones(2), [np.ones((3, 2))]))
    with pytest.raises(ValueError, match="at least 2 modes"):
        sekron.from_tensorly(one_mode)


def test_to_tensorly_leaves_arrays_on_their_backend(backend: Any, float_dtype: str) -> None:
    W = backend.asarray(np.random.default_rng(3).standard_normal((3, 4, 5)), float_dtype)
    stn = sekron.decompose(W, one_mode_shapes((3, 4, 5)), rank=2)
    for kind in (None, "cp", "tt", "tr"):
        obj = sekron.to_tensorly(stn, kind=kind)
        assert all(backend_name_of(f) == backend.name for f in obj.factors)
        assert all(str(f.dtype) == str(stn.dtype) for f in obj.factors)
        np.testing.assert_equal(to_numpy(reconstruct(obj, backend.name)).shape, (3, 4, 5))


@pytest.mark.parametrize("module", ["sekron.interop", "sekron.structures", "sekron.compare"])
def test_all_lists_exactly_the_public_names(module: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(module)
    public = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", module).startswith(module)
    }
    assert public <= set(mod.__all__)
    assert list(mod.__all__) == sorted(mod.__all__)
    assert "thread_backend" not in vars(mod)  # TensorLy's private thread state stays private
    for name in mod.__all__:
        assert hasattr(mod, name), name
