"""Train the x2 super-resolution CNN of the compression experiment (``benchmarks/experiment``).

Bit-reproducible on CPU: seeded, deterministic algorithms, one thread; a second run writes a
bit-identical file (sha256 6389483a1d1f94b1...; measured twice). Takes about 3.5 minutes.
Run from the repository root::

    python scripts/train_sr_cnn.py

Trains :class:`SRCNN` (``benchmarks/experiment/sr.py``) with an L1 loss on aligned patch pairs
of the photographs in ``TRAIN_IMAGES`` (``skimage.data``, bundled with scikit-image), and writes
``benchmarks/data/sr_cnn.npz``: every state_dict entry as a float32 array, keyed by its name
(``np.load(..., allow_pickle=False)``). Prints PSNR/SSIM on the held-out ``TEST_IMAGES``
against bicubic upsampling.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from experiment.sr import (  # noqa: E402
    BORDER,
    SRCNN,
    TEST_IMAGES,
    TRAIN_IMAGES,
    WEIGHTS_PATH,
    evaluate,
    load_image,
    make_patches,
)

SEED = 0
THREADS = 1
STEPS = 4000
BATCH_SIZE = 32
HR_PATCH = 48
N_PATCHES = 12_000
LR = 1e-3


def train(model: SRCNN, lr: torch.Tensor, hr: torch.Tensor, start: float) -> float:
    """Adam with a cosine schedule over ``STEPS`` batches drawn by one seeded generator;
    returns the mean L1 loss of the last 100 steps."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    gen = torch.Generator().manual_seed(SEED)
    losses: list[float] = []
    model.train()
    while len(losses) < STEPS:
        for idx in torch.randperm(len(lr), generator=gen).split(BATCH_SIZE):
            if len(losses) == STEPS:
                break
            loss = (model(lr[idx]) - hr[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if len(losses) % 500 == 0:
                elapsed = time.perf_counter() - start
                mean = float(np.mean(losses[-500:]))
                print(f"step {len(losses):5d}  L1 {mean:.5f}  {elapsed:.0f} s", flush=True)
    return float(np.mean(losses[-100:]))


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    lr, hr = make_patches(TRAIN_IMAGES, n_patches=N_PATCHES, hr_size=HR_PATCH, seed=SEED)
    model = SRCNN()
    train(model, lr, hr, start)

    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    np.savez(WEIGHTS_PATH, **state)
    digest = hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()

    test = [load_image(n) for n in TEST_IMAGES]
    ours, bicubic = evaluate(model, test), evaluate(None, test)
    print(f"held out ({', '.join(TEST_IMAGES)}), luminance, {BORDER}-px border cropped:")
    print(f"  bicubic  PSNR {bicubic['psnr']:.3f} dB  SSIM {bicubic['ssim']:.4f}")
    print(f"  SRCNN    PSNR {ours['psnr']:.3f} dB  SSIM {ours['ssim']:.4f}")
    for name, img in zip(TEST_IMAGES, test, strict=True):
        o, b = evaluate(model, [img]), evaluate(None, [img])
        print(f"  {name:8s} PSNR {o['psnr']:.3f} (bicubic {b['psnr']:.3f})")
    print(
        f"training time: {time.perf_counter() - start:.1f} s; {WEIGHTS_PATH.name} sha256 {digest}"
    )


if __name__ == "__main__":
    main()
