"""Which CPU a benchmark ran on, for its results file.

The project's VMs are not all alike: on one quiet 2-core VM the dense (128, 128, 3, 3) conv of
``conv_projection.py`` at 128@28, batch 32, took 15 ms; on another, an AMD EPYC with AVX2 and
no AVX-512, 75-99 ms, also quiet. A ratio measured on one CPU says little about another, so
every results file names the CPU model and the vector instructions torch dispatches to.
"""

from __future__ import annotations

import os
import platform
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
    return platform.processor() or "unknown CPU"


def describe(cpuinfo: str | None = None) -> str:
    """``"x86_64, AMD EPYC, torch CPU capability AVX2, 2 cores"``: architecture, CPU model,
    the instruction set torch's CPU kernels use (when torch is installed) and the core count."""
    parts = [platform.machine() or "unknown architecture", cpu_model(cpuinfo)]
    try:
        import torch

        parts.append(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    except ImportError:
        pass
    parts.append(f"{os.cpu_count()} cores")
    return ", ".join(parts)
