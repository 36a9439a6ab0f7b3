"""``benchmarks/machine.py``: every results file names the CPU it ran on (the project's VMs
differ: the same dense conv took 15-16 ms on one quiet VM and 44-75 ms on another)."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_machine", ROOT / "benchmarks/machine.py")
assert _spec is not None and _spec.loader is not None
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu avx2

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""


def test_cpu_model_reads_the_first_model_name() -> None:
    assert machine.cpu_model(CPUINFO) == "AMD EPYC 7B13 64-Core Processor"


def test_cpu_model_falls_back_without_a_model_name() -> None:
    got = machine.cpu_model("processor\t: 0\nmodel name\t:   \n")
    processor = platform.processor()
    assert got == (processor if processor and processor != platform.machine() else "unknown CPU")


def test_describe_names_model_cores_and_torch_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")  # describe() names it once a benchmark imported it
    text = machine.describe(CPUINFO)
    assert "AMD EPYC 7B13 64-Core Processor" in text
    assert text.endswith(f"{os.cpu_count()} cores")
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in text
    monkeypatch.delitem(sys.modules, "torch")  # a numpy-only benchmark: torch is not loaded
    assert "torch" not in machine.describe(CPUINFO)
    assert "torch" not in sys.modules
