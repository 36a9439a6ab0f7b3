"""Classification: the digits CNN shipped in ``sekron.data``, fine-tuned on scikit-learn's digits.

The fine-tuning data is the training split of ``scripts/train_digits_cnn.py`` (the stratified
80/20 split of ``sklearn.datasets.load_digits`` with ``random_state=0``, 1,437 images); the
metric is the accuracy on the held-out split that ships (``sekron.data.digits_cnn``, 360
images). ``features.0`` (144 weights) is left dense by every family: it is too small to
compress.

Run alone: ``python benchmarks/experiment/classification.py [options]`` (the options of
``benchmarks/experiment.py``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiment.harness import Task

__all__ = ["load_train_split", "make_task", "make_wide_task"]


def load_train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The training split of ``scripts/train_digits_cnn.py``, preprocessed: ``(x, y)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from sekron.data.digits_cnn import preprocess

    digits = load_digits()
    x_tr, _, y_tr, _ = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return preprocess(x_tr), torch.as_tensor(np.asarray(y_tr), dtype=torch.int64)


def make_task(*, n_train: int | None = None, epochs: int = 8) -> Task:
    """The classification task; ``n_train`` keeps only the first training images (smoke)."""
    from sekron.data.digits_cnn import accuracy, load_pretrained, load_test_set

    x_test, y_test = load_test_set()
    x_train, y_train = load_train_split()
    if n_train is not None:
        x_train, y_train = x_train[:n_train], y_train[:n_train]

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(model, x_test, y_test)}

    return Task(
        name="classification",
        load_model=load_pretrained,
        evaluate=evaluate,
        loss=F.cross_entropy,
        train_x=x_train,
        train_y=y_train,
        skip=("features.0",),
        example=x_test[:64],
        batch_size=64,
        lr=3e-4,  # 1e-3 wrecked CP's factors in the first epoch (loss 0.02 -> 1.24)
        epochs=epochs,
        notes=(
            "digits CNN (sekron.data.digits_cnn); accuracy on the 360 held-out images; "
            "features.0 (144 weights) left dense by every family; latency on a batch of 64."
        ),
    )


def make_wide_task(*, n_train: int | None = None, epochs: int = 8) -> Task:
    """The wide digits CNN (``experiment/wide.py``: 128 -> 512 and 512 -> 512 3x3 convs) on the
    same data, metric and schedule as :func:`make_task`; ``features.0`` (288 weights) left
    dense."""
    from experiment import wide

    return dataclasses.replace(
        make_task(n_train=n_train, epochs=epochs),
        name="classification_wide",
        load_model=wide.load_pretrained,
        notes=(
            "wide digits CNN (benchmarks/experiment/wide.py); accuracy on the 360 held-out "
            "images; features.0 (288 weights) left dense by every family; latency on a batch "
            "of 64."
        ),
    )


if __name__ == "__main__":
    from experiment.cli import main

    main(["--tasks", "classification", *sys.argv[1:]])
