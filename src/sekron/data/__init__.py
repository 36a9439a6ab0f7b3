"""Embedded example data: conv weights of a small CNN trained on digits.

The weights come from :class:`sekron.data.digits_cnn.DigitsCNN`, a four-layer
CNN trained on scikit-learn's bundled 8x8 digits dataset (upsampled to 16x16)
by ``scripts/train_digits_cnn.py``, stored once, as its whole state dict in
``digits_cnn.npz`` (plain arrays: loaded without pickle).  It reaches 98.6 % accuracy on the
held-out 20 % test split (360 images).  This module needs only numpy; the
model itself (``sekron.data.digits_cnn``) needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXAMPLE_KEY", "example_keys", "example_weight"]

_NPZ_PATH = Path(__file__).parent / "digits_cnn.npz"

#: Key of the largest 3x3 conv weight, shape ``(128, 64, 3, 3)``.
EXAMPLE_KEY: str = "features.8.weight"


def example_keys() -> list[str]:
    """List the state-dict names of all conv weights in the example CNN.

    Returns
    -------
    list of str
        Names such as ``"features.0.weight"``, in network order.
    """
    with np.load(_NPZ_PATH, allow_pickle=False) as data:
        return _conv_keys(data)


def _conv_keys(data: Any) -> list[str]:
    """The 4-d (conv weight) entries of the state dict, in network order."""
    return [k for k in data.files if k.endswith(".weight") and data[k].ndim == 4]


def example_weight(key: str | None = None) -> np.ndarray:
    """Load one pretrained conv weight of the example digits CNN.

    Parameters
    ----------
    key : str, optional
        State-dict name of the conv weight (see :func:`example_keys`).
        Defaults to :data:`EXAMPLE_KEY`, the largest 3x3 convolution.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(out_channels, in_channels, 3, 3)``.

    Raises
    ------
    KeyError
        If ``key`` is not one of :func:`example_keys`.
    """
    key = EXAMPLE_KEY if key is None else key
    with np.load(_NPZ_PATH, allow_pickle=False) as data:
        keys = _conv_keys(data)
        if key not in keys:
            raise KeyError(f"unknown example weight {key!r}; choose from {keys}")
        weight: np.ndarray = data[key]
        return weight
