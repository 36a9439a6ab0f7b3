"""Hostile inputs to every public entry point of sekron.torch (issue #10).

Each call either returns the correct result (checked against ``F.conv2d`` on the rebuilt
kernel, or a hand count) or raises a ValueError/TypeError from sekron's own code whose message
names the argument. Never a traceback from torch, a hang, a huge allocation or a silent wrong
answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import sekron  # noqa: E402
from sekron import SeKronTensor  # noqa: E402
from sekron.testing import rel_error, tolerance  # noqa: E402
from sekron.torch import (  # noqa: E402
    SeKronConv2d,
    compress,
    conv1d,
    conv2d,
    count_macs,
    count_params,
    sekron_conv_macs,
)

METHODS = ("factorized", "reconstructed", "auto")
HUGE = 2**70


def _raises_naming(fn: Callable[[], Any], name: str) -> None:
    """``fn()`` raises ValueError/TypeError from sekron's code, naming ``name``."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    assert name in str(info.value), str(info.value)
    last = info.traceback[-1].path
    assert "sekron" in str(last), f"raised from {last}: {info.value}"


def _st(dtype: str = "float64", form: str = "nested") -> SeKronTensor:
    """A (4, 4, 3, 3) kernel."""
    return sekron.random_sekron(
        [(2, 2, 3, 1), (2, 2, 1, 3)], 2, backend="pytorch", dtype=dtype, random_state=0, form=form
    )


def _x(*shape: int, dtype: Any = torch.float64) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


# ----------------------------------------------------------------------------------------------
# conv2d / conv1d: bad arguments name themselves
# ----------------------------------------------------------------------------------------------
BAD_CONV2D = [
    ("x", {"x": np.ones((1, 4, 5, 5))}),
    ("x", {"x": [[1.0]]}),
    ("x", {"x": _x(4, 5)}),
    ("x", {"x": _x(1, 1, 4, 5, 5)}),
    ("x", {"x": _x(1, 3, 5, 5)}),  # wrong channel count
    ("x", {"x": _x(1, 4, 5, 5, dtype=torch.float32)}),
    ("x", {"x": torch.ones(1, 4, 5, 5, dtype=torch.int64)}),
    ("x", {"x": torch.ones(1, 4, 5, 5, dtype=torch.float64, device="meta")}),
    ("x", {"x": _x(1, 4, 2, 2)}),  # smaller than the kernel
    ("x", {"x": _x(1, 4, 2, 9), "dilation": (1, 5)}),
    ("st", {"st": torch.ones(4, 4, 3, 3)}),
    ("st", {"st": sekron.random_sekron([(2, 2, 3, 1), (2, 2, 1, 3)], 2, random_state=0)}),
    ("st", {"st": sekron.random_sekron([(2, 2), (2, 2)], 1, backend="pytorch")}),
    ("st", {"st": SeKronTensor([torch.ones(2, 2, 2, 3, 1, dtype=torch.int64)] * 2)}),
    ("stride", {"stride": 0}),
    ("stride", {"stride": -1}),
    ("stride", {"stride": True}),
    ("stride", {"stride": 1.5}),
    ("stride", {"stride": "1"}),
    ("stride", {"stride": (1, 2, 3)}),
    ("stride", {"stride": (True, 1)}),
    ("stride", {"stride": HUGE}),
    ("stride", {"stride": None}),
    ("padding", {"padding": -1}),
    ("padding", {"padding": "full"}),
    ("padding", {"padding": "SAME"}),
    ("padding", {"padding": 1.0}),
    ("padding", {"padding": (1,)}),
    ("padding", {"padding": HUGE}),
    ("padding", {"padding": "same", "stride": 2}),
    ("dilation", {"dilation": 0}),
    ("dilation", {"dilation": False}),
    ("dilation", {"dilation": HUGE}),
    ("groups", {"groups": 0}),
    ("groups", {"groups": True}),
    ("groups", {"groups": 1.0}),
    ("groups", {"groups": "2"}),
    ("groups", {"groups": HUGE}),
    ("groups", {"groups": 2, "method": "factorized", "x": _x(1, 8, 5, 5)}),
    ("groups", {"groups": 3, "x": _x(1, 12, 5, 5)}),  # 3 does not divide F = 4
    ("method", {"method": "fast"}),
    ("method", {"method": None}),
    ("measure", {"measure": "no"}),
    ("bias", {"bias": [1.0, 2.0, 3.0, 4.0]}),
    ("bias", {"bias": torch.ones(3, dtype=torch.float64)}),
    ("bias", {"bias": torch.ones(4, dtype=torch.float32)}),
    ("bias", {"bias": torch.ones(4, dtype=torch.float64, device="meta")}),
]


@pytest.mark.parametrize("name, kwargs", BAD_CONV2D)
def test_conv2d_bad_arguments(name: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"x": _x(1, 4, 5, 5), "st": _st()}
    args.update(kwargs)
    _raises_naming(lambda: conv2d(**args), name)


# values equal (==, same hash) to a valid option, but refused: a call with the valid one first
# must not let the remembered check (sekron._conv_args._ARGS_MEMO) answer for them
EQUAL_BUT_BAD = [
    ("stride", {"stride": 1}, {"stride": True}),
    ("stride", {"stride": (1, 1)}, {"stride": (True, 1)}),
    ("stride", {"stride": (1, 1)}, {"stride": (1.0, 1)}),
    ("padding", {"padding": 1}, {"padding": 1.0}),
    ("padding", {"padding": (0, 1)}, {"padding": (False, 1)}),
    ("dilation", {"dilation": 1}, {"dilation": True}),
    ("groups", {"groups": 1}, {"groups": True}),
    ("groups", {"groups": 1}, {"groups": 1.0}),
]


@pytest.mark.parametrize("name, good, bad", EQUAL_BUT_BAD)
@pytest.mark.parametrize("fn", ["conv2d", "layer"])
def test_remembered_checks_do_not_accept_equal_bad_values(
    name: str, good: dict[str, Any], bad: dict[str, Any], fn: str
) -> None:
    x, st = _x(1, 4, 5, 5), _st()
    if fn == "conv2d":
        conv2d(x, st, **good)
        _raises_naming(lambda: conv2d(x, st, **bad), name)
    elif name != "groups":  # SeKronConv2d has no groups
        SeKronConv2d(st, **good)
        _raises_naming(lambda: SeKronConv2d(st, **bad), name)


def test_remembered_input_checks_still_refuse_bad_inputs() -> None:
    """A good input shape, remembered, does not let a bad one through, and the memos stay
    bounded."""
    from sekron import _conv_args

    st = _st()
    conv2d(_x(1, 4, 5, 5), st)
    key = ((1, 4, 5, 5), st.shape)
    assert any(k[:2] == key for k in _conv_args._SHAPES_MEMO)
    _raises_naming(lambda: conv2d(_x(1, 4, 2, 2), st), "x")
    _raises_naming(lambda: conv2d(_x(1, 4, 5, 5), st, padding=-1), "padding")
    for n in range(_conv_args.MEMO_ENTRIES + 5):
        _conv_args.check_input_shape((n + 1, 4, 5, 5), st.shape, _args(), 2, "conv2d")
        _conv_args.check_conv_args(1, 0, 1, 1, "auto", (n + 1, 3))
    assert 0 < len(_conv_args._SHAPES_MEMO) <= _conv_args.MEMO_ENTRIES
    assert 0 < len(_conv_args._ARGS_MEMO) <= _conv_args.MEMO_ENTRIES


def _args() -> Any:
    from sekron._conv_args import check_conv_args

    return check_conv_args(1, 0, 1, 1, "auto", (3, 3))


def _st1d() -> SeKronTensor:
    return sekron.random_sekron([(2, 2, 3), (2, 2, 1)], 2, backend="pytorch", random_state=0)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("x", {"x": _x(1, 4, 5, 5)}),
        ("x", {"x": _x(1, 3, 5)}),
        ("x", {"x": _x(1, 4, 2)}),
        ("st", {"st": _st()}),
        ("stride", {"stride": (1, 1)}),
        ("stride", {"stride": 0}),
        ("padding", {"padding": (1, 1)}),
        ("dilation", {"dilation": True}),
        ("groups", {"groups": -1}),
        ("method", {"method": "dense"}),
        ("bias", {"bias": torch.ones(5, dtype=torch.float64)}),
    ],
)
def test_conv1d_bad_arguments(name: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"x": _x(1, 4, 9), "st": _st1d()}
    args.update(kwargs)
    _raises_naming(lambda: conv1d(**args), name)


# ----------------------------------------------------------------------------------------------
# conv2d / conv1d: unusual but valid inputs give the right result
# ----------------------------------------------------------------------------------------------
def _inputs() -> dict[str, torch.Tensor]:
    x = _x(2, 4, 9, 8)
    return {
        "contiguous": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "strided view": _x(2, 4, 18, 8)[:, :, ::2],
        "transposed": _x(2, 4, 8, 9).transpose(2, 3),
        "unbatched": x[0],
        "empty batch": x[:0],
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(_inputs()))
def test_conv2d_odd_layouts(method: str, kind: str) -> None:
    x = _inputs()[kind]
    st = _st(form="chain" if kind == "transposed" else "nested")
    bias = _x(4)
    for stride, padding, dilation in [(1, 1, 1), (2, "same", 1), (2, 0, 2), ((1, 3), (2, 0), 1)]:
        if padding == "same":
            stride = 1
        got = conv2d(x, st, bias, stride, padding, dilation, method=method)
        want = F.conv2d(x, st.to_tensor(), bias, stride, padding, dilation)
        assert got.shape == want.shape
        if want.numel():
            assert rel_error(got, want) <= tolerance(torch.float64, exact=True)


@pytest.mark.parametrize("method", METHODS)
def test_conv2d_grouped(method: str) -> None:
    st, x = _st(), _x(2, 8, 6, 6)
    if method == "factorized":
        _raises_naming(lambda: conv2d(x, st, groups=2, method=method), "groups")
        return
    got = conv2d(x, st, padding=1, groups=2, method=method)
    assert rel_error(got, F.conv2d(x, st.to_tensor(), padding=1, groups=2)) <= tolerance(
        torch.float64, exact=True
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_conv2d_half_precision(dtype: torch.dtype, method: str) -> None:
    st = SeKronTensor([f.to(dtype) for f in _st("float32").factors])
    x = _x(2, 4, 7, 7, dtype=dtype)
    got = conv2d(x, st, padding=1, method=method)
    want = F.conv2d(x.double(), st.to_tensor().double(), padding=1)
    assert got.dtype == dtype
    assert rel_error(got.double(), want) <= 4 * tolerance("float32")


@pytest.mark.parametrize("method", METHODS)
def test_conv2d_meta_tensors(method: str) -> None:
    st = SeKronTensor([f.to("meta") for f in _st().factors])
    x = torch.empty(2, 4, 9, 8, dtype=torch.float64, device="meta")
    got = conv2d(x, st, padding=(1, 0), stride=2, method=method)
    assert got.device.type == "meta" and got.shape == (2, 4, 5, 3)


def test_factors_on_two_devices_are_refused() -> None:
    factors = list(_st().factors)
    factors[1] = factors[1].to("meta")
    with pytest.raises(ValueError, match=r"factors\[1\] is on meta"):
        SeKronTensor(factors)


@pytest.mark.parametrize("method", METHODS)
def test_conv2d_inference_tensors(method: str) -> None:
    with torch.inference_mode():
        st = SeKronTensor([f.clone() for f in _st().factors])
        x_inf = _x(2, 4, 6, 6).clone()
    x = _x(2, 4, 6, 6)
    want = F.conv2d(x, _st().to_tensor(), padding=1)
    # outside inference mode, without autograd recording: fine
    assert rel_error(conv2d(x, st, padding=1, method=method), want) <= tolerance(
        torch.float64, exact=True
    )
    with torch.inference_mode():
        assert rel_error(conv2d(x_inf, st, padding=1, method=method), want) <= tolerance(
            torch.float64, exact=True
        )
    # autograd would have to save an inference tensor: a clear error naming it
    _raises_naming(
        lambda: conv2d(x.clone().requires_grad_(True), st, padding=1, method=method),
        "st.factors[0]",
    )
    layer = SeKronConv2d(_st(), padding=1, method=method)
    _raises_naming(lambda: layer(x_inf), "x")


@pytest.mark.parametrize("method", METHODS)
def test_conv1d_odd_inputs(method: str) -> None:
    st = _st1d()
    for x in (_x(3, 4, 11), _x(4, 11), _x(3, 4, 22)[..., ::2], _x(0, 4, 11)):
        for stride, padding in [(1, 1), (2, "valid"), ((2,), (3,))]:
            got = conv1d(x, st, None, stride, padding, method=method)
            want = F.conv1d(x, st.to_tensor(), None, stride, padding)
            assert got.shape == want.shape
            if want.numel():
                assert rel_error(got, want) <= tolerance(torch.float64, exact=True)


# ----------------------------------------------------------------------------------------------
# SeKronConv2d, from_conv, to_conv
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("st", {"st": np.ones((4, 4, 3, 3))}),
        ("st", {"st": sekron.random_sekron([(2, 2), (2, 2)], 1, backend="pytorch")}),
        ("stride", {"stride": True}),
        ("stride", {"stride": HUGE}),
        ("padding", {"padding": -2}),
        ("padding", {"padding": "full"}),
        ("dilation", {"dilation": (0, 1)}),
        ("padding_mode", {"padding_mode": "mirror"}),
        ("padding_mode", {"padding_mode": None}),
        ("method", {"method": 3}),
        ("bias", {"bias": torch.ones(5)}),
        ("bias", {"bias": np.ones(4)}),
    ],
)
def test_layer_bad_arguments(name: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"st": _st()}
    args.update(kwargs)
    _raises_naming(lambda: SeKronConv2d(**args), name)


@pytest.mark.parametrize(
    "x",
    [
        np.ones((1, 4, 5, 5)),
        _x(1, 3, 5, 5),
        _x(1, 4, 5, 5, dtype=torch.float32),
        _x(5, 5),
        _x(1, 4, 1, 1),
    ],
)
def test_layer_forward_bad_inputs(x: Any) -> None:
    layer = SeKronConv2d(_st(), padding=0)
    _raises_naming(lambda: layer(x), "x")


@pytest.mark.parametrize("mode, size", [("reflect", 3), ("circular", 2)])
def test_layer_input_too_small_for_its_padding_mode(mode: str, size: int) -> None:
    layer = SeKronConv2d(_st(), padding=3, padding_mode=mode)
    _raises_naming(lambda: layer(_x(1, 4, size, 8)), "x")
    ok = SeKronConv2d(_st(), padding=3, padding_mode="replicate")
    with torch.no_grad():
        assert ok(_x(1, 4, size, 8)).shape == ok.to_conv()(_x(1, 4, size, 8)).shape


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, "same", (2, 0), "valid"])
def test_layer_and_to_conv_agree_with_the_dense_conv(padding_mode: str, padding: Any) -> None:
    layer = SeKronConv2d(_st(), _x(4), padding=padding, padding_mode=padding_mode, dilation=2)
    x = _x(2, 4, 9, 7).contiguous(memory_format=torch.channels_last)
    dense = layer.to_conv()
    with torch.no_grad():
        assert rel_error(layer(x), dense(x)) <= tolerance(torch.float64, exact=True)


@pytest.mark.parametrize(
    "name, conv, kwargs",
    [
        ("conv", nn.Linear(3, 4), {}),
        ("conv", nn.Conv1d(6, 8, 3), {}),
        ("conv", None, {}),
        ("groups", nn.Conv2d(6, 8, 3, groups=2), {}),
        ("conv.weight", nn.Conv2d(6, 8, 3).bfloat16(), {}),
        ("conv.weight", nn.Conv2d(6, 8, 3).half(), {}),
        ("conv.weight", nn.Conv2d(6, 8, 3, device="meta"), {}),
        ("shapes", nn.Conv2d(6, 8, 3), {"shapes": "abc"}),
        ("mode 1", nn.Conv2d(6, 8, 3), {"shapes": [(2, 3, 3, 1), (4, 3, 1, 3)]}),
        ("rank", nn.Conv2d(6, 8, 3), {"rank": True}),
        ("rank", nn.Conv2d(6, 8, 3), {"rank": 0}),
        ("compression", nn.Conv2d(6, 8, 3), {"compression": 10**400}),
        ("compression", nn.Conv2d(6, 8, 3), {"compression": True}),
        ("compression", nn.Conv2d(6, 8, 3), {"compression": float("nan")}),
        ("tol", nn.Conv2d(6, 8, 3), {"tol": 1.5}),
        ("tol", nn.Conv2d(6, 8, 3), {"tol": True}),
        ("tol", nn.Conv2d(6, 8, 3), {"tol": 0.5, "compression": 2}),
        ("form", nn.Conv2d(6, 8, 3), {"form": "ring"}),
        ("method", nn.Conv2d(6, 8, 3), {"method": "dense"}),
    ],
)
def test_from_conv_bad_arguments(name: str, conv: Any, kwargs: dict[str, Any]) -> None:
    kwargs = {"shapes": [(2, 3, 3, 1), (4, 2, 1, 3)], **kwargs}
    _raises_naming(lambda: SeKronConv2d.from_conv(conv, **kwargs), name)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("structure", {"structure": 42}),
        ("structure", {"structure": "nope"}),
        ("rank", {"structure": "cp", "rank": 2, "compression": 2}),
        ("rank", {"structure": "search", "rank": 2, "compression": 2}),
        ("compression", {"structure": "search"}),
    ],
)
def test_from_conv_bad_structures(name: str, kwargs: dict[str, Any]) -> None:
    pytest.importorskip("sekron.structures")
    _raises_naming(lambda: SeKronConv2d.from_conv(nn.Conv2d(6, 8, 3), **kwargs), name)


# ----------------------------------------------------------------------------------------------
# compress, count_macs, count_params, sekron_conv_macs
# ----------------------------------------------------------------------------------------------
def _halves(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    f, c, kh, kw = shape
    return [(f // 2, c // 2, 1, 1), (2, 2, kh, kw)]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("model", {"model": "model"}),
        ("compression", {"compression": True}),
        ("compression", {"compression": 10**400}),
        ("compression", {"compression": "4"}),
        ("structure", {"structure": 42}),
        ("structure", {"structure": "nope"}),
        ("shapes", {"shapes": 3}),
        ("rank", {"structure": "cp", "rank": 2, "compression": 3}),
        ("tol", {"shapes": _halves, "tol": 2.0}),
        ("tol", {"shapes": _halves, "tol": 0.5, "compression": 3}),
        ("form", {"shapes": _halves, "form": "ring"}),
        ("min_params", {"shapes": _halves, "min_params": True}),
        ("min_params", {"shapes": _halves, "min_params": -1}),
        ("skip", {"shapes": _halves, "skip": 3}),
        ("input_shape", {"shapes": _halves, "input_shape": (1, True, 6, 6)}),
        ("input_shape", {"shapes": _halves, "input_shape": (HUGE, 8, 6, 6)}),
        ("input_shape", {"shapes": _halves, "input_shape": (10**5, 8, 100, 100)}),
        ("input_shape", {"shapes": _halves, "input_shape": (1, 3, 6, 6)}),  # wrong channels
        ("example_input", {"shapes": _halves, "example_input": torch.zeros(1, 3, 6, 6)}),
        ("inplace", {"shapes": _halves, "inplace": "no"}),
        ("progress", {"shapes": _halves, "progress": "no"}),
        ("method", {"shapes": _halves, "method": "dense"}),
    ],
)
def test_compress_bad_arguments(name: str, kwargs: dict[str, Any]) -> None:
    pytest.importorskip("sekron.structures")
    model = nn.Sequential(nn.Conv2d(8, 16, 3))
    args: dict[str, Any] = {"model": model, "progress": False, "inplace": True}
    args.update(kwargs)
    _raises_naming(lambda: compress(**args), name)
    assert type(model[0]) is nn.Conv2d


def test_compress_skips_what_it_cannot_convert_and_reports_why() -> None:
    meta = nn.Conv2d(8, 16, 3, device="meta")
    nan = nn.Conv2d(8, 16, 3)
    with torch.no_grad():
        nan.weight[0, 0, 0, 0] = float("inf")
    model = nn.ModuleDict({"meta": meta, "nan": nan, "fp16": nn.Conv2d(8, 16, 3).half()})
    _, report = compress(model, shapes=_halves, compression=2, min_params=0, progress=False)
    assert report.replaced == []
    assert "meta device" in report.skipped["meta"]
    assert "NaN or Inf" in report.skipped["nan"]
    assert "torch.float16" in report.skipped["fp16"]
    with pytest.raises(AttributeError):
        report.params_after = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report[0].skipped = None  # type: ignore[misc]


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("model", ("model", (1, 3, 4, 4)), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), "(1, 3)"), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), (1, 0, 4)), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), (1, 3.0, 4, 4)), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), (HUGE, 3, 4, 4)), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), (1, 5, 4, 4)), {}),
        ("input_shape", (nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 4, 4, dtype=torch.int64)), {}),
        ("by_layer", (nn.Conv2d(3, 4, 1), (1, 3, 4, 4)), {"by_layer": "yes"}),
    ],
)
def test_count_macs_bad_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _raises_naming(lambda: count_macs(*args, **kwargs), name)


def test_uninitialized_lazy_layers_are_refused() -> None:
    model = nn.Sequential(nn.LazyConv2d(16, 3))
    _raises_naming(lambda: compress(model, shapes=_halves, progress=False), "model")
    _raises_naming(lambda: count_params(model), "module")
    assert isinstance(model[0], nn.LazyConv2d)


def test_count_params_bad_arguments() -> None:
    _raises_naming(lambda: count_params(3), "module")  # type: ignore[arg-type]
    _raises_naming(lambda: count_params(None), "module")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("shapes", {"shapes": "abc"}),
        ("shapes", {"shapes": ((2, 2), (2, 2))}),
        ("ranks", {"ranks": (True,)}),
        ("ranks", {"ranks": (1, 2)}),
        ("form", {"form": "ring"}),
        ("in_hw", {"in_hw": (0, 5)}),
        ("stride", {"in_hw": (5, 5), "stride": 0}),
        ("padding", {"in_hw": (5, 5), "padding": (1, 1)}),
        ("dilation", {"in_hw": (5, 5), "dilation": True}),
        ("batch", {"batch": 0}),
    ],
)
def test_sekron_conv_macs_bad_arguments(name: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"shapes": ((2, 2, 3, 1), (2, 2, 1, 3)), "ranks": (2,), "form": "nested"}
    args.update(kwargs)
    _raises_naming(lambda: sekron_conv_macs(**args), name)


@pytest.mark.parametrize(
    "options",
    [
        (1, 0, 1, 1, "auto", (3, 3)),
        ((2, 1), (1, 0), (1, 2), 1, "factorized", (3, 3)),
        (1, "same", 2, 1, "reconstructed", (3, 1)),
        (2, "valid", 1, 2, "auto", (1, 1)),
        ((1,), (2,), (3,), 1, "auto", (5,)),
    ],
)
def test_remembered_conv_args_equal_a_fresh_check(options: tuple[Any, ...]) -> None:
    from sekron import _conv_args

    fresh = _conv_args._check_conv_args(*options)
    assert _conv_args.check_conv_args(*options) == fresh
    assert _conv_args.check_conv_args(*options) == fresh  # from the memo
    assert options in _conv_args._ARGS_MEMO
