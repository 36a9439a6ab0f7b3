"""Which CPU a benchmark ran on, for its results file.

The project's VMs are not all alike: on one quiet 2-core VM the dense (128, 128, 3, 3) conv of
``conv_projection.py`` at 128@28, batch 32, took 15-16 ms; on another, an AMD EPYC with AVX2
and no AVX-512, 44-75 ms in its recorded run (results/conv_projection_amd_epyc_avx2), also
quiet. A ratio measured on one CPU says little about another, so
every results file names the CPU model and the vector instructions torch dispatches to.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name: the first ``model name`` line of ``/proc/cpuinfo`` (Linux), else
    :func:`platform.processor`, else ``"unknown CPU"``. ``cpuinfo`` overrides the file's text."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return value.strip()
    processor = platform.processor()
    return processor if processor and processor != platform.machine() else "unknown CPU"


def describe(cpuinfo: str | None = None) -> str:
    """``"x86_64, AMD EPYC, torch CPU capability AVX2, 2 cores"``: architecture, CPU model,
    the instruction set torch's CPU kernels use (only when the benchmark has imported torch:
    a numpy-only benchmark does not load it for this) and the core count."""
    parts = [platform.machine() or "unknown architecture", cpu_model(cpuinfo)]
    torch = sys.modules.get("torch")
    capability = getattr(getattr(torch, "backends", None), "cpu", None)
    if capability is not None and hasattr(capability, "get_cpu_capability"):
        parts.append(f"torch CPU capability {capability.get_cpu_capability()}")
    parts.append(f"{os.cpu_count()} cores")
    return ", ".join(parts)
