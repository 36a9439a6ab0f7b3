"""Hostile inputs to the core entry points (issue #10): decompose, search, kron, rearrange,
unrearrange and random_sekron either return a correct result or raise a ValueError/TypeError
raised by sekron's own code whose message names the argument. Never a traceback from numpy,
torch or TensorLy, a hang, a wild allocation or a silently wrong value.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sekron
from sekron.testing import rel_error, tolerance

W = np.random.default_rng(0).standard_normal((8, 6, 4))
SHAPES = [(2, 2, 2), (4, 3, 2)]
SHAPES3 = [(2, 2, 2), (2, 3, 1), (2, 1, 2)]
HUGE = 10**400  # an int no float holds
MASKED = np.ma.masked_invalid(np.where(W > 2, np.nan, W))


def refused(fn: Callable[[], Any], name: str) -> BaseException:
    """``fn()`` raises ValueError/TypeError from a sekron frame, naming ``name``."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    exc = info.value
    assert name in str(exc), (name, str(exc))
    last = traceback.extract_tb(exc.__traceback__)[-1].filename.replace("\\", "/")
    assert "/sekron/" in last and "site-packages" not in last, (last, str(exc))
    return exc


def search(tensor: Any = W, **kw: Any) -> Any:
    kw.setdefault("progress", False)
    if "max_params" not in kw:
        kw.setdefault("compression", 3)
    return sekron.search(tensor, **kw)


# ----------------------------------------------------------------------------------------------
# tensors: wrong kinds, masked and other subclasses, 0-d, empty, NaN/Inf, odd dtypes
# ----------------------------------------------------------------------------------------------
BAD_TENSORS = [
    W.tolist(),
    "W",
    None,
    3.0,
    MASKED,
    np.ma.masked_array(W),  # no mask at all: still a subclass whose rules would be dropped
    np.array(3.0),
    np.zeros((8, 0, 4)),
    np.where(W > 2, np.nan, W),
    np.where(W > 2, -np.inf, W),
    W.astype(np.complex64),
    W.astype(np.float16),
    W.astype(object),
    np.array([["a"]]),
]


@pytest.mark.parametrize("tensor", BAD_TENSORS, ids=lambda t: type(t).__name__)
def test_bad_tensors_are_refused_by_every_entry_point(tensor: Any) -> None:
    refused(lambda: sekron.decompose(tensor, SHAPES), "tensor")
    refused(lambda: search(tensor), "tensor")
    if not isinstance(tensor, np.ndarray) or type(tensor) is not np.ndarray:
        refused(lambda: sekron.rearrange(tensor, SHAPES), "tensor")
        refused(lambda: sekron.unrearrange(tensor, SHAPES), "T")
        refused(lambda: sekron.kron(tensor, W), "arrays[0]")
        refused(lambda: sekron.kron(W, tensor), "arrays[1]")


def test_bool_and_int_tensors_are_cast_and_decomposed_correctly() -> None:
    for t in (W > 0, (W * 10).astype(np.int64)):
        st_ = sekron.decompose(t, SHAPES, rank=2)
        assert abs(st_.rel_error - rel_error(st_.to_tensor(), t.astype(np.float64))) <= 1e-8


def test_torch_tensors_hostile() -> None:
    torch = pytest.importorskip("torch")
    refused(lambda: sekron.decompose(torch.tensor(W).to(torch.complex64), SHAPES), "tensor")
    refused(lambda: search(torch.full((8, 6, 4), float("nan"))), "tensor")
    refused(lambda: sekron.kron(torch.ones(2, 2), np.ones((2, 2))), "one kind")
    # a tensor that requires grad is decomposed detached, not refused
    t = torch.tensor(W, requires_grad=True)
    assert sekron.decompose(t, SHAPES, rank=1).factors[0].requires_grad is False


# ----------------------------------------------------------------------------------------------
# decompose's options
# ----------------------------------------------------------------------------------------------
DECOMPOSE_BAD = [
    ({"shapes": None}, "shapes"),
    ({"shapes": "22"}, "shapes"),
    ({"shapes": [(8, 6, 4)]}, "shapes"),
    ({"shapes": [(2, 2, 2), (4, 3)]}, "shapes[1]"),
    ({"shapes": [(2, 2, 2), (4, 3, 2.0)]}, "shapes[1][2]"),
    ({"shapes": [(2, 2, True), (4, 3, 4)]}, "shapes[0][2]"),
    ({"shapes": [(2, 2, 2), (4, 3, -2)]}, "shapes[1][2]"),
    ({"shapes": [(2, 2, 0), (4, 3, 2)]}, "shapes[0][2]"),
    ({"shapes": [(2, 2, 2), (4, 3, HUGE)]}, "mode 2"),
    ({"shapes": [(2, 2, 2), (2, 3, 2)]}, "mode 0"),
    ({"rank": True}, "rank"),
    ({"rank": "2"}, "rank"),
    ({"rank": 0}, "rank"),
    ({"rank": -1}, "rank"),
    ({"rank": 2.5}, "rank"),
    ({"rank": [1, 2]}, "rank"),
    ({"rank": [True]}, "rank[0]"),
    ({"rank": np.float64(2)}, "rank"),
    ({"form": "tt"}, "form"),
    ({"form": None}, "form"),
    ({"form": 1}, "form"),
    ({"tol": True}, "tol"),
    ({"tol": "0.1"}, "tol"),
    ({"tol": 0}, "tol"),
    ({"tol": 1}, "tol"),
    ({"tol": float("nan")}, "tol"),
    ({"tol": float("inf")}, "tol"),
    ({"tol": HUGE}, "tol"),
    ({"tol": -HUGE}, "tol"),
    ({"max_params": True}, "max_params"),
    ({"max_params": 1.5}, "max_params"),
    ({"max_params": "100"}, "max_params"),
    ({"max_params": 0}, "max_params"),
    ({"max_params": -HUGE}, "max_params"),
    ({"max_params": 3}, "max_params"),
    ({"tol": 0.1, "max_params": 100}, "max_params"),
    ({"svd": "fast"}, "svd"),
    ({"svd": None}, "svd"),
    ({"svd": "randomized"}, "rank"),
    ({"random_state": "seed", "rank": 1, "svd": "randomized"}, "random_state"),
    ({"random_state": -1, "rank": 1, "svd": "randomized"}, "random_state"),
    ({"random_state": 1.5}, "random_state"),
    ({"random_state": True}, "random_state"),
    ({"refine": True}, "refine"),
    ({"refine": "2"}, "refine"),
    ({"refine": -1}, "refine"),
    ({"refine": 1.5}, "refine"),
]


@pytest.mark.parametrize(("kwargs", "name"), DECOMPOSE_BAD, ids=lambda v: repr(v)[:40])
def test_decompose_refuses_hostile_options(kwargs: dict[str, Any], name: str) -> None:
    kw = dict(kwargs)
    shapes = kw.pop("shapes", SHAPES)
    refused(lambda: sekron.decompose(W, shapes, **kw), name)


@pytest.mark.parametrize("form", ["nested", "chain"])
def test_decompose_huge_requests_are_capped_not_allocated(form: str) -> None:
    # ranks are capped at full rank, budgets beyond every structure keep full ranks: exact
    for kw in ({"rank": HUGE}, {"rank": [HUGE, 1]}, {"max_params": HUGE}, {"refine": HUGE}):
        st_ = sekron.decompose(W, SHAPES3, form=form, **kw)
        assert abs(st_.rel_error - rel_error(st_.to_tensor(), W)) <= tolerance(W.dtype)
    full = sekron.decompose(W, SHAPES3, rank=HUGE, form=form)
    assert full.rel_error <= tolerance(W.dtype)


# ----------------------------------------------------------------------------------------------
# search's options
# ----------------------------------------------------------------------------------------------
SEARCH_BAD = [
    ({"compression": HUGE}, "compression"),
    ({"compression": -HUGE}, "compression"),
    ({"compression": "2"}, "compression"),
    ({"compression": True}, "compression"),
    ({"compression": float("nan")}, "compression"),
    ({"compression": float("inf")}, "compression"),
    ({"compression": 1}, "compression"),
    ({"compression": 0.5}, "compression"),
    ({"compression": None}, "compression"),
    ({"max_params": True}, "max_params"),
    ({"max_params": 0}, "max_params"),
    ({"max_params": 1.5}, "max_params"),
    ({"max_params": "10"}, "max_params"),
    ({"max_params": 5}, "budget"),
    ({"max_params": 10, "compression": 2}, "max_params"),
    ({"max_factors": 1}, "max_factors"),
    ({"max_factors": True}, "max_factors"),
    ({"max_factors": "3"}, "max_factors"),
    ({"max_factors": 2.5}, "max_factors"),
    ({"forms": "tt"}, "form"),
    ({"forms": []}, "forms"),
    ({"forms": [1]}, "form"),
    ({"forms": None}, "forms"),
    ({"max_configs": 0}, "max_configs"),
    ({"max_configs": True}, "max_configs"),
    ({"max_configs": "1"}, "max_configs"),
    ({"exhaustive": "no"}, "exhaustive"),
    ({"exhaustive": 1}, "exhaustive"),
    ({"exhaustive": None}, "exhaustive"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"max_seconds": -1}, "max_seconds"),
    ({"max_seconds": "1"}, "max_seconds"),
    ({"max_seconds": float("nan")}, "max_seconds"),
    ({"max_seconds": True}, "max_seconds"),
    ({"svd": "fast"}, "svd"),
    ({"progress": "yes"}, "progress"),
    ({"progress": 1}, "progress"),
    ({"threads": 0}, "threads"),
    ({"threads": True}, "threads"),
    ({"threads": "2"}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"random_state": "seed"}, "random_state"),
    ({"random_state": -1}, "random_state"),
]


@pytest.mark.parametrize(("kwargs", "name"), SEARCH_BAD, ids=lambda v: repr(v)[:40])
def test_search_refuses_hostile_options(kwargs: dict[str, Any], name: str) -> None:
    refused(lambda: search(**kwargs), name)


def test_search_refuses_a_tensor_with_no_configuration() -> None:
    refused(lambda: search(np.ones(7)), "tensor of shape (7,)")


def test_search_huge_requests_are_bounded() -> None:
    # the greedy stage searches a superset: its best can only improve (the joint-fit stage's
    # shortlist is not monotone in the configurations searched; see sekron.search's docs)
    ref = search(W, compression=2, refine=0)
    for kw in ({"max_factors": HUGE}, {"max_configs": HUGE}):
        res = search(W, compression=2, refine=0, **kw)
        assert res.best.rel_error <= ref.best.rel_error + 1e-12
    res = search(W, max_params=HUGE, max_factors=2)
    assert res.best.rel_error <= tolerance(W.dtype)  # every structure fits: exact
    assert abs(res.best.to_sekron().rel_error - res.best.rel_error) <= tolerance(W.dtype)


def test_candidate_to_sekron_checks_its_tensor() -> None:
    best = search(W, refine=0).best
    refused(lambda: best.to_sekron(MASKED), "tensor")
    refused(lambda: best.to_sekron(np.ones((8, 6, 3))), "mode 2")
    joint = search(W, refine=2).refined[0]  # a joint fit of W is not refitted to another tensor
    assert joint.to_sekron() is joint.to_sekron(W)
    refused(lambda: joint.to_sekron(np.ones((8, 6, 4))), "refined fit of the searched tensor")


def test_search_result_is_immutable() -> None:
    res = search(W)
    with pytest.raises(AttributeError):
        res.budget = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        res.best.rel_error = 0.0  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# kron, rearrange, unrearrange, random_sekron
# ----------------------------------------------------------------------------------------------
def test_kron_rearrange_unrearrange_hostile() -> None:
    refused(lambda: sekron.kron(), "array")
    refused(lambda: sekron.kron(np.ones((2, 2)), np.ones(2)), "modes")
    refused(lambda: sekron.rearrange(W, [(2, 2, 2), (4, 3, 3)]), "mode 2")
    refused(lambda: sekron.rearrange(W, None), "shapes")
    refused(lambda: sekron.unrearrange(np.ones((8, 25)), SHAPES), "T has shape")
    refused(lambda: sekron.unrearrange(np.ones((8, 24)), [(2, 2, 2), (4, 3, HUGE)]), "T")
    refused(lambda: sekron.unrearrange(np.ones((8, 24)), [(2, 2, 2), (4, -3, 2)]), "shapes[1][1]")
    # 0-d arrays are Kronecker products of scalars, like np.kron
    assert float(sekron.kron(np.array(2.0), np.array(3.0))) == 6.0


RANDOM_BAD = [
    ({"shapes": None}, "shapes"),
    ({"shapes": [(2,)]}, "shapes"),
    ({"shapes": [(2,), (0,)]}, "shapes[1][0]"),
    ({"shapes": [(2,), (HUGE,)]}, "parameters"),
    ({"rank": HUGE}, "parameters"),
    ({"rank": [10**6, 10**6], "shapes": [(2,), (2,), (2,)]}, "parameters"),
    ({"rank": True}, "rank"),
    ({"rank": 0}, "rank"),
    ({"rank": "1"}, "rank"),
    ({"form": "tt"}, "form"),
    ({"backend": "tensorflow"}, "backend"),
    ({"backend": None}, "backend"),
    ({"dtype": "float16"}, "dtype"),
    ({"dtype": np.float64}, "dtype"),
    ({"random_state": "seed"}, "random_state"),
    ({"random_state": -5}, "random_state"),
]


@pytest.mark.parametrize(("kwargs", "name"), RANDOM_BAD, ids=lambda v: repr(v)[:40])
def test_random_sekron_refuses_hostile_options(kwargs: dict[str, Any], name: str) -> None:
    kw = {"shapes": [(2, 3), (4, 1)], "rank": 2, **kwargs}
    refused(lambda: sekron.random_sekron(kw.pop("shapes"), kw.pop("rank"), **kw), name)


# ----------------------------------------------------------------------------------------------
# property: any int/float/bool/str/None for a numeric option is accepted correctly or refused
# ----------------------------------------------------------------------------------------------
hostile_values = st.one_of(
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([HUGE, -HUGE, np.int64(2), np.float32(0.5), [2], (0.5,)]),
)


@settings(max_examples=60, deadline=None)
@given(value=hostile_values, option=st.sampled_from(["rank", "tol", "max_params", "refine"]))
def test_decompose_option_values(value: Any, option: str) -> None:
    try:
        st_ = sekron.decompose(W, SHAPES3, **{option: value})
    except (ValueError, TypeError) as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1].filename
        assert "/sekron/" in last.replace("\\", "/") and option in str(exc), (last, str(exc))
        return
    assert abs(st_.rel_error - rel_error(st_.to_tensor(), W)) <= tolerance(W.dtype)
    if option == "tol" and value is not None:
        assert st_.rel_error <= float(value)
    if option == "max_params" and value is not None:
        assert st_.n_params <= int(value)


@settings(max_examples=40, deadline=None)
@given(
    value=hostile_values,
    option=st.sampled_from(["compression", "max_factors", "max_configs", "exhaustive"]),
)
def test_search_option_values(value: Any, option: str) -> None:
    small = W[:4, :4, :2]
    try:
        res = search(small, **{option: value})
    except (ValueError, TypeError) as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1].filename
        named = option in str(exc) or "budget" in str(exc)  # too small for any structure
        assert "/sekron/" in last.replace("\\", "/") and named, (last, str(exc))
        return
    assert res.best.n_params <= res.budget
    assert abs(res.best.to_sekron().rel_error - res.best.rel_error) <= tolerance(W.dtype)
