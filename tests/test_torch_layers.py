"""SeKronConv2d: forward against F.conv2d, from_conv, serialization, tracing, gradients."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import sekron  # noqa: E402
from sekron.testing import assert_close, rel_error, tolerance  # noqa: E402
from sekron.torch import SeKronConv2d  # noqa: E402

SHAPES_2 = ((2, 3, 3, 1), (4, 2, 1, 3))  # (8, 6, 3, 3)
SHAPES_3 = ((2, 1, 1, 3), (2, 3, 3, 1), (2, 2, 1, 1))  # (8, 6, 3, 3)

TRACE_WARNINGS = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
DYNAMO_LRU_CACHE = pytest.mark.filterwarnings(
    "ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning"
)
DYNAMO_BUILTIN = pytest.mark.filterwarnings(
    "ignore:Dynamo does not know how to trace the builtin:UserWarning"
)
# dynamo inspects the reshaped (non-leaf) factors while tracing opt_einsum's backend lookup
DYNAMO_NON_LEAF = pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning"
)


def _st(shapes, rank, form="nested", dtype="float64", seed=0):
    return sekron.random_sekron(
        shapes, rank, form=form, backend="pytorch", dtype=dtype, random_state=seed
    )


def _x(st, h=9, w=7, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, st.shape[1], h, w, dtype=st.factors[0].dtype, generator=g)


# ----------------------------------------------------------------------------------------------
# forward == F.conv2d on the rebuilt kernel
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shapes, rank, form",
    [(SHAPES_2, 2, "nested"), (SHAPES_3, (2, 3), "nested"), (SHAPES_3, (2, 3), "chain")],
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"stride": 2, "padding": 1},
        {"stride": (2, 1), "padding": (2, 0), "dilation": (1, 2)},
        {"padding": "same", "dilation": 2},
        {"padding": "valid"},
    ],
)
def test_forward_equals_conv2d_on_rebuilt_kernel(shapes, rank, form, kwargs):
    st = _st(shapes, rank, form)
    bias = torch.randn(st.shape[0], dtype=torch.float64)
    layer = SeKronConv2d(st, bias, method="factorized", **kwargs)
    x = _x(st)
    with torch.no_grad():
        want = F.conv2d(x, st.to_tensor(), bias, **kwargs)
        assert_close(layer(x), want)


@pytest.mark.parametrize("method", ["auto", "reconstructed"])
def test_forward_with_other_methods(method):
    st = _st(SHAPES_3, (2, 2))
    layer = SeKronConv2d(st, stride=2, padding=1, method=method)
    x = _x(st)
    with torch.no_grad():
        assert_close(layer(x), F.conv2d(x, st.to_tensor(), stride=2, padding=1))
    assert_close(layer(x), F.conv2d(x, st.to_tensor(), stride=2, padding=1))  # with autograd


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_padding_modes_match_nn_conv2d(padding_mode, padding):
    st = _st(SHAPES_2, 2)
    layer = SeKronConv2d(st, padding=padding, padding_mode=padding_mode)
    conv = layer.to_conv()
    assert conv.padding_mode == padding_mode
    x = _x(st)
    with torch.no_grad():
        assert_close(layer(x), conv(x))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_same_padding_with_even_kernel_is_asymmetric_like_nn_conv2d():
    st = _st(((2, 3, 2, 1), (4, 2, 2, 2)), 2)  # kernel 4x2: "same" pads unevenly
    for mode in ("zeros", "reflect"):
        layer = SeKronConv2d(st, padding="same", padding_mode=mode)
        x = _x(st)
        with torch.no_grad():
            out = layer(x)
            assert out.shape[-2:] == x.shape[-2:]
            assert_close(out, layer.to_conv()(x))


def test_unbatched_input():
    st = _st(SHAPES_2, 2)
    layer = SeKronConv2d(st, padding=1)
    x = _x(st, batch=1)
    with torch.no_grad():
        assert_close(layer(x[0]), layer(x)[0])


def test_numpy_factors_are_converted_keeping_dtype():
    st = sekron.random_sekron(SHAPES_2, 2, random_state=0)  # numpy float64
    layer = SeKronConv2d(st)
    assert all(isinstance(p, nn.Parameter) for p in layer.factors)
    assert layer.factors[0].dtype == torch.float64
    assert_close(layer.sekron.to_tensor(), torch.from_numpy(st.to_tensor()))


def test_sekron_property_shares_parameters():
    layer = SeKronConv2d(_st(SHAPES_3, (2, 2)))
    st = layer.sekron
    assert all(a is b for a, b in zip(st.factors, layer.factors, strict=True))
    assert (st.shapes, st.ranks, st.form) == (layer.shapes, layer.ranks, layer.form)
    assert layer.n_params == st.n_params
    assert sekron.torch.count_params(layer) == st.n_params  # no bias


# ----------------------------------------------------------------------------------------------
# from_conv
# ----------------------------------------------------------------------------------------------
CONVS = [
    dict(in_channels=6, out_channels=8, kernel_size=3),
    dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=6, out_channels=8, kernel_size=3, padding=(1, 2), dilation=(2, 1)),
    dict(in_channels=6, out_channels=8, kernel_size=3, padding="same", padding_mode="reflect"),
    dict(in_channels=6, out_channels=8, kernel_size=3, padding=1, padding_mode="circular"),
    dict(in_channels=6, out_channels=8, kernel_size=3, padding="valid"),
]


@pytest.mark.parametrize(
    "kwargs, shapes, form, dtype",
    [(kw, SHAPES_2, "nested", torch.float32) for kw in CONVS]
    + [(kw, SHAPES_3, "nested", torch.float64) for kw in CONVS[:3]]
    + [(kw, SHAPES_3, "chain", torch.float64) for kw in CONVS[3:]],
)
def test_from_conv_at_full_rank_equals_the_conv(kwargs, shapes, form, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs, dtype=dtype)
    layer = SeKronConv2d.from_conv(conv, shapes=shapes, form=form)
    assert layer.factors[0].dtype == dtype
    for attr in (
        "stride",
        "dilation",
        "padding",
        "padding_mode",
        "in_channels",
        "out_channels",
        "kernel_size",
    ):
        assert getattr(layer, attr) == getattr(conv, attr), attr
    assert (layer.bias is None) == (conv.bias is None)
    assert layer.rel_error <= tolerance(dtype)
    x = torch.randn(2, 6, 9, 8, dtype=dtype)
    with torch.no_grad():
        assert_close(layer(x), conv(x))


def test_from_conv_does_not_share_storage_with_the_conv():
    conv = nn.Conv2d(6, 8, 3)
    layer = SeKronConv2d.from_conv(conv, shapes=SHAPES_2)
    with torch.no_grad():
        layer.bias.add_(1.0)
    assert not torch.equal(layer.bias, conv.bias)


@pytest.mark.parametrize("compression", [2, 3.5])
def test_from_conv_compression_is_a_parameter_budget(compression):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    layer = SeKronConv2d.from_conv(
        conv, shapes=[(4, 4, 3, 1), (8, 4, 1, 3)], compression=compression
    )
    assert layer.n_params <= conv.weight.numel() / compression
    assert layer.compression >= compression
    measured = rel_error(layer.sekron.to_tensor(), conv.weight)
    assert abs(layer.rel_error - measured) <= tolerance(torch.float32)


def test_from_conv_tol_is_guaranteed():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, dtype=torch.float64)
    layer = SeKronConv2d.from_conv(conv, shapes=[(4, 4, 3, 1), (8, 4, 1, 3)], tol=0.5)
    assert layer.rel_error <= 0.5
    assert layer.n_params < conv.weight.numel()


# TensorLy's parafac init warns when the CP rank exceeds a mode size (sekron.structures' fit)
@pytest.mark.filterwarnings("ignore:Trying to compute SVD with n_eigenvecs:UserWarning")
@pytest.mark.parametrize("name", ["cp", "tucker2", "tt", "gkpd"])
def test_from_conv_with_a_structure(name):
    structures = pytest.importorskip("sekron.structures")
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    layer = SeKronConv2d.from_conv(conv, structure=name, compression=2)
    budget = conv.weight.numel() // 2
    fitted = structures.get_structure(name).fit(conv.weight.detach(), max_params=budget)
    if name == "tucker2":  # stored as the equal-count chain (U_F)(core)(U_C), within budget
        from sekron._embeddings import tucker2_chain

        fitted = tucker2_chain(fitted)
        assert layer.n_params - 32 <= budget  # the bias is not factorized
    assert layer.shapes == fitted.shapes and layer.ranks == fitted.ranks
    measured = rel_error(layer.sekron.to_tensor(), conv.weight)
    assert abs(layer.rel_error - measured) <= tolerance(torch.float32)
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        assert_close(layer(x), F.conv2d(x, layer.sekron.to_tensor(), layer.bias, padding=1))


def test_from_conv_with_search():
    pytest.importorskip("sekron.search")
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    layer = SeKronConv2d.from_conv(conv, structure="search", compression=2)
    assert layer.n_params <= conv.weight.numel() / 2
    measured = rel_error(layer.sekron.to_tensor(), conv.weight)
    assert abs(layer.rel_error - measured) <= tolerance(torch.float32)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        assert_close(layer(x), layer.to_conv()(x))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({}, ValueError, "exactly one of shapes"),
        ({"shapes": SHAPES_2, "structure": "cp"}, ValueError, "exactly one of shapes"),
        ({"structure": "cp", "tol": 0.1}, ValueError, "tol applies to explicit shapes"),
        ({"structure": "cp", "form": "chain"}, ValueError, "form applies to explicit shapes"),
        (
            {"shapes": SHAPES_2, "compression": 1},
            ValueError,
            "compression must be a finite number > 1",
        ),
        (
            {"shapes": SHAPES_2, "compression": "4"},
            TypeError,
            "compression must be a finite number",
        ),
        ({"structure": "search", "rank": 2}, ValueError, "rank does not apply"),
        ({"shapes": [(2, 3, 3, 1), (4, 3, 1, 3)]}, ValueError, r"mode 1"),
    ],
)
def test_from_conv_errors(kwargs, exc, match):
    conv = nn.Conv2d(6, 8, 3)
    if kwargs.get("structure") == "search":
        pytest.importorskip("sekron.search")
    with pytest.raises(exc, match=match):
        SeKronConv2d.from_conv(conv, **kwargs)


def test_from_conv_rejects_grouped_and_non_conv():
    with pytest.raises(ValueError, match="groups=2"):
        SeKronConv2d.from_conv(nn.Conv2d(4, 8, 3, groups=2), shapes=[(2, 1, 3, 1), (4, 2, 1, 3)])
    with pytest.raises(TypeError, match="conv must be a torch.nn.Conv2d; got torch.nn"):
        SeKronConv2d.from_conv(nn.Linear(3, 4), shapes=SHAPES_2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"stride": 0}, ValueError, "stride must be >= 1"),
        ({"stride": "2"}, TypeError, "stride must be an int or a tuple of 2 ints"),
        ({"padding": "full"}, ValueError, "padding must be an int, a pair, 'same' or 'valid'"),
        ({"padding": "same", "stride": 2}, ValueError, "padding='same' needs stride 1"),
        ({"padding": -1}, ValueError, "padding must be >= 0"),
        ({"padding_mode": "mirror"}, ValueError, "padding_mode must be one of"),
        ({"method": "fast"}, ValueError, "method must be one of"),
        ({"bias": torch.zeros(3)}, ValueError, r"bias must have shape \(8,\)"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SeKronConv2d(_st(SHAPES_2, 2), **kwargs)


def test_constructor_rejects_non_kernels():
    with pytest.raises(TypeError, match="st must be a sekron.SeKronTensor"):
        SeKronConv2d(torch.zeros(8, 6, 3, 3))
    with pytest.raises(ValueError, match="4-mode kernel"):
        SeKronConv2d(sekron.random_sekron([(2, 3), (2, 2)], 1, backend="pytorch"))


# ----------------------------------------------------------------------------------------------
# module behaviour: repr, state_dict, copies, pickle, trace, compile, training, gradcheck
# ----------------------------------------------------------------------------------------------
def test_extra_repr_shows_structure_ranks_and_compression():
    layer = SeKronConv2d(_st(SHAPES_3, (2, 3), "chain"), padding=1)
    text = repr(layer)
    assert "chain" in text and str(SHAPES_3) in text and "ranks=(2, 3)" in text
    assert f"{8 * 6 * 9 / layer.n_params:.3g}x" in text
    assert "padding=(1, 1)" in text


def _trained_like_pair(form="nested"):
    a = SeKronConv2d(
        _st(SHAPES_3, (2, 2), form, seed=0),
        torch.randn(8, dtype=torch.float64),
        stride=2,
        padding=1,
    )
    b = SeKronConv2d(
        _st(SHAPES_3, (2, 2), form, seed=5),
        torch.zeros(8, dtype=torch.float64),
        stride=2,
        padding=1,
    )
    return a, b


def test_state_dict_round_trip():
    a, b = _trained_like_pair()
    assert set(a.state_dict()) == {"factor0", "factor1", "factor2", "bias"}
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = _x(a.sekron)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_are_equal_and_independent(how):
    a, _ = _trained_like_pair("chain")
    b = copy.deepcopy(a) if how == "deepcopy" else pickle.loads(pickle.dumps(a))
    x = _x(a.sekron)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        b.factor0.mul_(2.0)
        assert not torch.equal(a(x), b(x))
    assert repr(a) == repr(b)


@TRACE_WARNINGS
def test_jit_trace_matches():
    a, _ = _trained_like_pair()
    x = _x(a.sekron)
    with torch.no_grad():
        traced = torch.jit.trace(a, x)
        assert_close(traced(x), a(x))
        x2 = _x(a.sekron, seed=7)
        assert_close(traced(x2), a(x2))


@DYNAMO_LRU_CACHE
@DYNAMO_BUILTIN
@DYNAMO_NON_LEAF
@pytest.mark.parametrize(
    "backend, method", [("eager", "reconstructed"), ("aot_eager", "factorized")]
)
def test_torch_compile_matches(backend, method):
    torch._dynamo.reset()
    a = SeKronConv2d(_st(SHAPES_2, 2), padding=1, method=method)
    compiled = torch.compile(a, backend=backend)
    x = _x(a.sekron)
    with torch.no_grad():
        assert_close(compiled(x), a(x))
    out = compiled(x).sum()  # and it trains
    out.backward()
    assert all(p.grad is not None for p in a.factors)


def test_factors_are_trainable():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    layer = SeKronConv2d.from_conv(conv, shapes=SHAPES_2, rank=2)
    x = torch.randn(4, 6, 7, 7)
    target = conv(x).detach()
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "form, method", [("nested", "factorized"), ("chain", "factorized"), ("chain", "reconstructed")]
)
def test_gradcheck_float64(form, method):
    st = _st(((2, 1, 3, 1), (1, 2, 1, 2)), (2,) if form == "nested" else 2, form)
    layer = SeKronConv2d(
        st, torch.randn(2, dtype=torch.float64), stride=(1, 2), padding=1, method=method
    )
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    names = [f"factor{k}" for k in range(layer.n_factors)] + ["bias"]

    def fn(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    params = tuple(getattr(layer, n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=True)


def test_to_conv_round_trip():
    a, _ = _trained_like_pair()
    conv = a.to_conv()
    x = _x(a.sekron)
    with torch.no_grad():
        assert_close(conv(x), a(x))
    back = SeKronConv2d.from_conv(conv, shapes=a.shapes)
    with torch.no_grad():
        assert_close(back(x), a(x))


def test_float64_follows_through_dtype_conversion():
    layer = SeKronConv2d.from_conv(nn.Conv2d(6, 8, 3), shapes=SHAPES_2).double()
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    assert layer(x).dtype == torch.float64
    assert np.isfinite(layer(x).detach().numpy()).all()


def test_kernel_object_follows_the_parameters() -> None:
    # the SeKronTensor behind the layer shares the parameters: every change to them (values
    # in place, dtype, a replaced parameter) reaches the output
    layer = SeKronConv2d(_st(SHAPES_3, (2, 3)), torch.randn(8, dtype=torch.float64), padding=1)
    x = _x(layer.sekron)
    assert all(a is b for a, b in zip(layer.sekron.factors, layer.factors, strict=True))

    def dense(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.conv2d(x, layer.sekron.to_tensor(), layer.bias, padding=1)

    with torch.no_grad():
        before = layer(x)
        layer.factor1.mul_(2.0)  # in place: same tensors, new values
        assert_close(layer(x), dense(x))
        assert not torch.allclose(layer(x), before)
        layer.float()  # the parameters change dtype where they are
        assert layer.sekron.dtype == torch.float32 and layer(x.float()).dtype == torch.float32
        assert_close(layer(x.float()), dense(x.float()))
        old = layer.sekron
        layer.factor0 = nn.Parameter(torch.randn_like(layer.factor0))  # a new parameter
        assert layer.sekron is not old and layer.sekron.factors[0] is layer.factor0
        assert_close(layer(x.float()), dense(x.float()))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("method", ["factorized", "reconstructed", "auto"])
@pytest.mark.parametrize(
    "shapes, ranks, form, stride, padding",
    [
        ([(16, 16, 3, 1), (16, 16, 1, 3)], 2, "nested", 1, 1),  # the 256 -> 256 layer
        ([(2, 2, 3, 1), (2, 3, 1, 3), (2, 1, 1, 1)], (2, 3), "nested", 2, 1),
        ([(2, 2, 3, 1), (2, 3, 1, 3), (2, 1, 1, 1)], (2, 3), "chain", 2, 0),
        ([(2, 2, 1, 1), (4, 3, 1, 1)], 2, "nested", 2, 0),  # 1x1: subsampled input
    ],
)
def test_a_trace_runs_at_other_batch_and_spatial_sizes(
    shapes, ranks, form, stride, padding, method
):
    st = sekron.random_sekron(
        shapes, ranks, backend="pytorch", dtype="float32", form=form, random_state=0
    )
    layer = SeKronConv2d(st, stride=stride, padding=padding, method=method)
    c = st.shape[1]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        traced = torch.jit.trace(layer, torch.randn(2, c, 8, 8, generator=gen))
        for shape in [(3, c, 8, 8), (3, c, 11, 9), (1, c, 5, 6)]:
            x = torch.randn(*shape, generator=gen)
            want = F.conv2d(x, st.to_tensor(), stride=stride, padding=padding)
            assert rel_error(traced(x), want) <= tolerance(torch.float32, exact=True)


def test_public_names_of_sekron_torch():
    import sekron.torch

    public = {n for n in vars(sekron.torch) if not n.startswith("_")} - {"annotations"}
    assert public == set(sekron.torch.__all__)
    assert list(sekron.torch.__all__) == sorted(sekron.torch.__all__)
    assert sekron.torch.clear_cache is sekron.torch._auto.clear_cache


def test_numpy_factors_with_negative_strides() -> None:
    # compress(shapes=...) of the wide model's 512x128x3x3 layer at 2x got such a factor from
    # decompose and raised torch's "negative stride" ValueError (#15)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4, 3, 3, 1))[:, ::-1]
    b = rng.standard_normal((2, 2, 2, 1, 3))[::-1]
    st = sekron.SeKronTensor([a, b], "nested")
    layer = SeKronConv2d(st, padding=1)
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    w = torch.from_numpy(np.ascontiguousarray(st.to_tensor()))
    assert_close(layer(x), F.conv2d(x, w, padding=1))
