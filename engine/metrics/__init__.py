"""Image metrics and evaluation mattes."""
from engine.metrics.image import mse, psnr, ssim

__all__ = ["mse", "psnr", "ssim"]
