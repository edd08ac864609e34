"""MSE, PSNR and SSIM of images in [0, 1] (torch, differentiable).

SSIM is Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
averaged over valid (un-padded) windows and channels — the settings of the common
implementations (skimage's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`,
pytorch-msssim), which the tests compare against.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor


def _chw(img: Tensor) -> Tensor:
    """[H, W, C] or [C, H, W] or [H, W] -> [1, C, H, W] float."""
    if img.dim() == 2:
        img = img[None]
    elif img.shape[-1] in (1, 3) and img.shape[0] not in (1, 3):
        img = img.permute(2, 0, 1)
    return img[None].float()


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error of two images of the same shape."""
    return ((a.float() - b.float()) ** 2).mean()


def psnr(a: Tensor, b: Tensor, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    return 10 * torch.log10(peak**2 / mse(a, b))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity of two images ([H, W, C], [C, H, W] or [H, W]) in [0, data_range]."""
    x, y = _chw(a), _chw(b)
    c = x.shape[1]
    g = _gaussian_window(window, sigma).to(x)
    wx = g.reshape(1, 1, 1, -1).expand(c, 1, 1, window)
    wy = g.reshape(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


