"""The conv benchmarks' scripts run end to end in their quick mode (issue #16: a changed cache
type once broke ``conv_projection.py`` and no test ran it), and their tables say what the
results hold."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """The benchmarks set torch's thread count (2, as recorded); give the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"benchmarks/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_call_overhead_benchmark_runs_and_records_every_variant(tmp_path: Path) -> None:
    bench = _load("conv_call_overhead")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "conv_call_overhead.json").read_text())
    names = [r["variant"] for r in result["rows"]]
    assert names == [
        "dense",
        "floor",
        "busy 40 µs",
        "busy 150 µs",
        "checks",
        "lookup",
        "auto",
        "nn.Conv2d",
        "SeKronConv2d",
    ]
    for r in result["rows"]:
        assert r["ms"] > 0 and r["base_vs_this"] > 0
        assert (r["warm_us"] is None) == r["variant"].startswith("busy")
    assert next(r for r in result["rows"] if r["variant"] == "dense")["base_vs_this"] == 1.0
    forward = [r["variant"] for r in result["forward_rows"]]
    assert forward == ["dense", "reused", "nn.Conv2d", "SeKronConv2d"]
    assert all(r["ms"] > 0 and r["warm_us"] > 0 for r in result["forward_rows"])
    text = (tmp_path / "conv_call_overhead.md").read_text()
    assert all(f"| {n} |" in text for n in names) and 'The "forward" regime' in text


def _default_backend() -> str:
    """TensorLy's process-wide default backend: what a new thread sees."""
    import tensorly as tl

    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(tl.get_backend()))
    thread.start()
    thread.join()
    return seen[0]


def test_conv_projection_quick_run(tmp_path: Path) -> None:
    """One small layer, every structure, inference and the two autograd regimes; TensorLy's
    backend, this thread's and the process-wide default, is the same after (importing
    tltorch set it to pytorch for good: the rest of the suite's TensorLy tests then failed)."""
    import tensorly as tl

    before = tl.get_backend(), _default_backend()
    bench = _load("conv_projection")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tl.get_backend(), _default_backend()) == before
    saved = json.loads((tmp_path / "conv_projection.json").read_text())
    assert saved["meta"]["max_reps"] == [0]
    rows = saved["rows"]
    assert rows and all(r["layer"] == "conv3x3 64@8" for r in rows)
    assert all({"forward", "training"} <= set(r["regimes"]) for r in rows)
    assert "up to 0:" in (tmp_path / "conv_projection.md").read_text()


@pytest.mark.parametrize(
    "caps, text",
    [([20], "20"), ([20, 60], "20 / 60 (runs differ)"), ([60, 60], "60"), (None, "20")],
)
def test_repetition_caps_of_resumed_runs(caps: list[int] | None, text: str) -> None:
    bench = _load("conv_projection")
    assert bench._caps({} if caps is None else {"max_reps": caps}) == text


def test_importing_tltorch_leaves_tensorly_backends_alone(tmp_path: Path, monkeypatch) -> None:
    """tltorch's import sets TensorLy's backend to pytorch for the process and the thread; the
    benchmark puts both back, also when the thread's backend differs from the process default
    (a stub tltorch that does what the real one's import does: CI does not install it)."""
    import tensorly as tl

    from sekron._backend import _thread_backend

    (tmp_path / "tltorch.py").write_text('import tensorly\ntensorly.set_backend("pytorch")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    for thread_backend in (None, "pytorch"):  # (pytorch: jax may not be installed)
        monkeypatch.delitem(sys.modules, "tltorch", raising=False)
        with contextlib.ExitStack() as stack:
            if thread_backend is not None:
                stack.enter_context(_thread_backend(thread_backend))
            before = tl.get_backend(), _default_backend()
            bench = _load("conv_projection")
            assert bench.tltorch is not None and bench.tltorch.__file__.startswith(str(tmp_path))
            assert (tl.get_backend(), _default_backend()) == before
    assert (tl.get_backend(), _default_backend()) == ("numpy", "numpy")
