"""The training-side regimes and the JAX backend of ``conv_projection.py`` (imported by it).

For one layer and one SeKron kernel it times, interleaved, with paired ratios:

- ``forward``: a forward with autograd recording and no backward (an eval-mode layer without
  ``no_grad``): ``nn.Conv2d`` against ``SeKronConv2d`` with ``method="factorized"`` and
  ``"auto"`` (its "forward" regime);
- ``training``: one fine-tuning step of the layer alone (forward, a loss, backward to the
  input and the parameters, an SGD step): ``nn.Conv2d`` against the same two SeKron layers
  (the "training" regime of ``auto``);
- ``jax``: ``jax.jit``-compiled inference, the dense ``lax`` conv on the full kernel against
  ``sekron.jax.conv2d`` factorized and auto (when jax is installed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from sekron import SeKronTensor
from sekron.torch import SeKronConv2d


def _paired(times: dict[str, list[float]], name: str) -> float:
    """Median over repetitions of dense time / ``name`` time (run back to back)."""
    return float(np.median([d / t for d, t in zip(times["dense"], times[name], strict=True)]))


def _round_robin(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Milliseconds per call, every repetition running each once in a rotating order."""
    for fn in fns.values():
        fn()
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        i = rep % len(names)
        for n in names[i:] + names[:i]:
            t0 = time.perf_counter()
            fns[n]()
            out[n].append(1e3 * (time.perf_counter() - t0))
    return out


def _layers(st: SeKronTensor, w_dense: torch.Tensor, stride: int, pad: int) -> dict[str, nn.Module]:
    ch_out, ch_in, k, _ = w_dense.shape
    dense = nn.Conv2d(ch_in, ch_out, k, stride=stride, padding=pad, bias=False)
    with torch.no_grad():
        dense.weight.copy_(w_dense)
    return {
        "dense": dense,
        "factorized": SeKronConv2d(st, stride=stride, padding=pad, method="factorized"),
        "auto": SeKronConv2d(st, stride=stride, padding=pad, method="auto"),
    }


def _step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, opt: Any) -> Callable[[], None]:
    def step() -> None:
        y = layer(x)
        (y * g).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def torch_regimes(
    st: SeKronTensor, x: torch.Tensor, stride: int, pad: int, reps: int
) -> dict[str, Any]:
    """Forward-with-autograd and fine-tuning-step times (ms medians) and paired ratios."""
    with torch.enable_grad():
        return _torch_regimes(st, x, stride, pad, reps)


def _torch_regimes(
    st: SeKronTensor, x: torch.Tensor, stride: int, pad: int, reps: int
) -> dict[str, Any]:
    w_dense = torch.randn(st.shape) / (st.shape[1] * st.shape[2])
    out: dict[str, Any] = {}
    layers = _layers(st, w_dense, stride, pad)
    for m in layers.values():
        m.eval()
    layers["auto"](x)  # the first call measures the "forward" regime
    times = _round_robin({n: (lambda m=m: m(x)) for n, m in layers.items()}, reps)
    out["forward"] = _summary(times)
    layers = _layers(st, w_dense, stride, pad)
    x = x.detach().requires_grad_()  # a layer inside a model: the backward reaches its input
    g = torch.randn_like(layers["dense"](x))
    steps = {}
    for n, m in layers.items():
        m.train()
        steps[n] = _step(m, x, g, torch.optim.SGD(m.parameters(), lr=1e-6))
    steps["auto"]()  # the first call measures the "training" regime
    out["training"] = _summary(_round_robin(steps, reps))
    out["choices"] = {
        k[1]: choice_label(v)
        for k, v in torch_auto_choices().items()
        if k[0][:4] == (st.shapes, st.ranks, st.form, tuple(x.shape)) and k[1] != "inference"
    }
    return out


def torch_auto_choices() -> dict:
    from sekron.torch import _auto

    return _auto.cached_choices()


def choice_label(choice: Any) -> str:
    """``method/layout`` of an auto choice, with the grouping of a merged plan."""
    label = f"{choice.method}/{choice.layout}"
    return label + (f" {'+'.join(map(str, choice.grouping))}" if choice.method == "merged" else "")


def _summary(times: dict[str, list[float]]) -> dict[str, float]:
    ms = {n: float(np.median(v)) for n, v in times.items()}
    return ms | {
        "auto_vs_dense": _paired(times, "auto"),
        "fac_vs_dense": _paired(times, "factorized"),
    }


def jax_times(
    shapes: Any, ranks: Any, form: str, x_np: np.ndarray, stride: int, pad: int, reps: int
) -> dict[str, float] | None:
    """Inference under ``jax.jit``: the dense lax conv against sekron.jax factorized and auto
    (ms medians and paired ratios), or None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    from sekron import random_sekron
    from sekron.jax import conv2d

    st = random_sekron(shapes, ranks, form=form, backend="jax", dtype="float32", random_state=0)
    x = jnp.asarray(x_np)
    w = jnp.asarray(np.random.default_rng(0).standard_normal(st.shape), dtype=jnp.float32)
    padding = [(pad, pad), (pad, pad)]
    dense = jax.jit(lambda x, w: jax.lax.conv(x, w, (stride, stride), padding))

    def sk(method: str) -> Callable:
        return jax.jit(
            lambda x, fs: conv2d(
                x, SeKronTensor(fs, form), stride=stride, padding=pad, method=method
            )
        )

    fac, auto = sk("factorized"), sk("auto")
    fs = list(st.factors)
    fns = {
        "dense": lambda: dense(x, w).block_until_ready(),
        "factorized": lambda: fac(x, fs).block_until_ready(),
        "auto": lambda: auto(x, fs).block_until_ready(),
    }
    return _summary(_round_robin(fns, reps))


def _fmt(d: dict | None, key: str) -> str:
    return "-" if d is None else f"{d[key]:.2f}"


def regimes_markdown(rows: list[dict]) -> list[str]:
    """The three-regime table (and JAX) with its summary, as markdown lines."""
    rows = [r for r in rows if "regimes" in r]
    if not rows:
        return []
    fw = [r["regimes"]["forward"]["auto_vs_dense"] for r in rows]
    tr = [r["regimes"]["training"]["auto_vs_dense"] for r in rows]
    inf = [r["auto_vs_dense"] for r in rows]
    jx = [r for r in rows if "jax" in r]
    jx_fac = [r for r in jx if r["mac_ratio"] >= 4]

    def below(vals: list[float], bound: float) -> str:
        return f"{sum(v < bound for v in vals)} of {len(vals)}"

    lines = [
        "",
        "## Three regimes, a fine-tuning step, JAX (issue #16)",
        "",
        "Ratios are dense time / sekron time, medians of per-repetition ratios of runs made "
        "back to back (> 1: sekron faster). `inference`: the functional calls of the table "
        "above (`no_grad`). `forward`: an eval-mode layer with autograd on and no backward, "
        '`nn.Conv2d` against `SeKronConv2d` (auto\'s "forward" regime). `step`: one '
        "fine-tuning step of the layer alone (forward, loss, backward to the input and the "
        'parameters, SGD step), `nn.Conv2d` against `SeKronConv2d` (auto\'s "training" '
        "regime). `jax`: `jax.jit` inference, `lax.conv` on the full kernel against "
        "`sekron.jax.conv2d` (JAX on CPU; only the layers in `JAX_LAYERS`). `a` auto, "
        "`f` factorized.",
        "",
        f"Summary: auto below 0.95x dense on {below(inf, 0.95)} rows in inference, "
        f"{below(fw, 0.95)} in forward with autograd, {below(tr, 0.95)} in the fine-tuning "
        f"step; the compressed layer's step (auto) slower than the dense layer's (< 1.0) on "
        f"{below(tr, 1.0)} rows. Medians: inference {np.median(inf):.2f}, forward "
        f"{np.median(fw):.2f}, step {np.median(tr):.2f}."
        + (
            f" JAX: factorized >= 0.5 x MAC ratio on "
            f"{sum(r['jax']['fac_vs_dense'] >= 0.5 * r['mac_ratio'] for r in jx_fac)} of "
            f"{len(jx_fac)} rows with MAC ratio >= 4; auto below 0.95x dense on "
            f"{below([r['jax']['auto_vs_dense'] for r in jx], 0.95)} rows."
            if jx
            else ""
        ),
        "",
        "| layer | structure | mac× | inference a / f | forward a / f | step a / f "
        "| auto choice (forward; training) | jax a / f |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = r["regimes"]
        ch = g["choices"]
        jxr = r.get("jax")
        lines.append(
            f"| {r['layer']} | {r['structure']} | {r['mac_ratio']:.1f} "
            f"| {r['auto_vs_dense']:.2f} / {r['factorized_speedup']:.2f} "
            f"| {_fmt(g['forward'], 'auto_vs_dense')} / {_fmt(g['forward'], 'fac_vs_dense')} "
            f"| {_fmt(g['training'], 'auto_vs_dense')} / {_fmt(g['training'], 'fac_vs_dense')} "
            f"| {ch.get('forward', '?')}; {ch.get('training', '?')} "
            f"| {_fmt(jxr, 'auto_vs_dense')} / {_fmt(jxr, 'fac_vs_dense')} |"
        )
    return lines
