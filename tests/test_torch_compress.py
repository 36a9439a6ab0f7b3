"""compress(), count_params and count_macs; the digits-CNN example runs."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import sekron  # noqa: E402
import sekron.torch._compress as _compress_module  # noqa: E402
from sekron.data.digits_cnn import accuracy, load_pretrained, load_test_set  # noqa: E402
from sekron.testing import rel_error, tolerance  # noqa: E402
from sekron.torch import (  # noqa: E402
    CompressionReport,
    SeKronConv2d,
    compress,
    count_macs,
    count_params,
    sekron_conv_macs,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compress_digits_cnn.py"
# TensorLy warns inside sekron.structures' fits when a rank exceeds a mode size
TENSORLY_SVD = pytest.mark.filterwarnings("ignore:Trying to compute SVD with n_eigenvecs")


def _flop_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Independent oracle: PyTorch's own FLOP counter (2 FLOPs per MAC) on one forward."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def _halves(weight_shape):
    """GKPD-like shapes (F/2, C/2, 1, 1) x (2, 2, kh, kw), or None when C is odd."""
    f, c, kh, kw = weight_shape
    if f % 2 or c % 2:
        return None
    return [(f // 2, c // 2, 1, 1), (2, 2, kh, kw)]


@pytest.fixture(scope="module")
def digits():
    model = load_pretrained()
    x, y = load_test_set()
    return model, x, y


# ----------------------------------------------------------------------------------------------
# counting
# ----------------------------------------------------------------------------------------------
def test_count_params_counts_shared_parameters_once():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), lin, lin)
    want = 4 * 3 * 9 + 4 + 16 + 4
    assert count_params(model) == want == sum(p.numel() for p in set(model.parameters()))


def test_count_params_of_a_sekron_layer_is_its_factors_and_bias():
    st = sekron.random_sekron([(4, 2, 3, 1), (2, 4, 1, 3)], 3, backend="pytorch")
    layer = SeKronConv2d(st, torch.zeros(8, dtype=torch.float64))
    assert count_params(layer) == st.n_params + 8


@pytest.mark.parametrize(
    "module, input_shape",
    [
        (nn.Conv2d(6, 8, 3), (2, 6, 9, 9)),
        (nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (1, 6, 9, 7)),
        (nn.Conv2d(6, 12, 3, groups=3, padding="same"), (1, 6, 8, 8)),
        (nn.Conv2d(6, 6, 3, groups=6, padding=1, padding_mode="reflect"), (1, 6, 8, 8)),
        (nn.Linear(5, 7), (3, 5)),
        (nn.Conv1d(4, 6, 3, stride=2), (2, 4, 11)),
        (
            nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 4, 1),
                nn.Flatten(),
                nn.Linear(64, 10),
            ),
            (2, 3, 8, 8),
        ),
    ],
)
def test_count_macs_of_dense_layers_matches_flop_counter(module, input_shape):
    want = _flop_macs(module, torch.zeros(input_shape))
    assert want > 0
    assert count_macs(module, input_shape) == want


SEKRON_CASES = [
    ("nested", [(2, 3, 3, 1), (4, 2, 1, 3)], 2),
    ("chain", [(2, 1, 1, 3), (2, 3, 3, 1), (2, 2, 1, 1)], (2, 3)),
    ("nested", [(2, 1, 1, 3), (2, 3, 3, 1), (2, 2, 1, 1)], (2, 3)),
    ("nested", [(4, 2, 1, 1), (2, 3, 1, 1)], 3),  # 1x1 kernel: the input is subsampled
]


@pytest.mark.parametrize("form, shapes, rank", SEKRON_CASES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": (2, 3), "padding": (1, 0), "dilation": (2, 1)},
        {"padding": "same", "padding_mode": "reflect"},
    ],
)
def test_count_macs_of_a_sekron_layer_matches_flop_counter_on_its_stages(
    form, shapes, rank, kwargs, monkeypatch
):
    # count_macs charges the plan's multiply-adds; a channels-first stage of at most 2
    # channels may execute packed, at PACK times its own (see the packed test below), and
    # which layout runs is measured: unpacked here, so the executed count is the plan's
    from sekron.torch import _execute

    monkeypatch.setattr(_execute, "PACK", 1)
    st = sekron.random_sekron(shapes, rank, form=form, backend="pytorch", random_state=0)
    layer = SeKronConv2d(
        st, torch.zeros(st.shape[0], dtype=torch.float64), method="factorized", **kwargs
    )
    x = torch.zeros(2, st.shape[1], 11, 10, dtype=torch.float64)
    assert count_macs(layer, x) == _flop_macs(layer, x)


def test_packed_stages_execute_pack_times_their_plan_macs():
    """A channels-first stage of at most 2 channels runs ``PACK`` batch entries side by side
    under a block-diagonal weight: PyTorch's FLOP counter sees the plan's multiply-adds plus
    ``PACK - 1`` times those of each packed stage, and nothing else changes."""
    from sekron._conv_plan import conv_plan
    from sekron.torch import _execute
    from sekron.torch._execute import run_plan

    st = sekron.random_sekron(
        [(2, 2, 3, 3), (4, 4, 1, 1)], 1, backend="pytorch", dtype="float64", random_state=0
    )
    x = torch.zeros(4, 8, 9, 8, dtype=torch.float64)
    plan = conv_plan(
        st.shapes, st.ranks, "nested", tuple(x.shape), (1, 1), (1, 1, 1, 1), (1, 1), "nchw"
    )
    packed = [s for s in plan.stages if _execute._packed(s, s.in_shape, "nchw") > 1]
    assert packed  # the (2, 2, 3, 3) stage over a folded batch of 16
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_plan(x, tuple(st.factors), plan, "nchw")
    extra = (_execute.PACK - 1) * sum(s.macs for s in packed)
    assert counter.get_total_flops() // 2 == plan.macs + extra


@pytest.mark.parametrize("form, shapes, rank", SEKRON_CASES)
def test_macs_per_position_is_spec_formula(form, shapes, rank):
    """conv docs, written out here independently: nested and chain stage costs per position."""
    shapes = tuple(map(tuple, shapes))
    S = len(shapes)
    ranks = (rank,) * (S - 1) if isinstance(rank, int) else tuple(rank)
    f = [s[0] for s in shapes]
    c = [s[1] for s in shapes]
    hw = [s[2] * s[3] for s in shapes]

    def p(n):  # product of a list
        out = 1
        for v in n:
            out *= v
        return out

    if form == "nested":
        want = p(ranks) * f[-1] * p(c) * hw[-1] + sum(
            p(ranks[: k + 1]) * p(f[k:]) * p(c[: k + 1]) * hw[k] for k in range(S - 1)
        )
    else:
        b = (1, *ranks, 1)
        want = sum(
            p(c[:k]) * p(f[k + 1 :]) * b[k] * f[k] * b[k + 1] * c[k] * hw[k] for k in range(S)
        )
    assert sekron_conv_macs(shapes, ranks, form) == want
    if all(v == 1 for s in shapes for v in s[2:]):  # 1x1: every stage sees the output grid
        assert sekron_conv_macs(shapes, ranks, form, (5, 4)) == want * 5 * 4


def test_count_macs_by_layer_and_model_state_untouched():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 36, 2))
    model.train()
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    by_layer = count_macs(model, (4, 3, 8, 8), by_layer=True)
    assert set(by_layer) == {"0", "3"}
    assert sum(by_layer.values()) == count_macs(model, (4, 3, 8, 8))
    assert model.training and model[0].training and not model[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (("(1, 3)",), TypeError, "input_shape must be a tuple of ints"),
        (((1, 0, 4),), ValueError, "non-empty tuple of positive ints"),
    ],
)
def test_count_macs_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        count_macs(nn.Conv2d(3, 4, 1), *args)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        count_macs("model", (1, 3, 4, 4))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        count_params(3)


# ----------------------------------------------------------------------------------------------
# compress on the pretrained digits CNN
# ----------------------------------------------------------------------------------------------
def _check_rows(
    report: CompressionReport, original: nn.Module, compressed: nn.Module, x: torch.Tensor | None
) -> None:
    """Every row against direct counts on the two models."""
    orig = dict(original.named_modules())
    new = dict(compressed.named_modules())
    convs = [n for n, m in original.named_modules() if isinstance(m, nn.Conv2d)]
    assert [r.name for r in report] == convs
    if x is not None:
        macs_before = count_macs(original, x, by_layer=True)
        macs_after = count_macs(compressed, x, by_layer=True)
        assert report.macs_before == sum(macs_before.values())
        assert report.macs_after == sum(macs_after.values())
    for r in report:
        conv = orig[r.name]
        assert r.shape == tuple(conv.weight.shape)
        assert r.params_before == count_params(conv)
        assert r.params_after == count_params(new[r.name])
        if x is not None:
            assert r.macs_before == macs_before[r.name]
            assert r.macs_after == macs_after[r.name]
        if r.replaced:
            layer = new[r.name]
            assert isinstance(layer, SeKronConv2d)
            assert (r.shapes, r.ranks, r.form) == (layer.shapes, layer.ranks, layer.form)
            assert r.params_after < r.params_before
            measured = rel_error(layer.sekron.to_tensor(), conv.weight)
            assert abs(r.rel_error - measured) <= tolerance(torch.float32)
        else:
            assert new[r.name] is not None and type(new[r.name]) is nn.Conv2d
            assert r.skipped and r.params_after == r.params_before
    assert report.params_before == count_params(original)
    assert report.params_after == count_params(compressed)


def test_compress_digits_cnn_with_shapes_keeps_accuracy(digits):
    model, x, y = digits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = accuracy(model, x, y)
    small, report = compress(
        model,
        shapes=_halves,
        compression=2,
        progress=False,
        input_shape=(1, 1, 16, 16),
        method="factorized",
    )
    # the original is untouched
    assert all(type(m) is not SeKronConv2d for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    _check_rows(report, model, small, torch.zeros(1, 1, 16, 16))
    assert report.replaced == ["features.2", "features.5", "features.8"]
    assert "min_params" in report.skipped["features.0"]
    assert report.params_after < report.params_before
    # the stated bound: at compression 2 the accuracy drops by at most 5 points
    assert accuracy(small, x, y) >= base - 0.05


@TENSORLY_SVD
@pytest.mark.parametrize("compression", [2, 4])
def test_compress_digits_cnn_with_a_structure(digits, compression):
    pytest.importorskip("sekron.structures")
    model, x, y = digits
    base = accuracy(model, x, y)
    small, report = compress(
        model,
        structure="tt",
        compression=compression,
        progress=False,
        example_input=x[:2],
        method="factorized",
    )
    _check_rows(report, model, small, x[:2])
    assert report.replaced, report
    for r in report:
        if r.replaced:
            assert r.structure == "tt"
            # the budget bounds the factors; the bias is kept on top
            assert r.params_after - r.shape[0] <= r.params_before / compression
    if compression == 2:
        assert accuracy(small, x, y) >= base - 0.05
    with torch.no_grad():  # outputs follow the per-layer errors: never wildly off
        assert rel_error(small(x), model(x)) < 1.0


def test_compress_without_input_reports_macs_per_position(digits):
    model, _, _ = digits
    small, report = compress(model, shapes=_halves, compression=2, progress=False)
    assert report.macs_per_position and report.macs_before is None
    for r in report:
        conv = dict(model.named_modules())[r.name]
        assert r.macs_before == conv.weight.numel()
        if r.replaced:
            assert r.macs_after == sekron_conv_macs(r.shapes, r.ranks, r.form)


def test_compress_inplace_replaces_in_the_model_itself():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3))
    out, report = compress(
        model, shapes=_halves, compression=2, min_params=0, inplace=True, progress=False
    )
    assert out is model
    assert isinstance(model[0], SeKronConv2d) and isinstance(model[2], SeKronConv2d)
    assert model(torch.zeros(1, 8, 6, 6)).shape == (1, 16, 4, 4)


def test_shared_conv_is_replaced_everywhere():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    small, report = compress(model, shapes=_halves, compression=2, min_params=0, progress=False)
    assert len(report) == 1 and small[0] is small[2] and isinstance(small[0], SeKronConv2d)


# ----------------------------------------------------------------------------------------------
# skip reasons
# ----------------------------------------------------------------------------------------------
class MobileBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(4, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.pointwise = nn.Conv2d(32, 64, 1)
        self.head = nn.Conv2d(64, 64, 3, padding=1)
        self.odd = nn.Conv2d(64, 33, 3, padding=1)
        self.tiny = nn.Conv2d(33, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(self.grouped(self.depthwise(self.stem(x))))
        return self.tiny(self.odd(self.head(x)))


def test_skip_reasons_are_reported():
    torch.manual_seed(0)
    model = MobileBlock()
    small, report = compress(
        model,
        shapes=_halves,
        compression=2,
        min_params=100,
        skip=["head"],
        progress=False,
        input_shape=(1, 4, 6, 6),
    )
    reasons = report.skipped
    assert reasons["depthwise"] == "depthwise conv (groups=32)"
    assert reasons["grouped"] == "grouped conv (groups=4)"
    assert reasons["head"] == "matches skip"
    assert reasons["odd"] == "no shapes given for this layer"
    assert "min_params=100" in reasons["tiny"]
    assert report.replaced == ["stem", "pointwise"]
    _check_rows(report, model, small, torch.zeros(1, 4, 6, 6))
    with torch.no_grad():
        assert small(torch.zeros(1, 4, 6, 6)).shape == (1, 2, 6, 6)


def test_unfactorizable_and_unprofitable_layers_are_skipped_with_reasons():
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    shapes = {
        "0": [(4, 4, 3, 3), (4, 3, 1, 1)],  # 4*3 != 8 input channels: decompose refuses
        "1": [(16, 16, 3, 3), (1, 1, 1, 1)],
    }  # rank 1 already costs more than 1/2
    _, report = compress(model, shapes=shapes, compression=2, min_params=0, progress=False)
    assert report.skipped["0"].startswith("cannot factorize: mode 1")
    assert report.skipped["1"].startswith("cannot factorize: max_params=")
    _, report = compress(
        model,
        shapes=shapes | {"0": [(4, 8, 3, 3), (4, 1, 1, 1)]},
        compression=None,
        min_params=0,
        progress=False,
    )  # full rank: no saving
    assert report.skipped["0"].startswith("no saving")


@pytest.mark.parametrize("pattern", ["1", "?", "*"])
def test_skip_patterns(pattern):
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    _, report = compress(
        model, shapes=_halves, compression=2, min_params=0, skip=pattern, progress=False
    )
    assert "1" in report.skipped
    assert ("0" in report.skipped) == (pattern != "1")


# ----------------------------------------------------------------------------------------------
# interruption, progress, report export, errors
# ----------------------------------------------------------------------------------------------
def _fail_at(monkeypatch, n: int, exc: BaseException) -> list:
    """Make compress's n-th layer factorization raise ``exc``; returns the calls made."""
    real = _compress_module.factorize_weight
    calls: list = []

    def failing(weight, *args):
        calls.append(weight)
        if len(calls) == n:
            raise exc
        return real(weight, *args)

    monkeypatch.setattr(_compress_module, "factorize_weight", failing)
    return calls


@pytest.mark.parametrize("inplace", [False, True])
def test_keyboard_interrupt(monkeypatch, inplace):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3))
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        want = model(x)
    _fail_at(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        compress(
            model, shapes=_halves, compression=2, min_params=0, inplace=inplace, progress=False
        )
    assert type(model[2]) is nn.Conv2d
    assert isinstance(model[0], SeKronConv2d) == inplace
    with torch.no_grad():
        out = model(x)
    if inplace:  # the replaced layer is valid and the model runs
        assert out.shape == want.shape and torch.isfinite(out).all()
    else:  # the original is untouched
        assert torch.equal(out, want)


def test_progress_goes_to_stderr(capsys):
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    compress(model, shapes=_halves, min_params=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "compress" in captured.err and "2/2" in captured.err
    compress(model, shapes=_halves, min_params=0, progress=False)
    assert capsys.readouterr().err == ""


def test_report_table_dicts_and_json(digits):
    model, _, _ = digits
    _, report = compress(
        model, shapes=_halves, compression=2, progress=False, input_shape=(2, 1, 16, 16)
    )
    text = str(report)
    for r in report:
        assert r.name in text
    assert "skipped: " in text and "model params" in text and "(2, 1, 16, 16)" in text
    dicts = report.to_dicts()
    assert [d["name"] for d in dicts] == [r.name for r in report]
    data = json.loads(report.to_json())
    assert data["params_before"] == report.params_before
    assert data["layers"][3]["ranks"] == list(report[3].ranks)
    assert data["layers"][0]["skipped"] == report[0].skipped
    assert len(report[1:]) == 3 and "CompressionReport(3 of 4" in repr(report)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"compression": 0.5}, ValueError, "compression must be a finite number > 1"),
        ({"shapes": _halves, "structure": "cp"}, ValueError, "either shapes or a structure"),
        ({"shapes": 3}, TypeError, "shapes must be a dict"),
        ({"structure": None}, ValueError, "got neither"),
        ({"structure": "search", "compression": None}, ValueError, "needs compression"),
        ({"shapes": _halves, "min_params": -1}, ValueError, "min_params must be"),
        ({"shapes": _halves, "skip": 3}, TypeError, "skip must be"),
        ({"shapes": _halves, "skip": ["a", 3]}, TypeError, r"skip\[1\] must be a str"),
        (
            {"shapes": _halves, "input_shape": (1, 3), "example_input": torch.zeros(1)},
            ValueError,
            "at most one of input_shape and example_input",
        ),
        ({"structure": "tt", "tol": 0.1}, ValueError, "tol applies to explicit shapes"),
        ({"shapes": _halves, "form": "ring"}, ValueError, "form must be"),
        ({"shapes": _halves, "method": "fast"}, ValueError, "method must be one of"),
    ],
)
def test_compress_errors_before_any_work(kwargs, exc, match, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("factorized a layer before validating")

    monkeypatch.setattr(_compress_module, "factorize_weight", fail)
    with pytest.raises(exc, match=match):
        compress(nn.Sequential(nn.Conv2d(8, 16, 3)), progress=False, **kwargs)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        compress("model")


def test_compress_with_search_on_a_small_model():
    pytest.importorskip("sekron.search")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))
    small, report = compress(model, compression=2, min_params=0, progress=False)
    row = report[0]
    assert row.replaced and row.structure == "search"
    assert row.params_after - 8 <= model[0].weight.numel() / 2
    _check_rows(report, model, small, None)


# ----------------------------------------------------------------------------------------------
# the example runs
# ----------------------------------------------------------------------------------------------
@TENSORLY_SVD
def test_example_runs(capsys):
    pytest.importorskip("sekron.structures")
    namespace = runpy.run_path(str(EXAMPLE))
    result = namespace["main"]()
    assert result["compressed_accuracy"] >= result["original_accuracy"] - 0.05
    out = capsys.readouterr().out
    assert "accuracy" in out and "features.8" in out


# ----------------------------------------------------------------------------------------------
# compress never changes what a model computes silently, nor silently does nothing
# ----------------------------------------------------------------------------------------------
class _StdConv(nn.Conv2d):
    """A weight-standardising conv (the timm/BiT pattern): its own forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class _SamePadConv(nn.Conv2d):
    """A conv that pads "same" dynamically (TF style): its own _conv_forward."""

    def _conv_forward(self, x, weight, bias):
        pad = self.kernel_size[0] - 1
        x = nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return nn.functional.conv2d(x, weight, bias, self.stride, 0)


class _PlainSubclass(nn.Conv2d):
    """A subclass that computes exactly what nn.Conv2d does: replaced."""


def test_compress_skips_conv_subclasses_with_their_own_forward():
    torch.manual_seed(0)
    model = nn.Sequential(_StdConv(8, 16, 3), _SamePadConv(16, 16, 3), _PlainSubclass(16, 16, 3))
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        want = model(x)
    small, report = compress(model, shapes=_halves, compression=2, min_params=0, progress=False)
    assert "has its own forward" in report.skipped["0"] and "_StdConv" in report.skipped["0"]
    assert "has its own forward" in report.skipped["1"]
    assert report.replaced == ["2"] and isinstance(small[2], SeKronConv2d)
    assert type(small[0]) is _StdConv and type(small[1]) is _SamePadConv
    with torch.no_grad():
        assert small(x).shape == want.shape


def test_compress_skips_hooked_and_parametrized_layers():
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    model[0].register_forward_hook(lambda m, a, out: out * 2)
    torch.nn.utils.parametrizations.weight_norm(model[1])
    _, report = compress(model, shapes=_halves, compression=2, min_params=0, progress=False)
    assert report.skipped == {
        "0": "has hooks",
        "1": "parametrized weight (torch.nn.utils.parametrize)",
    }


@pytest.mark.parametrize("training", [False, True])
def test_compress_keeps_training_mode_and_frozen_parameters(training):
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3, bias=False))
    model.train(training)
    model[0].weight.requires_grad_(False)  # frozen weight, trainable bias
    model[2].requires_grad_(False)
    small, report = compress(model, shapes=_halves, compression=2, min_params=0, progress=False)
    assert report.replaced == ["0", "2"]
    for k in (0, 2):
        assert small[k].training == training
    assert [p.requires_grad for p in small[0].factors] == [False, False]
    assert small[0].bias.requires_grad
    assert not any(p.requires_grad for p in small[2].parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"structure": "cp", "rank": 3},
        {"structure": "tucker2", "rank": 2},
        {"shapes": _halves, "tol": 0.8},
        {"shapes": _halves, "rank": 1},
    ],
)
def test_an_explicit_budget_replaces_the_default_compression(kwargs):
    pytest.importorskip("sekron.structures")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    small, report = compress(model, min_params=0, progress=False, **kwargs)
    assert report.skipped == {} and report.replaced == ["0", "1"]
    if "rank" in kwargs and "structure" in kwargs:
        assert all(r.params_after > 0 for r in report)
    if "tol" in kwargs:
        assert all(r.rel_error <= 0.8 for r in report)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"structure": "cp", "rank": 3, "compression": 4}, "at most one of rank and compression"),
        ({"shapes": _halves, "tol": 0.5, "compression": 4}, "at most one of tol and compression"),
    ],
)
def test_conflicting_explicit_budgets_raise_before_any_layer(kwargs, match, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("factorized a layer before validating")

    monkeypatch.setattr(_compress_module, "factorize_weight", fail)
    model = nn.Sequential(nn.Conv2d(8, 16, 3))
    with pytest.raises(ValueError, match=match):
        compress(model, min_params=0, progress=False, inplace=True, **kwargs)
    assert type(model[0]) is nn.Conv2d


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_layers_are_skipped_and_the_rest_converted(dtype):
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3).to(dtype))
    small, report = compress(
        model, shapes=_halves, compression=2, min_params=0, inplace=True, progress=False
    )
    assert small is model and report.replaced == ["0"]
    assert str(dtype) in report.skipped["1"] and type(model[1]) is nn.Conv2d


def test_compress_is_atomic_when_a_layer_fails(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3))
    layers = list(model)
    calls = _fail_at(monkeypatch, 3, RuntimeError("out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        compress(model, shapes=_halves, compression=2, min_params=0, inplace=True, progress=False)
    assert len(calls) == 3 and all(a is b for a, b in zip(model, layers, strict=True))


def test_from_conv_names_the_conv_for_unsupported_weights():
    shapes = [(2, 3, 3, 1), (4, 2, 1, 3)]
    with pytest.raises(TypeError, match=r"conv\.weight has dtype torch\.bfloat16"):
        SeKronConv2d.from_conv(nn.Conv2d(6, 8, 3).bfloat16(), shapes=shapes)
    with pytest.raises(ValueError, match=r"conv\.weight is on the meta device"):
        SeKronConv2d.from_conv(nn.Conv2d(6, 8, 3, device="meta"), shapes=shapes)
    conv = nn.Conv2d(6, 8, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"conv\.weight contains NaN"):
        SeKronConv2d.from_conv(conv, shapes=shapes)


# ----------------------------------------------------------------------------------------------
# MAC counts against hand counts
# ----------------------------------------------------------------------------------------------
def _out_size(n, k, s, p, d, transposed=False, out_pad=0):
    if transposed:
        return (n - 1) * s - 2 * p + d * (k - 1) + out_pad + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "c_in, c_out, k, s, p, d, g",
    [
        (16, 32, 3, 1, 1, 1, 1),
        (16, 32, 3, 2, 0, 2, 4),
        (8, 8, 2, 3, 1, 1, 8),
        (6, 4, 1, 1, 0, 1, 2),
    ],
)
def test_conv_macs_match_the_hand_count(dims, c_in, c_out, k, s, p, d, g):
    size, batch = 9, 2
    conv_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    tconv_cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    shape = (batch, c_in, *(size,) * dims)
    conv = conv_cls(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g)
    out_positions = _out_size(size, k, s, p, d) ** dims
    assert count_macs(conv, shape) == batch * out_positions * c_out * (c_in // g) * k**dims
    tconv = tconv_cls(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g)
    # every input element is scattered through the kernel into c_out / g channels
    assert count_macs(tconv, shape) == batch * size**dims * c_in * (c_out // g) * k**dims


def test_transposed_conv_macs_match_the_issue_and_torch_flop_counter():
    layer = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
    x = torch.zeros(1, 64, 8, 8)
    assert count_macs(layer, x) == 8 * 8 * 64 * 32 * 9 == 1_179_648
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    assert count_macs(layer, x) == counter.get_total_flops() // 2


def test_linear_macs_match_the_hand_count():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10), nn.Linear(10, 7))
    assert count_macs(model, (5, 3, 4, 4)) == 5 * (48 * 10 + 10 * 7)


def test_compress_reports_model_macs_with_transposed_convs():
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ConvTranspose2d(16, 8, 2, stride=2))
    _, report = compress(
        model,
        shapes=_halves,
        compression=2,
        min_params=0,
        input_shape=(1, 8, 6, 6),
        progress=False,
    )
    dense_conv = 36 * 16 * 8 * 9
    transposed = 36 * 16 * 8 * 4
    assert report.macs_before == dense_conv + transposed
    assert report.macs_after == report[0].macs_after + transposed


def test_the_digits_weights_ship_once_as_plain_arrays():
    from sekron.data import example_keys
    from sekron.data.digits_cnn import WEIGHTS_PATH

    assert WEIGHTS_PATH.suffix == ".npz" and not WEIGHTS_PATH.with_suffix(".pt").exists()
    model = load_pretrained()  # np.load(allow_pickle=False): no pickle can run
    x, y = load_test_set()
    assert round(accuracy(model, x, y) * len(y)) == 355
    assert example_keys() == [
        n + ".weight" for n in ("features.0", "features.2", "features.5", "features.8")
    ]


def test_tucker2_layers_keep_the_budget_as_the_equal_count_chain():
    # Tucker-2's nested embedding stores U_C once per r_1 (more than the budget); compress
    # stores the chain (U_F)(core)(U_C) instead, with exactly Tucker-2's own parameter count
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1))
    small, report = compress(
        model, structure="tucker2", compression=4, min_params=0, progress=False
    )
    row = report[0]
    assert row.replaced and small[0].sekron.form == "chain"
    weight = model[0].weight
    assert row.params_after - 64 <= weight.numel() / 4  # the bias is not factorized
    rf, rc = small[0].sekron.ranks
    assert row.params_after - 64 == sekron.structures.Tucker2().n_params(weight.shape, (rf, rc))
    x = torch.randn(2, 32, 8, 8)
    ref = torch.nn.functional.conv2d(x, small[0].sekron.to_tensor(), model[0].bias, padding=1)
    assert torch.allclose(small(x), ref, atol=1e-5)
