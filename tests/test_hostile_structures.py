"""Hostile inputs at the entry points of structures, compare and interop (issue #10).

Every call either returns a correct result or raises a ValueError/TypeError raised by sekron's
own code (the last traceback frame is in sekron) whose message names the argument.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from tensorly.cp_tensor import CPTensor

import sekron
from sekron.compare import CompareTable, compare
from sekron.structures import CP, GKPD, TR, TT, General, Tucker, Tucker2, get_structure
from sekron.testing import rel_error, tolerance

W = np.random.default_rng(0).standard_normal((6, 4, 3, 3))
STRUCTURES = [TT(), TR(), CP(), Tucker(), Tucker2(), GKPD(), General([(2, 2, 3, 1), (3, 2, 1, 3)])]
IDS = [s.name for s in STRUCTURES]


def refused(exc: Any, match: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """``fn`` raises ``exc`` matching ``match`` from a frame of sekron's own code."""
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert "sekron" in str(info.traceback[-1].path), info.traceback[-1].path


def masked_nan() -> np.ndarray:
    return np.ma.masked_invalid(np.where(W > 1, np.nan, W))


BAD_TENSORS = [
    ([[1.0, 2.0]], TypeError, "tensor must be a numpy.ndarray"),
    (masked_nan(), TypeError, "tensor must be a plain numpy.ndarray"),
    (np.array(1.0), ValueError, "tensor must have at least one mode"),
    (np.zeros((0, 4, 3)), ValueError, "tensor is empty"),
    (np.full((3, 4, 2), np.nan), ValueError, "tensor contains NaN or Inf"),
    (np.full((3, 4, 2), np.inf), ValueError, "tensor contains NaN or Inf"),
    (np.ones((3, 4, 2), np.complex128), TypeError, "tensor has complex dtype"),
    (np.ones((3, 4, 2), np.float16), TypeError, "tensor has dtype float16"),
    (np.ones((3, 4, 2), object), TypeError, "tensor has dtype object"),
    ("abc", TypeError, "tensor must be a numpy.ndarray"),
]


@pytest.mark.parametrize("s", STRUCTURES, ids=IDS)
@pytest.mark.parametrize(("tensor", "exc", "match"), BAD_TENSORS)
def test_fit_refuses_bad_tensors(s: Any, tensor: Any, exc: Any, match: str) -> None:
    refused(exc, match, s.fit, tensor, rank=1)
    refused(exc, match, s.fit_result, tensor, max_params=10**6)


BAD_OPTIONS = [
    ({"rank": True}, TypeError, "rank"),
    ({"rank": 2.5}, TypeError, "rank"),
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": -3}, ValueError, "rank"),
    ({"rank": "2"}, TypeError, "rank"),
    ({"rank": [1, True, 1]}, (TypeError, ValueError), "rank"),
    ({"max_params": True}, TypeError, "max_params"),
    ({"max_params": 0}, ValueError, "max_params"),
    ({"max_params": 3.0}, TypeError, "max_params"),
    ({"max_params": 2}, ValueError, "max_params=2 is too small"),
    ({"rank": 2, "max_params": 100}, ValueError, "at most one of rank and max_params"),
    ({"rank": 1, "random_state": "seed"}, TypeError, "random_state"),
    ({"rank": 1, "random_state": -1}, ValueError, "random_state"),
    ({"rank": 1, "max_seconds": 0}, ValueError, "max_seconds"),
    ({"rank": 1, "max_seconds": float("nan")}, ValueError, "max_seconds"),
    ({"rank": 1, "max_seconds": True}, TypeError, "max_seconds"),
]


@pytest.mark.parametrize("s", STRUCTURES, ids=IDS)
@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_OPTIONS)
def test_fit_refuses_bad_options(s: Any, kwargs: dict, exc: Any, match: str) -> None:
    refused(exc, match, s.fit_result, W, **kwargs)


@pytest.mark.parametrize("s", STRUCTURES, ids=IDS)
def test_huge_ranks_and_budgets_are_capped(s: Any) -> None:
    """Ranks and budgets above what the tensor supports give the exact (or capped) fit."""
    for kwargs in ({"max_params": 10**30}, {"rank": 10**30}):
        if s.name == "tr" and "rank" in kwargs:
            refused(ValueError, "rank gives q_0", s.fit, W, **kwargs)
            continue
        fit = s.fit_result(W, **kwargs, random_state=0)
        assert fit.n_params == s.n_params(W.shape, fit.ranks)
        assert abs(fit.rel_error - rel_error(fit.embedding.to_tensor(), W)) <= 1e-6
        if s.name != "tr":  # every other family is exact at its full ranks
            assert fit.rel_error <= 1e-6, s.name


@pytest.mark.parametrize("s", STRUCTURES, ids=IDS)
def test_zero_and_constant_tensors(s: Any) -> None:
    for value in (0.0, -3.5):
        T = np.full((6, 4, 3, 3), value)
        out = s.fit(T, rank=1, random_state=0)
        assert out.rel_error == pytest.approx(0.0, abs=tolerance("float64"))
        np.testing.assert_allclose(out.to_tensor(), T, atol=1e-12)


@pytest.mark.parametrize("s", STRUCTURES, ids=IDS)
def test_n_params_refuses_bad_shapes_and_ranks(s: Any) -> None:
    refused(TypeError, "tensor_shape must be a tuple of ints", s.n_params, "643", 1)
    refused(TypeError, r"tensor_shape\[1\] must be a positive int", s.n_params, (6, 4.0, 3, 3), 1)
    refused(ValueError, r"tensor_shape\[0\] must be a positive int", s.n_params, (0, 4, 3, 3), 1)
    refused(TypeError, "rank", s.n_params, W.shape, True)
    refused(TypeError, "tensor_shape", s.min_params, None)


def test_structure_options_are_checked() -> None:
    refused(ValueError, "n_iter_max must be a positive int", CP, n_iter_max=0)
    refused(TypeError, "n_iter_max must be a positive int", Tucker, n_iter_max=True)
    refused(ValueError, "init must be one of", CP, init="bogus")
    refused(ValueError, "tol must be a finite number >= 0", Tucker2, tol=-1.0)
    refused(TypeError, "shapes must be a sequence", GKPD, shapes=3)
    refused(ValueError, "form must be 'nested' or 'chain'", General, [(2, 2), (3, 2)], "ring")
    refused(
        ValueError, "Tucker2 needs a tensor of at least 3 modes", Tucker2().fit, np.ones((4, 4))
    )


def test_get_structure_refuses_bad_names() -> None:
    refused(TypeError, "name_or_obj must be a structure name", get_structure, 3)
    refused(TypeError, "name_or_obj must be a structure name", get_structure, None)
    refused(ValueError, "unknown structure 'svd'", get_structure, "svd")


# -- compare ------------------------------------------------------------------------------------
BAD_COMPARE = [
    ({"compression": 10**400}, ValueError, r"compression\[0\] must be a finite number > 1"),
    ({"compression": float("inf")}, ValueError, r"compression\[0\]"),
    ({"compression": True}, TypeError, r"compression\[0\] must be a finite number"),
    ({"compression": []}, TypeError, "compression must be a number"),
    ({"compression": (2, "4")}, TypeError, r"compression\[1\]"),
    ({"max_factors": True}, TypeError, "max_factors must be an int"),
    ({"max_factors": 1}, ValueError, "max_factors must be an int >= 2"),
    ({"families": "cp"}, TypeError, "families must be a sequence"),
    ({"families": ()}, ValueError, "families must be a non-empty subset"),
    ({"families": ("cp", "svd")}, ValueError, "families must be a non-empty subset"),
    ({"forms": ("ring",)}, ValueError, "form must be 'nested' or 'chain'"),
    ({"forms": ()}, ValueError, "forms must be a non-empty sequence"),
    ({"max_configs": 0}, ValueError, "max_configs"),
    ({"max_seconds": -1}, ValueError, "max_seconds"),
    ({"max_seconds": 10**400}, ValueError, "max_seconds"),
    ({"threads": 0}, ValueError, "threads"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"name": 3}, TypeError, "name must be a str"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_COMPARE)
def test_compare_refuses_bad_options(kwargs: dict, exc: Any, match: str) -> None:
    refused(exc, match, compare, W, **{"progress": False, **kwargs})


@pytest.mark.parametrize(("tensor", "exc", "match"), BAD_TENSORS)
def test_compare_refuses_bad_tensors(tensor: Any, exc: Any, match: str) -> None:
    refused(exc, match, compare, tensor, progress=False)


def test_compare_of_degenerate_tensors() -> None:
    fams = ("sekron", "gkpd", "tt", "tr", "cp", "tucker", "tucker2")
    for value in (0.0, 2.0):
        tab = compare(np.full((4, 4, 3, 3), value), compression=(2, 10**6), progress=False)
        assert tab.families == fams
        for r in tab.rows:
            if r.compression == 2:
                assert r.rel_error == pytest.approx(0.0, abs=1e-6), r.family
            else:  # budget 1: no structure fits, and the row says why
                assert r.rel_error is None and r.reason
        assert "Singular" not in str(tab)


def test_compare_huge_max_factors_is_bounded() -> None:
    tab = compare(np.ones((8, 8)), compression=2, max_factors=10**6, families=("sekron",))
    assert tab["sekron", 2].rel_error == pytest.approx(0.0, abs=1e-6)


def test_compare_table_methods_refuse_bad_arguments(tmp_path: Any) -> None:
    tab = compare(W, compression=2, families=("tt",), progress=False)
    assert isinstance(tab, CompareTable)
    refused(TypeError, "key must be a pair", tab.__getitem__, "tt")
    with pytest.raises(KeyError, match="no row for family 'cp'"):
        tab["cp", 2]
    refused(TypeError, "path must be a str or pathlib.Path", tab.to_json, 3)
    refused(TypeError, "path must be a str or pathlib.Path", tab.plot, 3)
    refused(ValueError, "has the extension 'txt'", tab.plot, tmp_path / "out.txt")
    refused(TypeError, "title must be a str", tab.plot, title=3)
    assert not (tmp_path / "out.txt").exists()


# -- interop ------------------------------------------------------------------------------------
def test_from_and_to_tensorly_refuse_bad_arguments() -> None:
    refused(TypeError, "obj must be a TensorLy CPTensor", sekron.from_tensorly, W)
    cp = CPTensor((np.ones(2), [np.ones((3, 2)), np.ones((4, 2))]))
    refused(ValueError, "form must be None, 'chain' or 'nested'", sekron.from_tensorly, cp, form=1)
    refused(
        ValueError, "form='chain' embeds a TTTensor only", sekron.from_tensorly, cp, form="chain"
    )
    mixed = CPTensor((np.ones(2), [np.ones((3, 2)), np.ones((4, 2), np.float32)]))
    refused(TypeError, "the CPTensor's arrays must share one dtype", sekron.from_tensorly, mixed)
    st = sekron.from_tensorly(cp)
    refused(TypeError, "st must be a SeKronTensor", sekron.to_tensorly, cp)
    refused(ValueError, "kind must be None or one of", sekron.to_tensorly, st, kind="cpd")
    refused(ValueError, "kind must be None or one of", sekron.to_tensorly, st, kind=True)


# -- global state: the jax backend never flips jax_enable_x64 (issue #10, kind 10) -------------
def test_loading_the_jax_backend_never_touches_x64() -> None:
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import sys, threading
        import jax
        sys.setswitchinterval(1e-6)
        calls, seen, done = [], [], threading.Event()
        update = jax.config.update
        def spy(name, value):
            calls.append(name)
            return update(name, value)
        jax.config.update = spy
        def poll():
            while not done.is_set():
                seen.append(jax.config.read("jax_enable_x64"))
        thread = threading.Thread(target=poll)
        thread.start()
        from sekron._backend import get_backend
        B = get_backend("jax")
        done.set()
        thread.join()
        import jax.numpy as jnp
        print(any(seen), calls, B.backend_name, jnp.asarray(1.0).dtype)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "[]", "jax", "float32"]
