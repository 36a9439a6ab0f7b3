"""sekron.torch's ``method="auto"``: per-regime choices among the dense conv and the plan
space (fully factorized, merged factors), never changing results, never timing in tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import sekron  # noqa: E402
from sekron import _conv_choice, random_sekron  # noqa: E402
from sekron._conv_choice import DENSE, Choice  # noqa: E402
from sekron.testing import rel_error, tolerance  # noqa: E402
from sekron.torch import SeKronConv2d, _auto, _functional, conv2d  # noqa: E402

EXACT32 = tolerance("float32", exact=True)


def _kern(shapes: list | None = None, ranks: object = 1, grad: bool = False) -> sekron.SeKronTensor:
    kern = random_sekron(
        shapes or [(8, 8, 3, 3), (8, 8, 1, 1)],
        ranks,
        backend="pytorch",
        dtype="float32",
        random_state=0,
    )
    for f in kern.factors:
        f.requires_grad_(grad)
    return kern


@pytest.fixture(autouse=True)
def _fresh_cache() -> object:
    sekron.torch.clear_cache()
    yield
    sekron.torch.clear_cache()


def _assert_same_grads(
    y: torch.Tensor, ref: torch.Tensor, leaves: list, grad: object = None
) -> None:
    """The gradients of ``y`` and of the dense conv ``ref`` with respect to ``leaves``, for one
    random cotangent, agree to float32 rounding (``grad``: the ``torch.autograd.grad`` to use,
    for a test that has patched it)."""
    grad = grad or torch.autograd.grad
    g = torch.randn_like(y)
    for a, b in zip(grad(y, leaves, g), grad(ref, leaves, g), strict=True):
        assert rel_error(a, b) <= EXACT32


def _fake_timer(fastest: str, log: list, run: bool = False) -> object:
    """A stand-in for ``_auto._time``: logs the candidate names (and, with ``run``, calls each
    once), and reports ``fastest`` ten times faster than the rest."""

    def fake_time(fns: dict, device: object) -> dict:
        log.append(tuple(fns))
        if run:
            for fn in fns.values():
                fn()
        return {name: [0.1 if name == fastest else 1.0] * 7 for name in fns}

    return fake_time


def test_auto_measures_in_every_regime_unless_forbidden() -> None:
    kern = _kern(grad=True)
    x = torch.randn(1, 64, 12, 12)
    conv2d(x, kern, padding=1, measure=False)  # the cost model: nothing cached
    with torch.no_grad():
        conv2d(x, kern, padding=1, measure=False)
    assert _auto.cached_choices() == {}
    y = conv2d(x, kern, padding=1)  # autograd records: the training regime is measured
    with torch.no_grad():
        conv2d(x, kern, padding=1)
    regimes = sorted(key[1] for key in _auto.cached_choices())
    assert regimes == ["inference", "training"]
    assert rel_error(y, F.conv2d(x, kern.to_tensor(), padding=1)) <= EXACT32


def test_the_regime_is_part_of_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """One input shape, three regimes: three cached choices, each measured once; a layer in
    eval mode with autograd on is the "forward" regime, in train mode "training"."""
    log: list = []
    monkeypatch.setattr(_auto, "_time", _fake_timer("dense", log))
    layer = SeKronConv2d(_kern(), padding=1)
    x = torch.randn(2, 64, 9, 9)
    for _ in range(2):
        with torch.no_grad():
            layer(x)
        layer.train()
        layer(x)
        layer.eval()
        layer(x)
    keys = _auto.cached_choices()
    assert sorted(k[1] for k in keys) == ["forward", "inference", "training"]
    assert len({k[0] for k in keys}) == 1  # the same plan key
    assert len(log) == 3  # each regime measured once, then served from the cache


def test_training_regime_times_the_backward_without_touching_grads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Measuring under autograd runs a backward per candidate (counted), on detached copies:
    no ``.grad`` appears on the caller's tensors, and the result and gradients equal the
    dense conv's."""
    grads: list[int] = []
    real_grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        grads.append(1)
        return real_grad(*args, **kwargs)

    log: list = []
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(_auto, "_time", _fake_timer("nhwc", log, run=True))
    kern = _kern(grad=True)
    x = torch.randn(2, 64, 9, 9, requires_grad=True)
    y = conv2d(x, kern, padding=1)
    assert len(grads) == sum(len(names) for names in log) > 0
    assert x.grad is None and all(f.grad is None for f in kern.factors)
    ((key, regime, *_), choice), *_ = _auto.cached_choices().items()
    assert regime == "training" and choice == Choice("factorized", "nhwc", (1, 1))
    # the forward regime (no backward follows) times forwards only
    grads.clear()
    layer = SeKronConv2d(kern, padding=1).eval()
    layer(x)
    assert grads == []
    w = kern.to_tensor()
    ref = F.conv2d(x, w, padding=1)
    assert rel_error(y, ref) <= EXACT32
    _assert_same_grads(y, ref, [x, *kern.factors], real_grad)


@pytest.mark.parametrize("fastest", ["nhwc", "nchw", "dense"])
def test_auto_caches_the_fastest_measured_candidate(
    monkeypatch: pytest.MonkeyPatch, fastest: str
) -> None:
    """Both factorized layouts are candidates; the cached one runs and equals the dense conv."""
    kern = _kern()
    x = torch.randn(2, 64, 9, 9)
    timed: list[tuple[str, ...]] = []
    monkeypatch.setattr(_auto, "_time", _fake_timer(fastest, timed))
    with torch.no_grad():
        y = conv2d(x, kern, padding=1)
        y2 = conv2d(x, kern, padding=1)  # from the cache
    # a plan is confirmed by a second round of it against dense
    confirm = [] if fastest == "dense" else [("dense", fastest)]
    assert timed == [("dense", "nhwc", "nchw"), *confirm]
    want = DENSE if fastest == "dense" else Choice("factorized", fastest, (1, 1))
    assert list(_auto.cached_choices().values()) == [want]
    expected = F.conv2d(x, kern.to_tensor(), padding=1)
    assert rel_error(y, expected) <= EXACT32 and rel_error(y2, expected) <= EXACT32


def test_auto_may_choose_a_merged_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """S = 3: merged groupings are candidates; a cached merged plan equals the dense conv,
    gradients included."""
    kern = _kern([(4, 4, 3, 1), (4, 4, 1, 3), (4, 4, 1, 1)], (2, 2), grad=True)
    x = torch.randn(2, 64, 7, 7, requires_grad=True)
    timed: list[tuple[str, ...]] = []
    monkeypatch.setattr(_auto, "_time", _fake_timer("nhwc:1+2", timed))
    y = conv2d(x, kern, padding=1)
    assert timed[0][:4] == ("dense", "nhwc", "nchw", "nhwc:1+2")
    assert list(_auto.cached_choices().values()) == [Choice("merged", "nhwc", (1, 2))]
    ref = F.conv2d(x, kern.to_tensor(), padding=1)
    assert rel_error(y, ref) <= EXACT32
    _assert_same_grads(y, ref, [x, *kern.factors])


def test_auto_compares_paired_ratios() -> None:
    """The choice uses the median of per-repetition ratios, not a ratio of medians."""
    assert _conv_choice.paired_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 10.0]) == pytest.approx(1.0)
    assert _conv_choice.paired_ratio([0.7, 3.5, 0.7], [1.0, 5.0, 1.0]) == pytest.approx(0.7)


def test_auto_needs_factorized_to_win_paired_and_at_best() -> None:
    """A dense conv slow in most repetitions but fast once must not lose to a plan that is
    never as fast as its best; a real win passes both criteria."""
    dense = [1.0] * 6 + [0.5]
    assert _conv_choice.paired_ratio([0.6] * 7, dense) < _conv_choice.MARGIN
    assert not _conv_choice.wins([0.6] * 7, dense)
    assert _conv_choice.wins([0.3] * 7, dense)
    assert not _conv_choice.wins([0.9] * 7, [1.0] * 7)
    # 1.18x faster, paired and at best: chosen (the earlier margin, 0.8, turned such plans
    # down, and with them factorized fine-tuning steps 1.13-1.29x faster than dense)
    assert _conv_choice.wins([0.85] * 7, [1.0] * 7)


def test_auto_env_var_disables_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEKRON_AUTO_MEASURE", "0")
    with torch.no_grad():
        conv2d(torch.randn(1, 64, 10, 10), _kern(), padding=1)
    conv2d(torch.randn(1, 64, 10, 10), _kern(grad=True), padding=1)
    assert _auto.cached_choices() == {}


def test_auto_skips_factorized_when_macs_do_not_pay() -> None:
    # full-ish rank: the factorized plan costs more than the dense conv
    kern = random_sekron([(2, 2, 3, 3), (2, 2, 1, 1)], 4, backend="pytorch", random_state=0)
    with torch.no_grad():
        conv2d(torch.randn(1, 4, 6, 6, dtype=torch.float64), kern)
    assert list(_auto.cached_choices().values()) == [DENSE]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_auto_under_jit_trace() -> None:
    kern = _kern()
    x = torch.randn(2, 64, 8, 8)
    traced = torch.jit.trace(lambda t: conv2d(t, kern, padding=1), (x,), check_trace=False)
    assert _auto.cached_choices() == {}
    assert rel_error(traced(x), F.conv2d(x, kern.to_tensor(), padding=1)) <= EXACT32


@pytest.mark.filterwarnings("ignore:Dynamo:UserWarning")  # graph-break notes, not errors
def test_auto_under_torch_compile() -> None:
    kern = _kern([(4, 4, 3, 3), (4, 4, 1, 1)])
    x = torch.randn(2, 16, 8, 8)
    compiled = torch.compile(lambda t: conv2d(t, kern, padding=1), backend="eager")
    with torch.no_grad():
        y = compiled(x)
    assert _auto.cached_choices() == {}  # nothing timed (nor cached) while compiling
    assert rel_error(y, F.conv2d(x, kern.to_tensor(), padding=1)) <= EXACT32


@pytest.mark.filterwarnings("ignore:Dynamo:UserWarning")
def test_torch_compile_does_not_recompile_a_repeated_call() -> None:
    """Compiled, a repeated call compiles nothing more, and the argument checks' memos are
    left alone while compiling (dynamo guards on a dict it reads: a write recompiles)."""
    from torch._dynamo.testing import CompileCounter

    from sekron import _conv_args

    kern = _kern([(4, 4, 3, 3), (4, 4, 1, 1)])
    x = torch.randn(2, 16, 8, 8)
    _conv_args._ARGS_MEMO.clear()
    _conv_args._SHAPES_MEMO.clear()
    counter = CompileCounter()
    compiled = torch.compile(lambda t: conv2d(t, kern, padding=1), backend=counter)
    with torch.no_grad():
        compiled(x)
        first = counter.frame_count
        compiled(x)
        compiled(x)
    assert counter.frame_count == first
    assert not _conv_args._ARGS_MEMO and not _conv_args._SHAPES_MEMO


def test_hopeless_candidates_stop_being_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake clock: a plan twice as slow as the dense conv is timed for ``_PRUNE_AFTER``
    repetitions only (and cannot be chosen); the others for all ``_REPEATS``."""
    clock = [0.0]
    calls = {"dense": 0, "slow": 0, "fast": 0}

    def runner(name: str, cost: float) -> object:
        def run() -> None:
            calls[name] += 1
            clock[0] += cost

        return run

    monkeypatch.setattr(_conv_choice.time, "perf_counter", lambda: clock[0])
    fns = {"dense": runner("dense", 1.0), "slow": runner("slow", 2.0), "fast": runner("fast", 0.5)}
    times = _auto._time(fns, torch.device("cpu"))
    assert (
        len(times["slow"]) == _conv_choice.PRUNE_AFTER < len(times["fast"]) == _conv_choice.REPEATS
    )
    assert calls == {
        "dense": 1 + _conv_choice.REPEATS,
        "slow": 1 + _conv_choice.PRUNE_AFTER,
        "fast": 8,
    }


def test_training_with_only_the_bias_trainable() -> None:
    """Frozen factors, a trainable bias: the training regime is measured without a backward
    to the factors (none requires grad), and the bias still gets its gradient."""
    layer = SeKronConv2d(_kern(), torch.zeros(64), padding=1)
    for f in layer.factors:
        f.requires_grad_(False)
    x = torch.randn(2, 64, 9, 9)
    y = layer(x)
    y.sum().backward()
    assert [k[1] for k in _auto.cached_choices()] == ["training"]
    assert layer.bias.grad is not None
    assert rel_error(y, F.conv2d(x, layer.sekron.to_tensor(), layer.bias, padding=1)) <= EXACT32


def test_a_plan_pruned_in_the_confirming_round_is_not_chosen() -> None:
    """A plan that wins the first round but is hopeless in the second (a load change) is
    pruned there (fewer timings than the dense conv): the dense conv is chosen, no error."""
    plans = {"nhwc": Choice("factorized", "nhwc", (1, 1))}
    first = {"dense": [1.0] * 7, "nhwc": [0.1] * 7}
    pruned = {"dense": [1.0] * 7, "nhwc": [2.0] * _conv_choice.PRUNE_AFTER}
    assert _conv_choice.decide(plans, first, lambda best: pruned) == DENSE
    confirmed = {"dense": [1.0] * 7, "nhwc": [0.1] * 7}
    assert _conv_choice.decide(plans, first, lambda best: confirmed) == plans["nhwc"]


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list:
    builds: list = []
    to_tensor = sekron.SeKronTensor.to_tensor

    def counting(self: sekron.SeKronTensor) -> object:
        builds.append(1)
        return to_tensor(self)

    monkeypatch.setattr(sekron.SeKronTensor, "to_tensor", counting)
    return builds


def test_auto_reuses_the_dense_kernel_while_the_factors_keep_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inference on the dense choice builds the kernel once; any change of the values (a
    ``.data`` write, no version bump) builds it again; ``clear_cache`` forgets it."""
    layer = SeKronConv2d(_kern([(2, 2, 3, 3), (8, 8, 1, 1)], 4), padding=1)  # no plan pays: dense
    x = torch.randn(2, 16, 7, 7)
    builds = _count_builds(monkeypatch)
    with torch.no_grad():
        first = [layer(x) for _ in range(3)]
        assert len(builds) == 1
        layer.factor1.data.mul_(2.0)
        second = layer(x)
        assert len(builds) == 2
        sekron.torch.clear_cache()
        layer(x)
        assert len(builds) == 3
        expected = F.conv2d(x, layer.sekron.to_tensor(), padding=1)
    assert all(torch.equal(y, first[0]) for y in first)
    assert rel_error(second, expected) <= EXACT32
    assert rel_error(second, first[0]) > 0.1


def test_auto_rebuilds_the_kernel_where_autograd_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """With autograd recording, every call builds the kernel in the graph: the factors get
    their gradients (the oracle's), and nothing is kept for them."""
    kern = _kern([(2, 2, 3, 3), (8, 8, 1, 1)], 4, grad=True)
    x = torch.randn(2, 16, 7, 7)
    builds = _count_builds(monkeypatch)
    for _ in range(2):
        conv2d(x, kern, padding=1).square().sum().backward()
    assert len(builds) == 2 and not _auto._KERNELS
    ref = [f.detach().clone().requires_grad_() for f in kern.factors]
    F.conv2d(x, sekron.SeKronTensor(ref).to_tensor(), padding=1).square().sum().backward()
    for f, r in zip(kern.factors, ref, strict=True):
        assert rel_error(f.grad, 2 * r.grad) <= EXACT32


def test_the_kernel_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels beyond ``KERNEL_CACHE_ELEMENTS`` elements drop the oldest first; a kernel
    larger than the bound is not kept."""
    monkeypatch.setattr(_auto, "KERNEL_CACHE_ELEMENTS", 2 * 16 * 16 * 9)
    x = torch.randn(1, 16, 5, 5)
    kerns = [_kern([(2, 2, 3, 3), (8, 8, 1, 1)], 4) for _ in range(3)]
    with torch.no_grad():
        for kern in kerns:
            conv2d(x, kern, padding=1)
        assert len(_auto._KERNELS) == 2
        assert [k[-1] for k in _auto._KERNELS] == [
            tuple(f.data_ptr() for f in kern.factors) for kern in kerns[1:]
        ]
        monkeypatch.setattr(_auto, "KERNEL_CACHE_ELEMENTS", 16 * 16 * 9 - 1)
        sekron.torch.clear_cache()
        conv2d(x, kerns[0], padding=1)
    assert not _auto._KERNELS


def test_the_forward_regime_reuses_the_kernel_and_keeps_its_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An eval-mode layer with autograd on (the "forward" regime) reuses the kernel, and a
    backward through it still gives the oracle's gradients, second order included."""
    kern = random_sekron(
        [(2, 2, 3, 3), (4, 4, 1, 1)], 4, backend="pytorch", dtype="float64", random_state=1
    )
    layer = SeKronConv2d(kern, torch.zeros(8, dtype=torch.float64), padding=1).eval()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    builds = _count_builds(monkeypatch)
    outs = [layer(x) for _ in range(2)]
    assert len(builds) == 1 and [k[1] for k in _auto.cached_choices()] == ["forward"]
    grads = torch.autograd.grad(outs[1].square().sum(), [x, *layer.factors])
    ref = [f.detach().clone().requires_grad_() for f in layer.factors]
    y_ref = F.conv2d(x, sekron.SeKronTensor(ref).to_tensor(), padding=1)
    expected = torch.autograd.grad(y_ref.square().sum(), [x, *ref])
    assert rel_error(outs[1], y_ref) <= tolerance("float64", exact=True)
    for g, e in zip(grads, expected, strict=True):
        assert rel_error(g, e) <= tolerance("float64", exact=True)
    factors = list(layer.factors)
    assert torch.autograd.gradgradcheck(
        lambda *fs: _auto.kernel(sekron.SeKronTensor(list(fs)), "forward"), factors
    )


def test_frozen_factors_keep_their_kernel_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training with frozen factors (only the input needs a gradient): the kernel is a
    constant, built once, and the input's gradient is the oracle's."""
    kern = _kern([(2, 2, 3, 3), (8, 8, 1, 1)], 4)  # no plan pays: dense
    builds = _count_builds(monkeypatch)
    for _ in range(2):
        x = torch.randn(2, 16, 7, 7, requires_grad=True)
        (gx,) = torch.autograd.grad(conv2d(x, kern, padding=1).square().sum(), [x])
    assert len(builds) == 1 and [k[1] for k in _auto.cached_choices()] == ["training"]
    xr = x.detach().requires_grad_()
    (expected,) = torch.autograd.grad(
        F.conv2d(xr, kern.to_tensor(), padding=1).square().sum(), [xr]
    )
    assert rel_error(gx, expected) <= EXACT32


def _log_layouts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The layouts of the plans the functional path runs, in order (``run_plan`` spied)."""
    ran: list[str] = []
    real_run = _functional.run_plan

    def logging_run(x: object, factors: object, plan: object, layout: str) -> object:
        ran.append(layout)
        return real_run(x, factors, plan, layout)

    monkeypatch.setattr(_functional, "run_plan", logging_run)
    return ran


@pytest.mark.parametrize("fastest", ["nhwc", "nchw"])
def test_factorized_measures_its_layout_per_regime(
    monkeypatch: pytest.MonkeyPatch, fastest: str
) -> None:
    """``method="factorized"`` times its plan in both layouts (never the dense conv), caches
    the faster per regime, runs it, and equals the dense conv, gradients included."""
    timed: list[tuple[str, ...]] = []
    monkeypatch.setattr(_auto, "_time", _fake_timer(fastest, timed))
    ran = _log_layouts(monkeypatch)
    kern = _kern(grad=True)
    x = torch.randn(2, 64, 9, 9, requires_grad=True)
    y = conv2d(x, kern, padding=1, method="factorized")
    y2 = conv2d(x, kern, padding=1, method="factorized")  # from the cache
    with torch.no_grad():
        y3 = conv2d(x, kern, padding=1, method="factorized")  # another regime: measured
    assert timed == [("nhwc", "nchw"), ("nhwc", "nchw")]
    assert ran == [fastest] * 3
    assert sorted(k[1] for k in _auto._LAYOUTS.copy()) == ["inference", "training"]
    assert _auto.cached_choices() == {}  # auto's own cache is untouched
    ref = F.conv2d(x, kern.to_tensor(), padding=1)
    for out in (y, y2, y3):
        assert rel_error(out, ref) <= EXACT32
    _assert_same_grads(y, ref, [x, *kern.factors])
    sekron.torch.clear_cache()
    assert _auto._LAYOUTS.copy() == {}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_factorized_runs_channels_last_when_it_may_not_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under tracing, with ``measure=False`` and with ``SEKRON_AUTO_MEASURE=0``: no timing,
    nothing cached, channels-last stages."""
    timed: list[tuple[str, ...]] = []
    monkeypatch.setattr(_auto, "_time", _fake_timer("nchw", timed))
    ran = _log_layouts(monkeypatch)
    kern = _kern()
    x = torch.randn(2, 64, 9, 9)
    with torch.no_grad():
        traced = torch.jit.trace(
            lambda t: conv2d(t, kern, padding=1, method="factorized"), x, check_trace=False
        )
        y = conv2d(x, kern, padding=1, method="factorized", measure=False)
        monkeypatch.setenv("SEKRON_AUTO_MEASURE", "0")
        conv2d(x, kern, padding=1, method="factorized")
    assert timed == [] and _auto._LAYOUTS.copy() == {}
    assert ran == ["nhwc"] * 3
    assert rel_error(y, F.conv2d(x, kern.to_tensor(), padding=1)) <= EXACT32
    assert rel_error(traced(x), y) <= EXACT32


def test_faster_layout_needs_channels_first_to_win_paired_and_at_best() -> None:
    fl = _conv_choice.faster_layout
    assert fl({"nhwc": [1.0] * 5, "nchw": [0.9] * 5}) == "nchw"
    assert fl({"nhwc": [1.0] * 5, "nchw": [1.0] * 5}) == "nhwc"  # a tie keeps channels-last
    # faster paired, but channels-last's best run is faster still: channels-last
    assert fl({"nhwc": [0.5, 2.0, 2.0], "nchw": [0.9, 1.0, 1.0]}) == "nhwc"


@pytest.mark.parametrize("method", ["auto", "factorized"])
@pytest.mark.parametrize("measure", [None, False])
def test_measured_methods_under_vmap(method: str, measure: object) -> None:
    """Under ``torch.func.vmap`` (where memory-format queries are not implemented) the
    measured methods neither measure nor fail, and equal the dense conv per sample."""
    kern = _kern([(2, 2, 3, 3), (32, 32, 1, 1)])
    xb = torch.randn(3, 2, 64, 6, 6)
    got = torch.func.vmap(lambda t: conv2d(t, kern, None, 1, 1, method=method, measure=measure))(xb)
    want = torch.stack([F.conv2d(t, kern.to_tensor(), padding=1) for t in xb])
    assert rel_error(got, want) <= EXACT32
    assert _auto.cached_choices() == {} and _auto._LAYOUTS.copy() == {}


@pytest.mark.parametrize("method", ["auto", "factorized"])
def test_measuring_inside_non_reentrant_checkpoint(method: str) -> None:
    """The first call measures inside ``checkpoint(use_reentrant=False)``: the timing runs must
    not be saved by the checkpoint's hooks (the recomputation, served from the cache, would
    save a different number of tensors), and the gradients are the dense conv's."""
    from torch.utils.checkpoint import checkpoint

    kern = _kern([(2, 2, 3, 3), (32, 32, 1, 1)], grad=True)
    x = torch.randn(2, 64, 6, 6, requires_grad=True)
    y = checkpoint(lambda t: conv2d(t, kern, None, 1, 1, method=method), x, use_reentrant=False)
    _assert_same_grads(y, F.conv2d(x, kern.to_tensor(), padding=1), [x, *kern.factors])
    assert _auto.cached_choices() or _auto._LAYOUTS.copy()  # it did measure


def test_choice_cache_drops_the_least_recently_used() -> None:
    cache: _conv_choice.ChoiceCache[str, int] = _conv_choice.ChoiceCache(maxsize=2)
    cache["a"], cache["b"] = 1, 2
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache["c"] = 3
    assert cache.copy() == {"a": 1, "c": 3} and cache.get("b") is None
    cache["a"] = 4  # setting an old key refreshes it too
    cache["d"] = 5
    assert list(cache.copy()) == ["a", "d"] and len(cache) == 2
    assert "a" in cache and "b" not in cache
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="maxsize must be at least 1, got 0"):
        _conv_choice.ChoiceCache(maxsize=0)
    with pytest.raises(TypeError, match="maxsize must be an int, got float"):
        _conv_choice.ChoiceCache(maxsize=2.0)  # type: ignore[arg-type]


def test_auto_and_factorized_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream of new input sizes keeps at most ``maxsize`` choices and layouts (they grew
    without bound before), the newest ones, and results are unchanged."""
    monkeypatch.setattr(_auto._CACHE, "maxsize", 3)
    monkeypatch.setattr(_auto._LAYOUTS, "maxsize", 2)
    monkeypatch.setattr(_auto, "_time", _fake_timer("nchw", []))
    dense_only = _kern([(2, 2, 3, 3), (8, 8, 1, 1)], 4)  # no plan pays: dense, cached at once
    kern = _kern()
    sizes = [5, 6, 7, 8, 9]
    with torch.no_grad():
        for s in sizes:
            x = torch.randn(1, 16, s, s)
            y = conv2d(x, dense_only, padding=1)
            assert rel_error(y, F.conv2d(x, dense_only.to_tensor(), padding=1)) <= EXACT32
            x = torch.randn(1, 64, s, s)
            y = conv2d(x, kern, padding=1, method="factorized")
            assert rel_error(y, F.conv2d(x, kern.to_tensor(), padding=1)) <= EXACT32
    assert [k[0].in_shape[2] for k in _auto.cached_choices()] == sizes[-3:]
    assert [k[0].in_shape[2] for k in _auto._LAYOUTS.copy()] == sizes[-2:]


def test_a_plan_at_two_thirds_of_the_dense_macs_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1x1 split whose plan needs 1/1.97 of the dense multiply-adds is a candidate (it ran
    1.08-1.24x faster than the dense conv on two CPUs but was never timed under the old
    limit of one half); one needing more than two thirds is not, and is not timed."""
    from sekron._conv_macs import dense_macs
    from sekron._conv_plan import ConvKey

    def key(shapes: list, ranks: tuple) -> ConvKey:
        shapes_t = tuple(tuple(s) for s in shapes)
        return ConvKey(shapes_t, ranks, "nested", (2, 256, 6, 6), (1, 1), (0, 0, 0, 0), (1, 1))

    pays = key([(2, 2, 1, 1), (128, 128, 1, 1)], (1,))
    ratio = (
        dense_macs(pays.shapes, pays.in_shape, (1, 1), (0, 0, 0, 0), (1, 1))
        / pays.plan("nhwc").macs
    )
    assert 1.9 < ratio < 2.0
    assert {"nhwc", "nchw"} <= set(_conv_choice.candidates(pays))
    assert _conv_choice.candidates(key([(2, 2, 1, 1), (128, 128, 1, 1)], (2,))) == {}  # ratio 1
    near = key([(4, 4, 1, 1), (64, 64, 1, 1)], (3,))  # between 1 and 1.5: not timed
    near_ratio = (
        dense_macs(near.shapes, near.in_shape, (1, 1), (0, 0, 0, 0), (1, 1))
        / near.plan("nhwc").macs
    )
    assert 1.2 < near_ratio < 1.5
    assert _conv_choice.candidates(near) == {}
    timed: list[tuple[str, ...]] = []
    monkeypatch.setattr(_auto, "_time", _fake_timer("nchw", timed))
    kern = _kern([(2, 2, 1, 1), (128, 128, 1, 1)])
    x = torch.randn(2, 256, 6, 6)
    with torch.no_grad():
        y = conv2d(x, kern)
    assert timed and timed[0][:3] == ("dense", "nhwc", "nchw")
    assert list(_auto.cached_choices().values()) == [Choice("factorized", "nchw", (1, 1))]
    assert rel_error(y, F.conv2d(x, kern.to_tensor())) <= EXACT32
