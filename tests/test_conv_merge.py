"""Partial reconstruction (sekron._conv_merge): merged factors rebuild the same kernel, and
every merged plan's convolution equals F.conv2d on the rebuilt kernel, gradients included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sekron import SeKronTensor, random_sekron  # noqa: E402
from sekron._conv_merge import groupings, merge_factors, merged_signature  # noqa: E402
from sekron.testing import kron_shapes, rel_error, tolerance  # noqa: E402
from sekron.torch._auto import Choice  # noqa: E402
from sekron.torch._checks import check_conv_args  # noqa: E402
from sekron.torch._functional import _key, _run_choice  # noqa: E402


def test_groupings_are_the_compositions_with_two_runs_or_more() -> None:
    assert groupings(2) == ((1, 1),)
    assert groupings(3) == ((1, 1, 1), (1, 2), (2, 1))
    assert len(groupings(5)) == 2**4 - 1
    assert all(sum(g) == 5 and len(g) >= 2 for g in groupings(5))


@given(
    kron_shapes(min_factors=2, max_factors=4, min_modes=4, max_modes=4, max_side=3),
    st.sampled_from(("nested", "chain")),
    st.data(),
)
def test_merged_factors_rebuild_the_kernel(ks: object, form: str, data: st.DataObject) -> None:
    shapes = ks.shapes  # type: ignore[attr-defined]
    ranks = tuple(data.draw(st.integers(1, 3)) for _ in range(len(shapes) - 1))
    kern = random_sekron(shapes, ranks, form=form, backend="numpy", random_state=0)
    grouping = data.draw(st.sampled_from(groupings(len(shapes))))
    merged = merge_factors(kern.factors, kern.shapes, kern.ranks, form, grouping, np.einsum)
    rebuilt = SeKronTensor(merged, form=form)
    assert (rebuilt.shapes, rebuilt.ranks) == merged_signature(
        kern.shapes, kern.ranks, form, grouping
    )
    assert rel_error(rebuilt.to_tensor(), kern.to_tensor()) <= tolerance("float64", exact=True)


@st.composite
def merged_problems(draw: st.DrawFn) -> dict:
    ks = draw(kron_shapes(min_factors=3, max_factors=4, min_modes=4, max_modes=4, max_side=3))
    form = draw(st.sampled_from(("nested", "chain")))
    ranks = tuple(draw(st.integers(1, 3)) for _ in range(len(ks.shapes) - 1))
    kern = random_sekron(ks.shapes, ranks, form=form, backend="pytorch", random_state=0)
    grouping = draw(st.sampled_from(groupings(len(ks.shapes))))
    spatial = kern.shape[2:]
    stride = tuple(draw(st.integers(1, 3)) for _ in spatial)
    dilation = tuple(draw(st.integers(1, 2)) for _ in spatial)
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    size = tuple(
        (k - 1) * d + 1 + draw(st.integers(0, 3)) for k, d in zip(spatial, dilation, strict=True)
    )
    layout = draw(st.sampled_from(("nhwc", "nchw")))
    return {
        "kern": kern,
        "grouping": grouping,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "size": size,
        "layout": layout,
    }


@settings(max_examples=40, deadline=None)
@given(merged_problems())
def test_every_merged_plan_equals_the_dense_conv(p: dict) -> None:
    kern = p["kern"]
    for f in kern.factors:
        f.requires_grad_(True)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((2, kern.shape[1], *p["size"]))).requires_grad_()
    args = check_conv_args(p["stride"], p["padding"], p["dilation"], 1, "auto", kern.shape[2:])
    full = (1,) * len(kern.shapes)
    method = "factorized" if p["grouping"] == full else "merged"
    choice = Choice(method, p["layout"], p["grouping"])
    y = _run_choice(x, kern, None, args, _key(x, kern, args), choice, "training")
    ref = F.conv2d(x, kern.to_tensor(), None, p["stride"], p["padding"], p["dilation"])
    # float64 sums of up to C * Kh * Kw = 729 products in another order: a few eps per term
    # (a wrong plan is off by O(1))
    tol = tolerance("float64")
    assert y.shape == ref.shape and rel_error(y, ref) <= tol
    g = torch.from_numpy(rng.standard_normal(tuple(ref.shape)))
    got = torch.autograd.grad(y, [x, *kern.factors], g)
    want = torch.autograd.grad(ref, [x, *kern.factors], g)
    for a, b in zip(got, want, strict=True):
        assert rel_error(a, b) <= tol
