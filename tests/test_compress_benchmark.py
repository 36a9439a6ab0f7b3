"""The helpers of ``benchmarks/compress.py`` (issue #15): the best-GKPD baseline is the best
two-factor split (oracle: every split decomposed), the policies it runs, and the acceptance
checks and tables it writes. The benchmark itself takes minutes; it is not run here."""

from __future__ import annotations

import importlib.util
import sys
from math import prod
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")

from torch import nn  # noqa: E402

import sekron  # noqa: E402
from sekron.search import enumerate_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_compress", ROOT / "benchmarks/compress.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1)
    ).eval()


def test_best_gkpd_is_the_best_two_factor_split() -> None:
    model = _model()
    shapes = bench.best_gkpd_shapes(model, ["0", "2"], 4.0)
    assert set(shapes) == {"2"}  # "0" has 144 weights < min_params
    W = model[2].weight.detach().double().numpy()
    budget = W.size // 4
    errors = {
        c: sekron.decompose(W, c, rank=None, max_params=budget).rel_error
        for c in enumerate_configs(W.shape, 2)
        if sum(prod(s) for s in c) <= budget
    }
    got = sekron.decompose(W, shapes["2"], rank=None, max_params=budget).rel_error
    assert len(shapes["2"]) == 2
    assert got <= min(errors.values()) + 1e-12


@pytest.mark.parametrize("policy", ["gkpd", "gkpd-best", "mac-aware"])
def test_policies_keep_the_budget_and_the_skip_list(policy: str) -> None:
    model = _model()
    small, report = bench.run_policy(policy, model, 4.0, ("0",))
    rows = {r.name: r for r in report}
    assert rows["0"].skipped == "matches skip"
    assert rows["2"].replaced and rows["2"].params_after - 16 <= model[2].weight.numel() // 4
    if policy != "mac-aware":
        assert len(rows["2"].shapes) == 2
    else:  # at most a quarter of the dense layer's MACs per output position
        assert rows["2"].macs_after <= rows["2"].macs_before / 4
    x = torch.randn(2, 2, 8, 8)
    assert small(x).shape == model(x).shape


def test_unknown_policy_and_model_are_named() -> None:
    with pytest.raises(ValueError, match="unknown policy 'tt'"):
        bench.run_policy("tt", _model(), 4.0, ())
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        bench.make_task("vgg")


def _row(policy: str, ratio: float, acc: float, *, macs: int = 50, seconds: float = 1.0) -> dict:
    return {
        "policy": policy,
        "ratio": ratio,
        "accuracy": acc,
        "layer_params": 100,
        "layer_ratio": 8.0,
        "macs": macs,
        "compress_s": seconds,
        "any_layer_above_dense_macs": macs > 100,
        "cut_short": [],
        "latency": {"ms": 1.0, "speedup": 1.5},
    }


def _data(default_acc: float, wide_seconds: float) -> dict:
    dense = {"accuracy": 1.0, "params": 1000, "layer_params": 800, "macs": 100}
    model = {"metric": "accuracy", "notes": "n", "layers": ["a"], "dense": dense}
    return {
        "meta": {
            "elapsed_s": 60.0,
            "cpus": 2,
            "torch": "x",
            "threads": 2,
            "load_avg_start": (1.0,),
            "load_avg_end": (2.0,),
            "reps": 3,
        },
        "models": {
            "digits": {
                **model,
                "rows": [
                    _row("default", 8.0, default_acc),
                    _row("gkpd-best", 8.0, 0.9),
                    _row("global", 8.0, 0.95),
                ],
            },
            "wide": {**model, "rows": [_row("default", 4.0, 1.0, seconds=wide_seconds)]},
        },
    }


def test_acceptance_compares_default_with_gkpd_at_8x_and_times_the_wide_model() -> None:
    ok = bench.acceptance(_data(0.92, 54.0))
    assert ok["digits"]["at_least_gkpd-best"] and ok["digits"]["never_more_macs"]
    assert ok["digits"]["macs_ratio"] == 0.5
    assert ok["wide_4x_under_2_minutes"] and ok["wide_4x_seconds"] == 54.0
    bad = bench.acceptance(_data(0.85, 130.0))
    assert not bad["digits"]["at_least_gkpd-best"]
    assert not bad["wide_4x_under_2_minutes"]


def test_markdown_has_every_row_and_the_global_difference() -> None:
    data = _data(0.92, 54.0)
    data["acceptance"] = bench.acceptance(data)
    text = bench.markdown(data)
    assert "| 8x | gkpd-best | 0.9000 |" in text
    assert "| digits | 8x | 0.9200 | 0.9500 | +0.03 |" in text
    assert '"wide_4x_under_2_minutes": true' in text


def test_latencies_time_every_model_against_dense() -> None:
    model = _model()
    small, _ = bench.run_policy("gkpd", model, 4.0, ("0",))
    lat = bench.latencies(model, {"gkpd": small}, torch.randn(1, 2, 8, 8), 3)
    assert set(lat) == {"gkpd", "dense"}
    assert lat["gkpd"]["ms"] > 0 and np.isfinite(lat["gkpd"]["speedup"])
