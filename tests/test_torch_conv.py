"""sekron.torch.conv2d / conv1d: every method against F.conv2d on the reconstructed kernel."""

from __future__ import annotations

from functools import partial
from math import prod

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import sekron  # noqa: E402
from sekron import SeKronTensor, random_sekron  # noqa: E402
from sekron._conv_macs import dense_macs, factorized_macs  # noqa: E402
from sekron._conv_plan import conv_plan, normalize_padding, spec_order  # noqa: E402
from sekron.testing import conv_cases, rel_error, tolerance  # noqa: E402
from sekron.torch import (  # noqa: E402
    conv1d,
    conv2d,
)
from sekron.torch._execute import run_plan  # noqa: E402

METHODS = ("factorized", "reconstructed", "auto")


@st.composite
def conv_problems(draw: st.DrawFn, n_spatial: int = 2) -> dict:
    """A random torch SeKron kernel (S = 2..4, either form) and conv arguments that fit it."""
    case = draw(conv_cases(n_spatial=n_spatial))
    dtype = draw(st.sampled_from(("float32", "float64")))
    kern = random_sekron(
        case.shapes,
        case.ranks,
        form=case.form,
        backend="pytorch",
        dtype=dtype,
        random_state=case.seed,
    )
    rng = np.random.default_rng(case.seed)
    x = torch.from_numpy(rng.standard_normal(case.in_shape)).to(getattr(torch, dtype))
    bias = torch.from_numpy(rng.standard_normal(kern.shape[0])).to(getattr(torch, dtype))
    use_bias = draw(st.booleans())
    return {
        "x": x,
        "st": kern,
        "bias": bias if use_bias else None,
        "stride": case.stride,
        "padding": case.padding,
        "dilation": case.dilation,
        "dtype": dtype,
    }


def _reference(p: dict, fn: object) -> torch.Tensor:
    return fn(p["x"], p["st"].to_tensor(), p["bias"], p["stride"], p["padding"], p["dilation"])


def _tolerance(p: dict, fn: object, expected: torch.Tensor) -> float:
    """``tolerance(dtype, exact=True)`` times the conditioning of the sums: the forward error
    of a sum of products is bounded relative to the same sum of absolute values, so an output
    that cancels (e.g. one value 0.065 from 81 terms of size ~1, seen in float32) gets the
    room its rounding needs; for sums that do not cancel the factor is about 1."""
    bias = None if p["bias"] is None else p["bias"].abs()
    absolute = fn(
        p["x"].abs(), p["st"].to_tensor().abs(), bias, p["stride"], p["padding"], p["dilation"]
    )
    norm = float(torch.linalg.vector_norm(expected.double()))
    scale = float(torch.linalg.vector_norm(absolute.double())) / norm if norm > 0 else 1.0
    return tolerance(p["dtype"], exact=True) * max(1.0, scale)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@given(conv_problems(2), st.sampled_from(METHODS), st.booleans())
def test_conv2d_equals_dense_conv(p: dict, method: str, grad: bool) -> None:
    expected = _reference(p, F.conv2d)
    with torch.set_grad_enabled(grad):
        got = conv2d(
            p["x"], p["st"], p["bias"], p["stride"], p["padding"], p["dilation"], method=method
        )
    assert got.shape == expected.shape
    assert got.dtype == p["x"].dtype and got.device == p["x"].device
    assert rel_error(got, expected) <= _tolerance(p, F.conv2d, expected)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@given(conv_problems(1), st.sampled_from(METHODS))
def test_conv1d_equals_dense_conv(p: dict, method: str) -> None:
    expected = _reference(p, F.conv1d)
    got = conv1d(
        p["x"], p["st"], p["bias"], p["stride"], p["padding"], p["dilation"], method=method
    )
    assert got.shape == expected.shape
    assert rel_error(got, expected) <= _tolerance(p, F.conv1d, expected)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("form", ["nested", "chain"])
def test_both_layouts_equal_dense(layout: str, form: str) -> None:
    kern = random_sekron(
        [(2, 3, 3, 1), (2, 1, 1, 3), (3, 2, 1, 1)],
        [3, 2],
        form=form,
        backend="pytorch",
        random_state=1,
    )
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    pad4 = normalize_padding(1, (3, 3), (1, 2))
    plan = conv_plan(kern.shapes, kern.ranks, form, tuple(x.shape), (2, 1), pad4, (1, 2), layout)
    got = run_plan(x, kern.factors, plan, layout)
    expected = F.conv2d(x, kern.to_tensor(), None, (2, 1), 1, (1, 2))
    assert rel_error(got, expected) <= tolerance("float64", exact=True)


# wide pointwise stages (>= _execute.WIDE channels in and out): the first, on the NCHW
# input, narrows (o <= kk: conv, then a copy of its output) or widens (o > kk: a copy of the
# input, then conv); the 3x3 factor carries its stride and padding
WIDE_POINTWISE = {
    "narrowing": ([(2, 2, 3, 3), (32, 32, 1, 1)], [1]),
    "widening": ([(2, 2, 3, 3), (16, 16, 1, 1)], [2]),
    "both ends": ([(16, 16, 1, 1), (2, 2, 3, 3), (16, 16, 1, 1)], [2, 1]),
}


def _assert_grads_match(
    got: torch.Tensor, expected: torch.Tensor, leaves: list, tol: float
) -> None:
    """The gradients of ``got`` and of the dense conv ``expected`` with respect to ``leaves``,
    for one random cotangent, agree within ``tol`` (sums over the batch and positions: a
    looser bound than the outputs')."""
    g = torch.randn_like(expected)
    for a, b in zip(
        torch.autograd.grad(got, leaves, g), torch.autograd.grad(expected, leaves, g), strict=True
    ):
        assert rel_error(a, b) <= tol


@pytest.mark.parametrize(
    "matmul_only, dtype",
    [(False, "float32"), (True, "float32"), (False, "float64")],
    ids=["1x1 conv", "matmul", "float64: matmul"],
)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("structure", list(WIDE_POINTWISE), ids=list(WIDE_POINTWISE))
def test_wide_pointwise_stages_equal_dense(
    monkeypatch: pytest.MonkeyPatch, structure: str, layout: str, matmul_only: bool, dtype: str
) -> None:
    """Pointwise stages run as oneDNN 1x1 convolutions (float32 on the CPU, wide channels,
    input at most ``CONV_MAX_BYTES``) or as matrix products (``CONV_MAX_BYTES`` 0, or another
    dtype): both equal the dense conv, input and factor gradients included, and the branch
    taken is the expected one."""
    from sekron.torch import _execute

    if matmul_only:
        monkeypatch.setattr(_execute, "CONV_MAX_BYTES", 0)
    used: list[bool] = []
    real = _execute._use_conv
    monkeypatch.setattr(
        _execute, "_use_conv", lambda z, kk, o: used.append(real(z, kk, o)) or used[-1]
    )
    shapes, ranks = WIDE_POINTWISE[structure]
    kern = random_sekron(shapes, ranks, backend="pytorch", dtype=dtype, random_state=2)
    factors = [f.detach().requires_grad_() for f in kern.factors]
    kern = SeKronTensor(factors)
    x = torch.randn(2, kern.shape[1], 9, 7, dtype=getattr(torch, dtype), requires_grad=True)
    pad4 = normalize_padding(1, (3, 3), (1, 1))
    # the stage algorithm's order: the pointwise factor first, on the unpadded NCHW input
    order = spec_order(len(shapes))
    args = (tuple(x.shape), (2, 1), pad4, (1, 1), layout, order)
    plan = conv_plan(kern.shapes, kern.ranks, "nested", *args)
    got = run_plan(x, kern.factors, plan, layout)
    expected = F.conv2d(x, kern.to_tensor(), None, (2, 1), 1)
    exact = tolerance(dtype, exact=True)
    assert rel_error(got, expected) <= exact
    _assert_grads_match(got, expected, [x, *factors], 8 * exact)
    assert used and any(used) == (dtype == "float32" and not matmul_only)


@pytest.mark.parametrize(
    "shapes, ranks, form",
    [
        ([(2, 2, 3, 3), (8, 8, 1, 1)], [1], "nested"),  # the (2, 2) factor: 2 in, 2 out
        ([(1, 1, 3, 3), (16, 16, 1, 1)], [1], "nested"),  # 1 in, 1 out
        ([(2, 2, 1, 3), (2, 2, 3, 1), (4, 4, 1, 1)], [1, 1], "chain"),  # two tiny stages
        ([(2, 2, 3, 3), (3, 3, 1, 1)], [1], "nested"),  # folded batch 3 x 3 per image: odd
    ],
    ids=["2 channels", "1 channel", "chain, two stages", "odd folded batch"],
)
@pytest.mark.parametrize(
    "batch, stride, padding, dilation",
    [(4, 1, 1, 1), (2, 2, (2, 1), (1, 2)), (3, (1, 2), (1, 0), 1)],
    ids=["stride 1", "stride 2, dilation", "odd batch, stride (1, 2)"],
)
def test_tiny_conv_stages_packed_equal_dense(
    monkeypatch: pytest.MonkeyPatch,
    shapes: list,
    ranks: list,
    form: str,
    batch: int,
    stride: object,
    padding: object,
    dilation: object,
) -> None:
    """Channels-first conv stages with at most ``TINY`` channels in and out run ``PACK``
    batch entries side by side under a block-diagonal weight when their folded batch is a
    multiple of ``PACK`` (else unpacked): equal to the dense conv, input and factor
    gradients included, and packed exactly where expected."""
    from sekron.torch import _execute

    kern = random_sekron(
        shapes, ranks, form=form, backend="pytorch", dtype="float64", random_state=3
    )
    factors = [f.detach().requires_grad_() for f in kern.factors]
    kern = SeKronTensor(factors, form=form)
    x = torch.randn(batch, kern.shape[1], 9, 8, dtype=torch.float64, requires_grad=True)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    pad4 = normalize_padding(padding, kern.shape[2:], (dh, dw))
    args = (tuple(x.shape), (sh, sw), pad4, (dh, dw), "nchw")
    plan = conv_plan(kern.shapes, kern.ranks, form, *args)
    packs: list[int] = []
    real = _execute._packed
    monkeypatch.setattr(_execute, "_packed", lambda *a: packs.append(real(*a)) or packs[-1])
    got = run_plan(x, kern.factors, plan, "nchw")
    tiny = [
        s.groups == 1 and max(s.w_shape[:2]) <= _execute.TINY
        for s in plan.stages
        if s.kind == "conv"
    ]
    want = [
        _execute.PACK if t and s.in_shape[0] % _execute.PACK == 0 else 1
        for t, s in zip(tiny, [s for s in plan.stages if s.kind == "conv"], strict=True)
    ]
    assert packs == want and any(tiny)
    if shapes[1][0] != 3:
        assert max(want) > 1  # folded batches of 8 or 16 per image pack
    elif batch == 3:
        assert max(want) == 1  # a folded batch of 9: unpacked
    expected = F.conv2d(x, kern.to_tensor(), None, stride, padding, dilation)
    exact = tolerance("float64", exact=True)
    assert rel_error(got, expected) <= exact
    _assert_grads_match(got, expected, [x, *factors], 8 * exact)


@pytest.mark.parametrize("form", ["nested", "chain"])
@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, 1), ((1, 2), (0, 1))])
def test_gradcheck_factorized(form: str, stride: object, padding: object) -> None:
    kern = random_sekron(
        [(2, 2, 3, 1), (1, 2, 1, 2), (2, 1, 1, 1)],
        [2, 2],
        form=form,
        backend="pytorch",
        random_state=0,
    )
    factors = [f.clone().requires_grad_(True) for f in kern.factors]
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, *fs: torch.Tensor) -> torch.Tensor:
        return conv2d(x, SeKronTensor(list(fs), form), None, stride, padding, method="factorized")

    assert torch.autograd.gradcheck(fn, (x, *factors), fast_mode=True)


# -- padding deferred to the first stage with a window ------------------------------------------
# CP (nested, ranks (R, 1, 1)) and TT (chain over (F, Kh, Kw, C)), one mode per factor
CP_LIKE = (((3, 1, 1, 1), (1, 4, 1, 1), (1, 1, 3, 1), (1, 1, 1, 2)), (3, 1, 1), "nested")
TT_LIKE = (((3, 1, 1, 1), (1, 1, 3, 1), (1, 1, 1, 2), (1, 4, 1, 1)), (2, 2, 2), "chain")
# the classic pipeline: pointwise C -> R first, then the Kh and Kw windows, then R -> F
PIPELINE_ORDER = {"nested": (1, 2, 3, 0), "chain": (3, 1, 2, 0)}
CONV_ARGS = [
    ((1, 1), (1, 1), (1, 1)),
    ((2, 1), (2, 1), (1, 2)),
    ((1, 1), "same", (2, 1)),  # W: total padding 1, split (0, 1), not symmetric
    ((1, 2), (0, 3), (1, 1)),
]


def _deferred_plan(
    structure: tuple,
    layout: str,
    stride: tuple,
    padding: object,
    dilation: tuple,
    in_shape: tuple = (2, 4, 7, 6),
) -> tuple:
    shapes, ranks, form = structure
    kern = random_sekron(shapes, ranks, form=form, backend="pytorch", random_state=2)
    x = torch.randn(*in_shape, dtype=torch.float64)
    pad4 = normalize_padding(padding, kern.shape[2:], dilation)
    plan = conv_plan(
        kern.shapes,
        kern.ranks,
        form,
        tuple(x.shape),
        stride,
        pad4,
        dilation,
        layout,
        PIPELINE_ORDER[form],
    )
    return kern, x, pad4, plan


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("structure", [CP_LIKE, TT_LIKE], ids=["cp", "tt"])
@pytest.mark.parametrize("stride, padding, dilation", CONV_ARGS)
def test_pointwise_first_stage_runs_unpadded(
    layout: str, structure: tuple, stride: tuple, padding: object, dilation: tuple
) -> None:
    kern, x, pad4, plan = _deferred_plan(structure, layout, stride, padding, dilation)
    first, h_stage, w_stage = plan.stages[:3]
    # the input is not padded; the C -> R product sees the 7x6 map; each window pads its dim
    assert plan.pad == (0, 0, 0, 0) and first.kind == "mm"
    assert first.macs == 2 * 7 * 6 * 4 * (3 if structure is CP_LIKE else 2)
    assert h_stage.pad == (pad4[0], pad4[1], 0, 0) and w_stage.pad == (0, 0, pad4[2], pad4[3])
    got = run_plan(x, kern.factors, plan, layout)
    expected = F.conv2d(x, kern.to_tensor(), None, stride, padding, dilation)
    assert got.shape == expected.shape
    assert rel_error(got, expected) <= tolerance("float64", exact=True)
    assert _counted_macs(partial(run_plan, x, kern.factors, plan, layout)) == plan.macs


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("structure", [CP_LIKE, TT_LIKE], ids=["cp", "tt"])
def test_gradcheck_deferred_padding(layout: str, structure: tuple) -> None:
    for stride, padding, dilation in CONV_ARGS:
        kern, x, _, plan = _deferred_plan(
            structure, layout, stride, padding, dilation, (1, 4, 5, 5)
        )
        x.requires_grad_(True)
        factors = tuple(f.clone().requires_grad_(True) for f in kern.factors)

        def fn(x: torch.Tensor, *fs: torch.Tensor, plan: object = plan) -> torch.Tensor:
            return run_plan(x, fs, plan, layout)

        assert torch.autograd.gradcheck(fn, (x, *factors), fast_mode=True)


def test_gradients_equal_dense_gradients() -> None:
    kern = random_sekron([(4, 2, 3, 3), (2, 4, 1, 1)], [3], backend="pytorch", random_state=3)
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64, requires_grad=True)
    grads = {}
    for method in METHODS:
        factors = [f.clone().requires_grad_(True) for f in kern.factors]
        y = conv2d(x, SeKronTensor(factors), padding=1, method=method)
        grads[method] = torch.autograd.grad(y.square().sum(), [x, *factors])
    for method in ("factorized", "auto"):
        for a, b in zip(grads[method], grads["reconstructed"], strict=True):
            assert rel_error(a, b) <= tolerance("float64", exact=True)


# -- groups --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["reconstructed", "auto"])
def test_grouped_conv(method: str) -> None:
    kern = random_sekron([(4, 2, 3, 1), (2, 2, 1, 3)], 2, backend="pytorch", random_state=0)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)  # groups=2: C * groups = 4 * 2
    got = conv2d(x, kern, None, 1, 1, 1, 2, method=method)
    expected = F.conv2d(x, kern.to_tensor(), None, 1, 1, 1, 2)
    assert rel_error(got, expected) <= tolerance("float64", exact=True)


def test_grouped_factorized_raises() -> None:
    kern = random_sekron([(4, 2, 3, 1), (2, 2, 1, 3)], 2, backend="pytorch", random_state=0)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="groups"):
        conv2d(x, kern, groups=2, method="factorized")


# -- validation ----------------------------------------------------------------------------------
def _kernel(dtype: str = "float64") -> SeKronTensor:
    return random_sekron(
        [(2, 2, 3, 1), (2, 2, 1, 3)], 2, backend="pytorch", dtype=dtype, random_state=0
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x": np.ones((1, 4, 5, 5))}, TypeError, "x must be a torch.Tensor"),
        ({"x": torch.ones(1, 3, 5, 5, dtype=torch.float64)}, ValueError, "3 channels"),
        ({"x": torch.ones(4, 5, dtype=torch.float64)}, ValueError, "x must have 4 dims"),
        ({"x": torch.ones(1, 4, 5, 5)}, TypeError, "dtype"),
        ({"method": "fast"}, ValueError, "method must be one of"),
        ({"stride": 0}, ValueError, "stride must be >= 1"),
        ({"stride": (1, 2, 3)}, TypeError, "stride must be an int or a tuple of 2"),
        ({"padding": "full"}, ValueError, "padding must be"),
        ({"padding": "same", "stride": 2}, ValueError, "padding='same' needs stride 1"),
        ({"dilation": 1.5}, TypeError, "dilation"),
        ({"groups": 0}, ValueError, "groups must be a positive int"),
        ({"bias": torch.ones(3, dtype=torch.float64)}, ValueError, r"bias must have shape \(4,\)"),
    ],
)
def test_errors_name_the_argument(kwargs: dict, error: type, match: str) -> None:
    args = {"x": torch.ones(1, 4, 5, 5, dtype=torch.float64), "st": _kernel()}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        conv2d(**args)


def test_st_errors() -> None:
    x = torch.ones(1, 4, 5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="st must be a sekron.SeKronTensor"):
        conv2d(x, torch.ones(4, 4, 3, 3))
    numpy_st = random_sekron([(2, 2, 3, 1), (2, 2, 1, 3)], 2, random_state=0)
    with pytest.raises(TypeError, match="backend 'pytorch'"):
        conv2d(x, numpy_st)
    with pytest.raises(ValueError, match=r"conv1d needs st of shape \(F, C, K\)"):
        conv1d(torch.ones(1, 4, 5, dtype=torch.float64), _kernel())


def test_channels_last_and_unbatched_inputs() -> None:
    kern = _kernel()
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x, kern.to_tensor(), padding=1)
    for method in METHODS:
        assert rel_error(conv2d(x, kern, padding=1, method=method), expected) <= tolerance(
            "float64", exact=True
        )
        one = conv2d(x[0], kern, padding=1, method=method)
        assert one.shape == expected[0].shape
        assert rel_error(one, expected[0]) <= tolerance("float64", exact=True)


# -- MACs ----------------------------------------------------------------------------------------
def _counted_macs(fn: object) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("form", ["nested", "chain"])
@pytest.mark.parametrize(
    "shapes, ranks, stride, padding, dilation",
    [
        (((4, 2, 3, 3), (2, 4, 1, 1)), (3,), (1, 1), (1, 1), (1, 1)),
        (((2, 2, 1, 3), (2, 2, 3, 1), (2, 2, 1, 1)), (2, 3), (2, 1), (1, 2), (1, 2)),
        (
            ((2, 2, 1, 1), (2, 2, 1, 1), (1, 2, 1, 1), (2, 1, 1, 1)),
            (2, 2, 3),
            (2, 2),
            (0, 0),
            (1, 1),
        ),
    ],
)
def test_macs_match_an_independent_count(
    form: str, shapes: tuple, ranks: tuple, stride: tuple, padding: tuple, dilation: tuple
) -> None:
    kern = random_sekron(shapes, ranks, form=form, backend="pytorch", random_state=0)
    x = torch.randn(2, kern.shape[1], 9, 8, dtype=torch.float64)
    pad4 = normalize_padding(padding, kern.shape[2:], dilation)
    in_shape = tuple(x.shape)
    for layout in ("nchw", "nhwc"):
        for order in (None, spec_order(len(shapes))):
            plan = conv_plan(
                kern.shapes, kern.ranks, form, in_shape, stride, pad4, dilation, layout, order
            )
            counted = _counted_macs(partial(run_plan, x, kern.factors, plan, layout))
            assert (
                counted
                == plan.macs
                == factorized_macs(
                    kern.shapes,
                    kern.ranks,
                    form,
                    in_shape,
                    stride,
                    pad4,
                    dilation,
                    order=tuple(s.factor for s in plan.stages),
                )
            )
    assert factorized_macs(kern.shapes, kern.ranks, form, in_shape, stride, pad4, dilation) == (
        conv_plan(kern.shapes, kern.ranks, form, in_shape, stride, pad4, dilation).macs
    )
    W = kern.to_tensor()
    dense = _counted_macs(lambda: F.conv2d(x, W, None, stride, padding, dilation))
    assert dense == dense_macs(kern.shapes, in_shape, stride, pad4, dilation)


def test_macs_equal_spec_formula_for_pointwise_kernels() -> None:
    """1x1 kernel, stride 1: every stage sees the same L, so conv docs holds exactly."""
    shapes = ((2, 3, 1, 1), (4, 2, 1, 1), (3, 5, 1, 1))
    ranks = (2, 3)
    n, height, width = 2, 5, 4
    L = height * width
    f = [s[0] for s in shapes]
    c = [s[1] for s in shapes]
    P = [prod(ranks[:k]) for k in range(len(shapes))]  # P_0 = 1, P_1 = R_1, ...
    C = prod(c)
    spec = (
        n * L * (P[2] * f[2] * C + sum(P[k + 1] * prod(f[k:]) * prod(c[: k + 1]) for k in range(2)))
    )
    order = spec_order(len(shapes))
    assert factorized_macs(shapes, ranks, "nested", (n, C, height, width), order=order) == spec
    assert dense_macs(shapes, (n, C, height, width)) == n * L * prod(f) * C


def test_public_names() -> None:
    assert sekron.torch.conv2d is conv2d and sekron.torch.conv1d is conv1d


@pytest.mark.parametrize("method", ["reconstructed", "auto", "factorized"])
@pytest.mark.parametrize("change", ["data", "in_place", "load_state_dict", "optimizer", "to"])
def test_every_change_of_the_factors_reaches_the_output(method: str, change: str) -> None:
    """No stale kernel: ``.data`` writes (no version bump), in-place updates, a loaded state,
    an optimizer step and a dtype change all give the current result."""
    from sekron.torch import SeKronConv2d

    st = sekron.random_sekron(
        [(4, 2, 3, 1), (2, 4, 1, 3)], 3, backend="pytorch", dtype="float32", random_state=0
    )
    layer = SeKronConv2d(st, torch.zeros(8), padding=1, method=method)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 8, 6, 6))).float()
    with torch.no_grad():
        before = layer(x)
    if change == "data":
        layer.factor0.data.mul_(2.0)
    elif change == "in_place":
        with torch.no_grad():
            layer.factor1.mul_(2.0)
    elif change == "load_state_dict":
        layer.load_state_dict({k: 2.0 * v for k, v in layer.state_dict().items()})
    elif change == "optimizer":
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer(x).square().sum().backward()
        opt.step()
    else:
        layer.double()
        x = x.double()
    with torch.no_grad():
        after = layer(x)
        expected = F.conv2d(x, layer.sekron.to_tensor(), layer.bias, padding=1)
    assert rel_error(after, expected) <= tolerance(x.dtype, exact=True)
    if change == "to":
        assert after.dtype == torch.float64
    else:
        assert rel_error(after, before) > 0.1
