"""Train a CNN with a 512x512x3x3 convolution on scikit-learn's digits, for the search benchmark.

``benchmarks/search.py`` times the structure search on a trained 512x512x3x3 weight, the size of
ResNet-18/34's widest 3x3 convolutions. No such weight can be downloaded here, so this script
trains one on real data that ships with scikit-learn (the 8x8 digits, upsampled to 16x16 and
randomly shifted by up to 2 pixels). It is deterministic on CPU and takes about 105 s on one
thread (40 epochs; measured on the 2-core development machine).

Run from the repository root::

    python scripts/train_wide_digits_cnn.py

Writes ``benchmarks/data/wide_digits_cnn.npz`` (5.5 MB): the whole state dict of
:class:`WideDigitsCNN` (``benchmarks/experiment/wide.py``), every floating-point entry as float16,
``np.savez_compressed``; and ``test_accuracy``, the accuracy of the shipped (float16-rounded)
model on the 360 held-out images (1.0). ``benchmarks/compress.py`` compresses the whole model;
``benchmarks/search.py`` and ``compare_models.py`` use its 512x512x3x3 weight
(``features.11.weight``, :func:`experiment.wide.conv512_weight`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from experiment.wide import WEIGHTS_PATH as OUT  # noqa: E402
from experiment.wide import WideDigitsCNN, load_pretrained  # noqa: E402

# the digits split, seeding and training loop of the small example CNN (same seed, batch size)
from train_digits_cnn import load_splits, setup, train  # noqa: E402

from sekron.data.digits_cnn import accuracy  # noqa: E402

EPOCHS = 40
THREADS = 1
LR = 2e-3
WEIGHT_DECAY = 5e-2


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image translated by a random integer offset in [-max_shift, max_shift]^2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def main() -> None:
    start = setup()
    torch.set_num_threads(THREADS)
    splits = load_splits()
    model = WideDigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    train(model, opt, splits, EPOCHS, start, augment=shift)

    # floating-point entries as float16 (half the bytes, then npz compression); the accuracy
    # recorded is the shipped (rounded) model's
    state = {
        k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy()
        for k, v in model.state_dict().items()
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **state, test_accuracy=np.float64(0.0))
    acc = accuracy(load_pretrained(OUT), splits[2], splits[3])
    np.savez_compressed(OUT, **state, test_accuracy=np.float64(acc))
    print(f"shipped (float16) test accuracy: {acc:.4f} ({len(splits[3])} images)")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
    print(f"training time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
