"""Train a CNN with a 512x512x3x3 convolution on scikit-learn's digits, for the search benchmark.

``benchmarks/search.py`` times the structure search on a trained 512x512x3x3 weight, the size of
ResNet-18/34's widest 3x3 convolutions. No such weight can be downloaded here, so this script
trains one on real data that ships with scikit-learn (the 8x8 digits, upsampled to 16x16 and
randomly shifted by up to 2 pixels). It is deterministic on CPU and takes a few minutes on 2 cores.

Run from the repository root::

    python scripts/train_wide_digits_cnn.py

Writes ``benchmarks/data/wide_digits_cnn.npz``: the weight of the 512 -> 512 convolution
(``conv512``, float32, shape (512, 512, 3, 3)) and the test accuracy (``test_accuracy``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the digits split, seeding and training loop of the small example CNN (same seed, batch size)
from train_digits_cnn import load_splits, setup, train  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "wide_digits_cnn.npz"
EPOCHS = 40
LR = 2e-3
WEIGHT_DECAY = 5e-2


class WideDigitsCNN(nn.Module):
    """16x16 input: conv 1->32, pool, conv 32->128, pool, conv 128->512, conv 512->512 at 4x4."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(32, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Conv2d(128, 512, 3, padding=1),
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, 3, padding=1),  # the benchmark's weight: features.11
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image translated by a random integer offset in [-max_shift, max_shift]^2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def main() -> None:
    start = setup()
    splits = load_splits()
    model = WideDigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    acc = train(model, opt, splits, EPOCHS, start, augment=shift)

    weight = model.features[11].weight.detach().numpy().astype(np.float32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, conv512=weight, test_accuracy=np.float64(acc))
    print(f"test accuracy: {acc:.4f} ({len(splits[3])} images); wrote {OUT} {weight.shape}")
    print(f"training time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
