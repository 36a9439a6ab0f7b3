"""A small pretrained CNN for scikit-learn's 8x8 digits (requires torch).

The weights in ``digits_cnn.npz`` (the state dict as plain arrays, loaded without pickle)
were produced by ``scripts/train_digits_cnn.py``
(deterministic, CPU, about 10 s).  The model reaches 98.6 % accuracy (355/360) on
the held-out 20 % split stored in ``digits_test.npz``.

Examples
--------
>>> from sekron.data.digits_cnn import load_pretrained, load_test_set
>>> model = load_pretrained()
>>> x, y = load_test_set()
>>> acc = (model(x).argmax(1) == y).float().mean().item()
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import EXAMPLE_KEY

__all__ = [
    "DigitsCNN",
    "EXAMPLE_KEY",
    "IMAGE_SIZE",
    "accuracy",
    "load_pretrained",
    "load_test_set",
    "preprocess",
]

_DIR = Path(__file__).parent
WEIGHTS_PATH: Path = _DIR / "digits_cnn.npz"
TEST_SET_PATH: Path = _DIR / "digits_test.npz"

#: Side length the 8x8 digit images are upsampled to before entering the network.
IMAGE_SIZE: int = 16


class DigitsCNN(nn.Module):
    """Four 3x3 convolutions, global average pooling and a linear classifier.

    Input is ``(N, 1, 16, 16)``; conv weight shapes are ``(16, 1, 3, 3)``,
    ``(32, 16, 3, 3)``, ``(64, 32, 3, 3)`` and ``(128, 64, 3, 3)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # 0
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1),  # 2
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(32, 64, 3, padding=1),  # 5
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Conv2d(64, 128, 3, padding=1),  # 8
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn raw digits images (values 0..16, shape ``(N, 8, 8)``) into network input.

    Returns a float32 tensor of shape ``(N, 1, 16, 16)`` scaled to ``[-1, 1]``.
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 8, 8)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x / 8.0 - 1.0


def load_pretrained() -> DigitsCNN:
    """Return a :class:`DigitsCNN` with the shipped pretrained weights, in eval mode."""
    model = DigitsCNN()
    with np.load(WEIGHTS_PATH, allow_pickle=False) as data:
        state = {k: torch.from_numpy(data[k]) for k in data.files}
    model.load_state_dict(state)
    return model.eval()


def load_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """Return the held-out test split as ``(inputs, labels)``.

    ``inputs`` is float32 ``(360, 1, 16, 16)`` (already preprocessed), ``labels``
    is int64 ``(360,)``.
    """
    with np.load(TEST_SET_PATH, allow_pickle=False) as data:
        return torch.from_numpy(data["x"]), torch.from_numpy(data["y"])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())
