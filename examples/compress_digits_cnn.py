"""Compress the pretrained digits CNN with sekron.torch.compress and check its accuracy.

Run with ``python examples/compress_digits_cnn.py``; it takes a few seconds on a CPU.

Every ``nn.Conv2d`` with at least 1024 weights is replaced by a ``SeKronConv2d`` holding a
tensor-train (TT) factorization of its kernel, with at most half the kernel's parameters.
No fine-tuning is done: the accuracy below is that of the factorized weights as they come.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sekron.data.digits_cnn import accuracy, load_pretrained, load_test_set
from sekron.torch import compress


def main(compression: float = 2.0, structure: str = "tt") -> dict[str, Any]:
    model = load_pretrained()
    x, y = load_test_set()

    start = time.perf_counter()
    small, report = compress(
        model,
        structure=structure,
        compression=compression,
        input_shape=(1, 1, 16, 16),  # one image: MACs per forward pass
        progress=False,
    )
    seconds = time.perf_counter() - start
    print(report)
    print(f"compressed in {seconds:.1f} s")

    before = accuracy(model, x, y)
    after = accuracy(small, x, y)
    with torch.no_grad():
        agree = float((small(x).argmax(1) == model(x).argmax(1)).float().mean())
    print(
        f"test accuracy: original {before:.3f}, compressed {after:.3f} "
        f"({len(y)} images; predictions agree on {agree:.1%})"
    )
    return {
        "original_accuracy": before,
        "compressed_accuracy": after,
        "agreement": agree,
        "report": report,
    }


if __name__ == "__main__":
    main()
