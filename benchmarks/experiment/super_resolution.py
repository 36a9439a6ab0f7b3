"""Super-resolution: the x2 SR CNN of ``sr.py``, fine-tuned on patches of its training photos.

The fine-tuning data are aligned patch pairs of :data:`~experiment.sr.TRAIN_IMAGES` (48x48
high-resolution patches, a seeded draw); the metrics are PSNR and SSIM on luminance over the
held-out :data:`~experiment.sr.TEST_IMAGES`, border-cropped. ``head`` (1 -> 32, 288 weights)
and ``tail`` (32 -> 4, 1,152 weights) are left dense by every family: the six 32x32x3x3 body
convolutions (97 % of the weights) are compressed.

Run alone: ``python benchmarks/experiment/super_resolution.py [options]`` (the options of
``benchmarks/experiment.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiment import sr
from experiment.harness import Task

__all__ = ["make_task"]


def _l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).abs().mean()


def make_task(*, n_train: int = 2048, epochs: int = 4) -> Task:
    """The super-resolution task with ``n_train`` fine-tuning patch pairs."""
    test = [sr.load_image(n) for n in sr.TEST_IMAGES]
    x_train, y_train = sr.make_patches(sr.TRAIN_IMAGES, n_patches=n_train, hr_size=48, seed=1)
    camera_lr = sr.downscale(torch.from_numpy(test[0])[None, None])

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return sr.evaluate(model, test)

    return Task(
        name="super_resolution",
        load_model=sr.load_pretrained,
        evaluate=evaluate,
        loss=_l1,
        train_x=x_train,
        train_y=y_train,
        skip=("head", "tail"),
        example=camera_lr,
        batch_size=16,
        lr=5e-4,
        epochs=epochs,
        references={"bicubic": sr.evaluate(None, test)},
        notes=(
            f"x2 SR CNN (benchmarks/experiment/sr.py); PSNR/SSIM on luminance of the held-out "
            f"{', '.join(sr.TEST_IMAGES)}, {sr.BORDER} px border cropped; head and tail left "
            f"dense by every family; MACs and latency on camera's 256x256 low-resolution input."
        ),
    )


if __name__ == "__main__":
    from experiment.cli import main

    main(["--tasks", "super_resolution", *sys.argv[1:]])
