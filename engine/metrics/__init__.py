"""Image metrics and evaluation mattes."""
from engine.metrics.image import ms_ssim, mse, psnr, ssim

__all__ = ["ms_ssim", "mse", "psnr", "ssim"]
