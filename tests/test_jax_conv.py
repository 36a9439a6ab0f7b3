"""sekron.jax.conv2d / conv1d: every method against the dense JAX conv on the rebuilt kernel,
under jax.jit and jax.grad, with the torch path's error messages."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sekron import SeKronTensor, random_sekron  # noqa: E402
from sekron._conv_plan import normalize_padding  # noqa: E402
from sekron.jax import conv1d, conv2d  # noqa: E402
from sekron.jax._execute import dense_conv  # noqa: E402
from sekron.testing import conv_cases, rel_error, tolerance  # noqa: E402

METHODS = ("factorized", "reconstructed", "auto")
# float32 sums of up to C * Kh * Kw = 729 products in another order (a wrong plan: O(1))
TOL = tolerance("float32")


def _dense(
    x: jax.Array,
    w: jax.Array,
    bias: object,
    stride: object,
    padding: object,
    dilation: object,
    n_spatial: int = 2,
) -> jax.Array:
    """The oracle: one lax conv on the rebuilt kernel (a 1-D conv with a unit height)."""
    if n_spatial == 1:
        x, w = x[..., None, :], w[..., None, :]
        stride, dilation = (1, *stride), (1, *dilation)
        if not isinstance(padding, str):
            padding = (0, *((padding,) if isinstance(padding, int) else padding))
    pad4 = normalize_padding(padding, tuple(w.shape[2:]), tuple(dilation))
    batched = x if x.ndim == 4 else x[None]
    out = dense_conv(batched, w, tuple(stride), pad4, tuple(dilation), 1)
    out = out if x.ndim == 4 else out[0]
    out = out if bias is None else out + bias.reshape(-1, 1, 1)
    return out[..., 0, :] if n_spatial == 1 else out


@st.composite
def conv_problems(draw: st.DrawFn, n_spatial: int = 2) -> dict:
    """A random jax SeKron kernel (S = 2..4, either form, float32) and conv arguments."""
    case = draw(conv_cases(n_spatial=n_spatial))
    kern = random_sekron(
        case.shapes,
        case.ranks,
        form=case.form,
        backend="jax",
        dtype="float32",
        random_state=case.seed,
    )
    rng = np.random.default_rng(case.seed)
    bias = jnp.asarray(rng.standard_normal(kern.shape[0]), dtype=jnp.float32)
    return {
        "x": jnp.asarray(rng.standard_normal(case.in_shape), dtype=jnp.float32),
        "st": kern,
        "bias": bias if draw(st.booleans()) else None,
        "stride": case.stride,
        "padding": case.padding,
        "dilation": case.dilation,
    }


@settings(max_examples=15, deadline=None)
@given(conv_problems(2), st.sampled_from(METHODS))
def test_conv2d_equals_dense_conv(p: dict, method: str) -> None:
    want = _dense(p["x"], p["st"].to_tensor(), p["bias"], p["stride"], p["padding"], p["dilation"])
    # measure=False: auto's cost model (real measuring: the jit and grad test; no compile of
    # every candidate for each drawn shape)
    got = conv2d(
        p["x"],
        p["st"],
        p["bias"],
        p["stride"],
        p["padding"],
        p["dilation"],
        method=method,
        measure=False,
    )
    assert got.shape == want.shape and got.dtype == p["x"].dtype
    assert rel_error(np.asarray(got), np.asarray(want)) <= TOL


@settings(max_examples=8, deadline=None)
@given(conv_problems(1), st.sampled_from(METHODS))
def test_conv1d_equals_dense_conv(p: dict, method: str) -> None:
    args = (p["stride"], p["padding"], p["dilation"])
    want = _dense(p["x"], p["st"].to_tensor(), p["bias"], *args, n_spatial=1)
    got = conv1d(p["x"], p["st"], p["bias"], *args, method=method, measure=False)
    assert got.shape == want.shape
    assert rel_error(np.asarray(got), np.asarray(want)) <= TOL


@pytest.mark.parametrize("form", ["nested", "chain"])
@pytest.mark.parametrize("method", METHODS)
def test_jit_and_grad_equal_the_dense_conv(form: str, method: str) -> None:
    """Under jax.jit the result is the eager one; jax.grad with respect to the input and every
    factor equals the gradient through the dense conv on the rebuilt kernel."""
    kern = random_sekron(
        [(2, 2, 3, 1), (2, 2, 1, 3), (4, 2, 1, 1)],
        (2, 2),
        form=form,
        backend="jax",
        dtype="float32",
        random_state=0,
    )
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 7, 6)), dtype=jnp.float32)
    g = jnp.asarray(np.random.default_rng(2).standard_normal((2, 16, 4, 2)), dtype=jnp.float32)

    def loss(x: jax.Array, factors: list, dense: bool) -> jax.Array:
        k = SeKronTensor(factors, form)
        if dense:
            y = _dense(x, k.to_tensor(), None, (2, 2), (1, 0), (1, 1))
        else:
            y = conv2d(x, k, stride=2, padding=(1, 0), method=method)
        return jnp.sum(y * g)

    factors = list(kern.factors)
    eager = loss(x, factors, False)
    jitted = jax.jit(loss, static_argnums=2)(x, factors, False)
    assert rel_error(np.asarray(jitted), np.asarray(eager)) <= TOL
    got = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, factors, False)
    want = jax.grad(loss, argnums=(0, 1))(x, factors, True)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert rel_error(np.asarray(a), np.asarray(b)) <= TOL


def _kernel() -> SeKronTensor:
    return random_sekron(
        [(2, 2, 3, 1), (2, 2, 1, 3)], 2, backend="jax", dtype="float32", random_state=0
    )


BAD_ARGS = [
    {"x": np.ones((1, 4, 5, 5))},
    {"x": "ones(1, 3, 5, 5)"},
    {"x": "ones(4, 5)"},
    {"method": "fast"},
    {"stride": 0},
    {"stride": (1, 2, 3)},
    {"padding": "full"},
    {"padding": "same", "stride": 2},
    {"dilation": 1.5},
    {"groups": 0},
    {"method": "factorized", "groups": 2},
    {"x": "ones(1, 4, 2, 2)"},
    {"bias": "ones(3)"},
    {"measure": "no"},
]


def _materialize(kwargs: dict, lib: str) -> dict:
    """``"ones(shape)"`` becomes an array of that shape for ``lib`` (float32)."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, str) and v.startswith("ones("):
            shape = eval(v[4:])  # noqa: S307 - a literal tuple of ints from the table above
            shape = shape if isinstance(shape, tuple) else (shape,)
            if lib == "jax":
                v = jnp.ones(shape, jnp.float32)
            else:
                import torch

                v = torch.ones(shape)
        out[k] = v
    return out


@pytest.mark.parametrize("kwargs", BAD_ARGS, ids=[str(sorted(b)) for b in BAD_ARGS])
def test_errors_are_the_torch_paths(kwargs: dict) -> None:
    """Each bad argument raises the error class and message sekron.torch raises (the kind
    names of the arrays aside)."""
    with pytest.raises((TypeError, ValueError)) as got:
        conv2d(
            **(
                {"x": jnp.ones((1, 4, 5, 5), jnp.float32), "st": _kernel()}
                | _materialize(kwargs, "jax")
            )
        )
    torch = pytest.importorskip("torch")
    import sekron.torch

    kern = random_sekron(
        [(2, 2, 3, 1), (2, 2, 1, 3)], 2, backend="pytorch", dtype="float32", random_state=0
    )
    with pytest.raises((TypeError, ValueError)) as want:
        sekron.torch.conv2d(
            **({"x": torch.ones(1, 4, 5, 5), "st": kern} | _materialize(kwargs, "torch"))
        )
    assert got.type is want.type
    normalize = {"jax.Array": "tensor", "torch.Tensor": "tensor"}
    a, b = str(got.value), str(want.value)
    for k, v in normalize.items():
        a, b = a.replace(k, v), b.replace(k, v)
    assert a == b


def test_st_errors() -> None:
    x = jnp.ones((1, 4, 5, 5), jnp.float32)
    with pytest.raises(TypeError, match="st must be a sekron.SeKronTensor"):
        conv2d(x, jnp.ones((4, 4, 3, 3)))
    numpy_st = random_sekron([(2, 2, 3, 1), (2, 2, 1, 3)], 2, random_state=0)
    with pytest.raises(TypeError, match="backend 'jax'"):
        conv2d(x, numpy_st)
    with pytest.raises(ValueError, match=r"conv1d needs st of shape \(F, C, K\)"):
        conv1d(jnp.ones((1, 4, 5), jnp.float32), _kernel())


def test_import_sekron_does_not_import_jax_and_a_missing_jax_is_named() -> None:
    code = (
        "import sys; import sekron, sekron.torch; assert 'jax' not in sys.modules; "
        "sys.modules['jax'] = None\n"
        "try:\n    import sekron.jax\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "sekron.jax needs JAX: pip install 'sekron[jax]'" in out.stdout


@pytest.mark.parametrize("form, layout", [("nested", "nhwc"), ("chain", "nchw")])
def test_every_merged_plan_equals_the_dense_conv(form: str, layout: str) -> None:
    """The plan space on JAX: every grouping of merged factors, both layouts."""
    from sekron._conv_merge import groupings, merge_factors, merged_signature
    from sekron._conv_plan import ConvKey
    from sekron.jax._execute import run_plan

    kern = random_sekron(
        [(2, 2, 3, 1), (2, 1, 1, 3), (2, 3, 1, 1), (1, 2, 1, 1)],
        (2, 3, 2),
        form=form,
        backend="jax",
        dtype="float32",
        random_state=0,
    )
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 12, 9, 8)), dtype=jnp.float32)
    want = _dense(x, kern.to_tensor(), None, (2, 1), (1, 2), (1, 2))
    key = ConvKey(kern.shapes, kern.ranks, form, (2, 12, 9, 8), (2, 1), (1, 1, 2, 2), (1, 2))
    for g in groupings(4):
        shapes, ranks = merged_signature(kern.shapes, kern.ranks, form, g)
        factors = merge_factors(kern.factors, kern.shapes, kern.ranks, form, g, jnp.einsum)
        plan = key._replace(shapes=shapes, ranks=ranks).plan(layout)
        got = run_plan(x, factors, plan, layout)
        assert rel_error(np.asarray(got), np.asarray(want)) <= TOL, g


@pytest.fixture
def jax_auto(monkeypatch: pytest.MonkeyPatch) -> object:
    """sekron.jax's auto with an empty cache and a fake timer that logs the candidates and
    reports ``jax_auto.fastest`` ten times faster than the rest (no timing in tests)."""
    from sekron.jax import _auto

    class Fake:
        fastest = "dense"
        log: list = []

    def fake_time(fns: dict) -> dict:
        Fake.log.append(tuple(fns))
        return {n: [0.1 if n == Fake.fastest else 1.0] * 7 for n in fns}

    monkeypatch.setattr(_auto, "_time", fake_time)
    _auto.clear_cache()
    yield Fake
    _auto.clear_cache()


@pytest.mark.parametrize("fastest", ["dense", "nhwc", "nhwc:1+2"])
def test_auto_measures_once_per_shape_even_under_jit(jax_auto: object, fastest: str) -> None:
    """The first call (here inside ``jax.jit``'s trace) times the candidates, later calls use
    the cache; whatever is chosen equals the dense conv, gradients included."""
    from sekron._conv_choice import DENSE, Choice
    from sekron.jax import _auto

    jax_auto.fastest = fastest  # type: ignore[attr-defined]
    kern = random_sekron(
        [(4, 4, 3, 1), (4, 4, 1, 3), (4, 4, 1, 1)],
        (2, 2),
        backend="jax",
        dtype="float32",
        random_state=0,
    )
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 64, 7, 7)), dtype=jnp.float32)

    def loss(x: jax.Array, factors: list, dense: bool) -> jax.Array:
        k = SeKronTensor(factors)
        y = _dense(x, k.to_tensor(), None, (1, 1), 1, (1, 1)) if dense else conv2d(x, k, padding=1)
        return jnp.sum(y * y)

    fs = list(kern.factors)
    got = jax.jit(loss, static_argnums=2)(x, fs, False)
    eager = loss(x, fs, False)  # from the cache
    log = jax_auto.log  # type: ignore[attr-defined]
    assert log[0][:4] == ("dense", "nhwc", "nhwc:1+2", "nhwc:2+1")[: len(log[0][:4])]
    assert len(log) == (1 if fastest == "dense" else 2)  # a plan is confirmed once
    want = {"dense": DENSE, "nhwc": Choice("factorized", "nhwc", (1, 1, 1))}.get(
        fastest, Choice("merged", "nhwc", (1, 2))
    )
    assert list(_auto.cached_choices().values()) == [want]
    ref = loss(x, fs, True)
    assert rel_error(np.asarray(got), np.asarray(ref)) <= TOL
    assert rel_error(np.asarray(eager), np.asarray(ref)) <= TOL
    g = jax.grad(loss, argnums=1)(x, fs, False)
    h = jax.grad(loss, argnums=1)(x, fs, True)
    for a, b in zip(g, h, strict=True):
        assert rel_error(np.asarray(a), np.asarray(b)) <= TOL


def test_auto_measure_false_and_the_env_var_use_the_cost_model(
    jax_auto: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sekron.jax import _auto

    kern = random_sekron(
        [(8, 8, 3, 3), (8, 8, 1, 1)], 1, backend="jax", dtype="float32", random_state=0
    )
    x = jnp.ones((1, 64, 9, 9), jnp.float32)
    conv2d(x, kern, padding=1, measure=False)
    monkeypatch.setenv("SEKRON_AUTO_MEASURE", "0")
    conv2d(x, kern, padding=1)
    assert _auto.cached_choices() == {} and jax_auto.log == []  # type: ignore[attr-defined]


def test_auto_cache_stays_bounded(jax_auto: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """New input sizes keep at most ``maxsize`` choices, the newest (unbounded before)."""
    from sekron.jax import _auto

    monkeypatch.setattr(_auto._CACHE, "maxsize", 2)
    kern = random_sekron(
        [(8, 8, 3, 3), (8, 8, 1, 1)], 1, backend="jax", dtype="float32", random_state=0
    )
    for s in (5, 6, 7):
        conv2d(jnp.ones((1, 64, s, s), jnp.float32), kern, padding=1)
    assert [k[0].in_shape[2] for k in _auto.cached_choices()] == [6, 7]


@pytest.mark.parametrize("shifted", [True, False], ids=["shifted", "einsum and lax.conv"])
@pytest.mark.parametrize(
    "form, layout", [("nested", "nhwc"), ("nested", "nchw"), ("chain", "nchw")]
)
def test_stage_kernels_equal_the_dense_conv(
    monkeypatch: pytest.MonkeyPatch, shifted: bool, form: str, layout: str
) -> None:
    """Every stage as a sum of shifted products (``SHIFTED_MAX_IN`` huge), or the pointwise
    stages as ``einsum`` products and the others as ``lax.conv_general_dilated`` (0): both
    equal the dense conv with stride, dilation, asymmetric padding and carried ranks
    (groups), and so do their ``jax.grad``s."""
    from sekron._conv_plan import ConvKey
    from sekron.jax import _execute

    monkeypatch.setattr(_execute, "SHIFTED_MAX_IN", 10**6 if shifted else 0)
    monkeypatch.setattr(_execute, "SHIFTED_MAX_TERMS", 10**6)
    calls: list[int] = []
    dots: list[str] = []
    real, real_dot = _execute._shifted, _execute._pointwise
    monkeypatch.setattr(
        _execute, "_shifted", lambda z, w, s, lay: calls.append(s.groups) or real(z, w, s, lay)
    )
    monkeypatch.setattr(
        _execute, "_pointwise", lambda z, w, s, lay: dots.append(s.kind) or real_dot(z, w, s, lay)
    )
    kern = random_sekron(
        [(2, 2, 3, 1), (2, 3, 1, 3), (3, 2, 1, 1)],
        (2, 3),
        form=form,
        backend="jax",
        dtype="float32",
        random_state=3,
    )
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 12, 10, 9)), dtype=jnp.float32)
    stride, dilation, pad4 = (2, 1), (1, 2), (1, 0, 2, 1)
    key = ConvKey(kern.shapes, kern.ranks, form, (2, 12, 10, 9), stride, pad4, dilation)
    plan = key.plan(layout)

    def loss(x: jax.Array, factors: list, dense: bool) -> jax.Array:
        if dense:
            w = SeKronTensor(factors, form).to_tensor()
            y = _execute.dense_conv(x, w, stride, pad4, dilation, 1)
        else:
            y = _execute.run_plan(x, factors, plan, layout)
        return jnp.sum(y * jnp.cos(y))

    factors = list(kern.factors)
    got = _execute.run_plan(x, factors, plan, layout)
    want = _execute.dense_conv(x, kern.to_tensor(), stride, pad4, dilation, 1)
    assert rel_error(np.asarray(got), np.asarray(want)) <= TOL
    assert (len(calls) == len(plan.stages)) if shifted else not calls
    n_pointwise = sum(s.kind == "mm" for s in plan.stages)
    assert n_pointwise > 0 and len(dots) == (0 if shifted else n_pointwise)
    if shifted and form == "nested":  # a stage with carried ranks (groups) ran shifted
        assert max(calls) > 1
    g_got = jax.grad(loss, argnums=(0, 1))(x, factors, False)
    g_want = jax.grad(loss, argnums=(0, 1))(x, factors, True)
    for a, b in zip(
        jax.tree_util.tree_leaves(g_got), jax.tree_util.tree_leaves(g_want), strict=True
    ):
        assert rel_error(np.asarray(a), np.asarray(b)) <= 10 * TOL


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_shifted_stages_accumulate_half_precision_in_float32(dtype: str) -> None:
    """A 3x3 stage over 4 channels (36 terms) in 16-bit floats: the plan's error against the
    float32 plan stays within twice that of one ``lax.conv`` on the rounded kernel (each of the
    plan's three stages rounds its output once). Accumulating the 36 terms in the 16-bit dtype
    instead gave about 3x."""
    from sekron._conv_plan import ConvKey
    from sekron.jax import _execute

    kern = random_sekron(
        [(8, 1, 1, 1), (1, 4, 3, 3), (1, 2, 1, 1)],
        (16, 1),
        backend="jax",
        dtype="float32",
        random_state=0,
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 12, 12)), dtype=jnp.float32)
    key = ConvKey(kern.shapes, kern.ranks, "nested", (2, 8, 12, 12), (1, 1), (1, 1, 1, 1), (1, 1))
    plan = key.plan("nhwc")
    assert any(s.w_shape[1:] == (4, 3, 3) for s in plan.stages)
    want = np.asarray(_execute.run_plan(x, list(kern.factors), plan, "nhwc"))
    half = [f.astype(dtype) for f in kern.factors]
    got = _execute.run_plan(x.astype(dtype), half, plan, "nhwc")
    assert got.dtype == jnp.dtype(dtype)
    w = kern.to_tensor().astype(dtype)
    ref = _execute.dense_conv(x.astype(dtype), w, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    ref_err = rel_error(np.asarray(ref.astype(jnp.float32)), want)
    assert rel_error(np.asarray(got.astype(jnp.float32)), want) <= 2 * ref_err


def test_wide_windows_do_not_run_shifted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage whose window times its channels per group exceeds ``SHIFTED_MAX_TERMS`` runs as
    ``lax.conv`` (a wide window lost as a shifted sum), and still equals the dense conv."""
    from sekron._conv_plan import ConvKey
    from sekron.jax import _execute

    windows: list[tuple[int, int]] = []
    real = _execute._shifted
    monkeypatch.setattr(
        _execute,
        "_shifted",
        lambda z, w, s, lay: windows.append(s.w_shape[2:]) or real(z, w, s, lay),
    )
    kern = random_sekron([(4, 4, 7, 7), (4, 4, 1, 1)], 1, backend="jax", dtype="float32")
    x = jnp.asarray(np.random.default_rng(7).standard_normal((1, 16, 9, 9)), dtype=jnp.float32)
    key = ConvKey(kern.shapes, kern.ranks, "nested", (1, 16, 9, 9), (1, 1), (3, 3, 3, 3), (1, 1))
    plan = key.plan("nhwc")
    got = _execute.run_plan(x, list(kern.factors), plan, "nhwc")
    want = _execute.dense_conv(x, kern.to_tensor(), (1, 1), (3, 3, 3, 3), (1, 1), 1)
    assert rel_error(np.asarray(got), np.asarray(want)) <= TOL
    assert (7, 7) in [s.w_shape[2:] for s in plan.stages] and (7, 7) not in windows
