"""A small x2 super-resolution CNN on luminance, with its data and metrics.

The model (:class:`SRCNN`) follows the FSRCNN/EDSR-baseline pattern: it works at low resolution
and ends in a sub-pixel (``PixelShuffle``) upsampling, and it predicts the residual to a bicubic
upsample of its input. Images are luminance in ``[0, 1]`` (``skimage.color.rgb2gray`` of the
colour photographs); the low-resolution input is the bicubic, antialiased x1/2 downscale of the
high-resolution image, both made by torch, so training, evaluation and the benchmark see the
same degradation.

Every image comes from ``skimage.data`` (bundled in the scikit-image wheel; nothing is
downloaded). :data:`TEST_IMAGES` are held out from training; ``cat`` is not used at all because
it is the same photograph as ``chelsea``.

Trained by ``scripts/train_sr_cnn.py``; the weights are ``benchmarks/data/sr_cnn.npz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BORDER",
    "SCALE",
    "SRCNN",
    "TEST_IMAGES",
    "TRAIN_IMAGES",
    "WEIGHTS_PATH",
    "bicubic_up",
    "downscale",
    "evaluate",
    "load_image",
    "load_pretrained",
    "make_patches",
    "psnr_ssim",
    "super_resolve",
]

SCALE = 2
#: HR pixels cropped from every side before PSNR/SSIM (the usual ``scale + 2`` convention).
BORDER = SCALE + 2
WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "data" / "sr_cnn.npz"

#: Photographs the network is trained (and fine-tuned) on.
TRAIN_IMAGES = (
    "astronaut",
    "brick",
    "clock",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "text",
)
#: Photographs held out for testing (never seen in training or fine-tuning).
TEST_IMAGES = ("camera", "chelsea", "coffee")


class SRCNN(nn.Module):
    """Eight 3x3 convolutions at low resolution, a x2 sub-pixel upsampling and a bicubic skip.

    ``head`` (1 -> C), ``body.0 .. body.{2n-2}`` (n convolutions C -> C, each followed by a
    ReLU), ``tail`` (C -> 4, then ``PixelShuffle(2)``). Input ``(N, 1, h, w)`` in ``[0, 1]``,
    output ``(N, 1, 2h, 2w)``. The default (C = 32, n = 6) has 56,964 parameters.
    """

    def __init__(self, channels: int = 32, n_body: int = 6) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        layers: list[nn.Module] = []
        for _ in range(n_body):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, SCALE * SCALE, 3, padding=1)
        self.shuffle = nn.PixelShuffle(SCALE)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = F.relu(self.head(lr))
        out: torch.Tensor = self.shuffle(self.tail(self.body(feat))) + bicubic_up(lr)
        return out


def bicubic_up(lr: torch.Tensor) -> torch.Tensor:
    """Bicubic x2 upsampling (the baseline, and the network's skip connection)."""
    return F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)


def downscale(hr: torch.Tensor) -> torch.Tensor:
    """The degradation: antialiased bicubic x1/2 downscaling of ``(N, 1, H, W)``, H, W even."""
    return F.interpolate(
        hr, scale_factor=1 / SCALE, mode="bicubic", align_corners=False, antialias=True
    )


def load_image(name: str) -> np.ndarray:
    """Luminance of ``skimage.data.<name>()`` as float32 in ``[0, 1]``, cropped to even sides."""
    from skimage import data
    from skimage.color import rgb2gray

    img = getattr(data, name)()
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    elif img.dtype == np.uint8:
        img = img / 255.0
    img = np.asarray(img, dtype=np.float32)
    h, w = img.shape
    return img[: h - h % SCALE, : w - w % SCALE]


def make_patches(
    names: Sequence[str], *, n_patches: int, hr_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned ``(lr, hr)`` patch pairs drawn uniformly from the images (a seeded generator).

    The images are downscaled whole, then cropped: ``lr`` is ``(n, 1, s, s)`` and ``hr``
    ``(n, 1, 2s, 2s)`` with ``s = hr_size // 2``; each patch is flipped and rotated by a seeded
    choice of the eight symmetries of the square. Patches are spread evenly over the images.
    """
    rng = np.random.default_rng(seed)
    s = hr_size // SCALE
    lrs, hrs = [], []
    for k, name in enumerate(names):
        hr = torch.from_numpy(load_image(name))[None, None]
        lr = downscale(hr)
        count = n_patches // len(names) + (k < n_patches % len(names))
        h, w = lr.shape[-2:]
        for _ in range(count):
            i, j = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            rot, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            pair = [
                lr[0, :, i : i + s, j : j + s],
                hr[0, :, 2 * i : 2 * i + hr_size, 2 * j : 2 * j + hr_size],
            ]
            pair = [torch.rot90(p, rot, (1, 2)) for p in pair]
            if flip:
                pair = [torch.flip(p, (2,)) for p in pair]
            lrs.append(pair[0])
            hrs.append(pair[1])
    return torch.stack(lrs).contiguous(), torch.stack(hrs).contiguous()


def psnr_ssim(sr: np.ndarray, hr: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of two ``[0, 1]`` luminance images, ``BORDER`` pixels cropped."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    b = BORDER
    a = np.clip(sr, 0.0, 1.0)[b:-b, b:-b].astype(np.float64)
    t = hr[b:-b, b:-b].astype(np.float64)
    return (
        float(peak_signal_noise_ratio(t, a, data_range=1.0)),
        float(structural_similarity(t, a, data_range=1.0)),
    )


@torch.no_grad()
def super_resolve(model: nn.Module | None, hr: np.ndarray) -> np.ndarray:
    """Downscale ``hr`` and upscale it back with ``model`` (bicubic when None)."""
    lr = downscale(torch.from_numpy(hr)[None, None])
    if model is None:
        return bicubic_up(lr)[0, 0].numpy()
    model.eval()
    return model(lr)[0, 0].numpy()


def evaluate(model: nn.Module | None, images: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean PSNR and SSIM of ``model`` (None: bicubic) over ``images`` (HR luminance)."""
    scores = [psnr_ssim(super_resolve(model, hr), hr) for hr in images]
    return {
        "psnr": float(np.mean([p for p, _ in scores])),
        "ssim": float(np.mean([s for _, s in scores])),
    }


def load_pretrained(path: Path = WEIGHTS_PATH) -> SRCNN:
    """An :class:`SRCNN` with the shipped weights (``allow_pickle=False``), in eval mode."""
    model = SRCNN()
    with np.load(path, allow_pickle=False) as data:
        state = {k: torch.from_numpy(data[k]) for k in data.files}
    model.load_state_dict(state)
    return model.eval()
