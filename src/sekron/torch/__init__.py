"""sekron.torch: convolution with SeKron kernels without building them (conv docs).

Needs PyTorch (``pip install "sekron[torch]"``).
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "sekron.torch needs PyTorch: pip install 'sekron[torch]' (or torch>=2.1)."
    ) from exc

from ._auto import clear_cache
from ._compress import compress
from ._counting import count_macs, count_params, sekron_conv_macs
from ._functional import conv1d, conv2d
from ._layers import SeKronConv2d
from ._report import CompressionReport, LayerReport

__all__ = [
    "CompressionReport",
    "LayerReport",
    "SeKronConv2d",
    "clear_cache",
    "compress",
    "conv1d",
    "conv2d",
    "count_macs",
    "count_params",
    "sekron_conv_macs",
]
