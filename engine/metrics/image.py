"""MSE, PSNR, SSIM and MS-SSIM of images in [0, 1] (torch, differentiable).

SSIM is Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
averaged over valid (un-padded) windows and channels — the settings of the common
implementations (skimage's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`,
pytorch-msssim), which the tests compare against.

MS-SSIM is Wang et al. 2003 as pytorch-msssim computes it: 5 scales with weights
[0.0448, 0.2856, 0.3001, 0.2363, 0.1333], 2x2 average pooling between scales (an odd side is
zero-padded by one pixel on both sides first), the mean contrast-structure term at scales 1-4 and
the mean SSIM at scale 5, each clamped at 0, raised to its weight and multiplied; per channel, then
averaged over channels.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_BLOCK = 32     # outputs per GEMM of the banded blur (16-48 measured equally fast at 256 px)


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


def region_mse(a: Tensor, b: Tensor, mask: Tensor) -> float:
    """Mean squared error of images ``a`` and ``b`` [H, W, C] over the pixels where ``mask``
    [H, W, 1] is set (weighted by it); nan for an empty mask."""
    n = float(mask.sum()) * a.shape[-1]
    return float((((a.float() - b.float()) ** 2) * mask).sum()) / n if n > 0 else float("nan")


def region_psnr(a: Tensor, b: Tensor, mask: Tensor, peak: float = 1.0) -> float:
    """PSNR in dB over the pixels of ``mask`` (`region_mse`); nan for an empty mask."""
    import math

    err = region_mse(a, b, mask)
    return 10 * math.log10(peak**2 / max(err, 1e-12)) if err == err else float("nan")


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


@functools.lru_cache(maxsize=32)
def _band(n: int, size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n - size + 1, n]: row i holds the window at columns i..i+size-1 (a valid 1-D blur)."""
    g = _gaussian_window(size, sigma)
    m = torch.zeros(n - size + 1, n)
    for i in range(n - size + 1):
        m[i, i : i + size] = g
    return m.to(device=device, dtype=dtype)


def _blocks(n: int) -> list[tuple[int, int]]:
    k = max(1, round(n / _BLOCK))
    e = [round(i * n / k) for i in range(k + 1)]
    return list(zip(e[:-1], e[1:]))


class _Blur(torch.autograd.Function):
    """Separable valid Gaussian blur of [B, H, W] as banded matmuls, one small GEMM per block of
    outputs over just the inputs it reads (a whole band matrix multiplies mostly zeros). The
    backward is the transposed band, blocked over the inputs so the blocks never overlap.
    About twice as fast as grouped conv2d on CPU (scripts/bench_ssim.py)."""

    @staticmethod
    def forward(ctx, t: Tensor, size: int, sigma: float) -> Tensor:
        n, h, w = t.shape
        p = size - 1
        bh, bw = (_band(s, size, sigma, t.dtype, t.device) for s in (h, w))
        ctx.dims = h, w, size, sigma
        u, v = t.reshape(n * h, w), t.new_empty(n * h, w - p)
        for a, b in _blocks(w - p):
            v[:, a:b].addmm_(u[:, a : b + p], bw[a:b, a : b + p].T, beta=0)
        v, out = v.reshape(n, h, w - p), t.new_empty(n, h - p, w - p)
        for a, b in _blocks(h - p):
            out[:, a:b].baddbmm_(bh[a:b, a : b + p].expand(n, -1, -1), v[:, a : b + p], beta=0)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:
        h, w, size, sigma = ctx.dims
        p, n, g = size - 1, g.shape[0], g.contiguous()
        bh, bw = (_band(s, size, sigma, g.dtype, g.device) for s in (h, w))
        v = g.new_empty(n, h, w - p)
        for a, b in _blocks(h):
            lo, hi = max(a - p, 0), min(b, h - p)
            v[:, a:b].baddbmm_(bh[lo:hi, a:b].T.expand(n, -1, -1), g[:, lo:hi], beta=0)
        v, u = v.reshape(n * h, w - p), g.new_empty(n * h, w)
        for a, b in _blocks(w):
            lo, hi = max(a - p, 0), min(b, w - p)
            u[:, a:b].addmm_(v[:, lo:hi], bw[lo:hi, a:b], beta=0)
        return u.reshape(n, h, w), None, None


def _blur(t: Tensor, size: int, sigma: float) -> Tensor:
    """Valid Gaussian blur of [..., H, W]."""
    out = _Blur.apply(t.reshape(-1, *t.shape[-2:]), size, sigma)
    return out.reshape(*t.shape[:-2], *out.shape[-2:])


def _ssim_maps(x: Tensor, y: Tensor, data_range: float, window: int, sigma: float) -> tuple[Tensor, Tensor]:
    """Luminance and contrast-structure maps [1, C, H', W'] of [1, C, H, W] images (valid windows).
    The blurs of x and of y are stacked apart, so y's (usually a target without grad) stay out
    of the autograd graph."""
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} px; got {x.shape[-2]}x{x.shape[-1]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, sxx, sxy = _blur(torch.stack([x, x * x, x * y]), window, sigma)
    my, syy = _blur(torch.stack([y, y * y]), window, sigma)
    sxx, syy, sxy = sxx - mx**2, syy - my**2, sxy - mx * my
    lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    return lum, (2 * sxy + c2) / (sxx + syy + c2)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity of two images ([H, W, C], [C, H, W] or [H, W]) in [0, data_range]."""
    lum, cs = _ssim_maps(_chw(a), _chw(b), data_range, window, sigma)
    return (lum * cs).mean()


def ms_ssim_min_side(window: int = 11, scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side MS-SSIM accepts: the coarsest scale must still hold one window."""
    return (window - 1) * 2 ** (scales - 1) + 1


def ms_ssim(a: Tensor, b: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
            weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> Tensor:
    """Multi-scale structural similarity of two images ([H, W, C], [C, H, W] or [H, W]) in [0, data_range]."""
    x, y = _chw(a), _chw(b)
    need = ms_ssim_min_side(window, len(weights))
    if min(x.shape[-2:]) < need:
        raise ValueError(f"MS-SSIM needs images of at least {need} px on the smaller side ({len(weights)} scales "
                         f"with a {window}-tap window); got {x.shape[-2]}x{x.shape[-1]}")
    terms = []
    for i in range(len(weights)):
        lum, cs = _ssim_maps(x, y, data_range, window, sigma)
        if i == len(weights) - 1:
            terms.append(torch.relu((lum * cs).mean((-2, -1))))
        else:
            terms.append(torch.relu(cs.mean((-2, -1))))
            pad = [s % 2 for s in x.shape[-2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    per_channel = torch.prod(torch.stack(terms) ** x.new_tensor(weights)[:, None, None], dim=0)
    return per_channel.mean()
