"""The wide digits CNN: a 512 -> 512 3x3 convolution, the size of ResNet-18/34's widest.

Trained by ``scripts/train_wide_digits_cnn.py`` on scikit-learn's digits (the split of the
small example CNN, ``sekron.data.digits_cnn``: the same held-out 360 images measure it). The
whole state dict ships in ``benchmarks/data/wide_digits_cnn.npz``, compressed (``np.savez_
compressed``) with every floating-point entry stored as float16 to keep the file small; it is
loaded back as float32 (``allow_pickle=False``). The float16 rounding is part of the shipped
model: its accuracy (``test_accuracy`` in the file) is measured after it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["CONV512_KEY", "WEIGHTS_PATH", "WideDigitsCNN", "conv512_weight", "load_pretrained"]

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "data" / "wide_digits_cnn.npz"
#: State-dict name of the 512x512x3x3 convolution's weight.
CONV512_KEY = "features.11.weight"


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
            nn.Conv2d(512, 512, 3, padding=1),  # CONV512_KEY: features.11
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def _state(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "test_accuracy"}


def load_pretrained(path: Path = WEIGHTS_PATH) -> WideDigitsCNN:
    """A :class:`WideDigitsCNN` with the shipped weights (float32), in eval mode."""
    model = WideDigitsCNN()
    state = {
        k: torch.from_numpy(v.astype(np.float32) if v.dtype.kind == "f" else v)
        for k, v in _state(path).items()
    }
    model.load_state_dict(state)
    return model.eval()


def conv512_weight(path: Path = WEIGHTS_PATH) -> np.ndarray:
    """The trained 512x512x3x3 weight, as float32."""
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[CONV512_KEY], dtype=np.float32)
