"""Train the example CNN shipped in ``sekron.data`` on scikit-learn's digits.

Deterministic on CPU (bit-identical outputs across runs); takes about 10 s.
Run from the repository root::

    python scripts/train_digits_cnn.py

Writes, next to ``src/sekron/data/digits_cnn.py``:

* ``digits_cnn.npz``  -- the state_dict as float32 arrays, keyed by name (loaded without pickle)
* ``digits_test.npz`` -- the preprocessed test split, ``x`` float32 and ``y`` int64
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sekron.data.digits_cnn import (  # noqa: E402
    TEST_SET_PATH,
    WEIGHTS_PATH,
    DigitsCNN,
    accuracy,
    preprocess,
)

SEED = 0
EPOCHS = 30
BATCH_SIZE = 64
LR = 2e-3


def setup() -> float:
    """Seed, 2 threads, deterministic kernels; returns the start time."""
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    return time.perf_counter()


def load_splits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits, preprocessed, as ``(x_train, y_train, x_test, y_test)`` (a stratified 80/20
    split)."""
    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    return (
        preprocess(x_tr),
        torch.as_tensor(y_tr, dtype=torch.int64),
        preprocess(x_te),
        torch.as_tensor(y_te, dtype=torch.int64),
    )


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    splits: tuple[torch.Tensor, ...],
    epochs: int,
    start: float,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> float:
    """Mini-batch training with a cosine schedule, shuffled (and ``augment``-ed) by one seeded
    generator; prints each epoch and returns the final test accuracy."""
    x_train, y_train, x_test, y_test = splits
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(BATCH_SIZE):
            x = x_train[idx] if augment is None else augment(x_train[idx], gen)
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        acc = accuracy(model, x_test, y_test)
        elapsed = time.perf_counter() - start
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.4f}  test acc {acc:.4f}  {elapsed:.0f} s")
    return accuracy(model, x_test, y_test)


def main() -> None:
    start = setup()
    splits = load_splits()
    x_test, y_test = splits[2], splits[3]
    model = DigitsCNN()
    acc = train(model, torch.optim.Adam(model.parameters(), lr=LR), splits, EPOCHS, start)

    state = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
    np.savez(WEIGHTS_PATH, **state)
    convs = {k: v for k, v in state.items() if v.ndim == 4}
    np.savez(TEST_SET_PATH, x=x_test.numpy().astype(np.float32), y=y_test.numpy().astype(np.int64))

    print(f"test accuracy: {acc:.4f} ({len(y_test)} images)")
    print(f"training time: {time.perf_counter() - start:.1f} s")
    for k, v in convs.items():
        print(f"  {k}: {v.shape}")


if __name__ == "__main__":
    main()
