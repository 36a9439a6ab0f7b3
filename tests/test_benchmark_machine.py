"""``benchmarks/machine.py``: every results file names the CPU it ran on (the project's VMs
differ: the same dense conv took 15 ms on one quiet VM and 75-99 ms on another)."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

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
    assert got == (platform.processor() or "unknown CPU")


def test_describe_names_model_cores_and_torch_capability() -> None:
    text = machine.describe(CPUINFO)
    assert "AMD EPYC 7B13 64-Core Processor" in text
    assert text.endswith(f"{os.cpu_count()} cores")
    try:
        import torch
    except ImportError:
        return
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in text
