"""Screen-space aspect statistics of an avatar's Gaussians (the anti-spike ablation's measure):
r = sqrt(λmax/λmin) of each visible Gaussian's projected 2D covariance, the quantity the
refiner's aspect penalty ReLU(log r − τ) acts on, pooled over held-out frames."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.headmodel.base import HeadModel
from engine.refine.data import VideoData
from engine.render.projection import eigen_ratio, project_gaussians
from engine.types import Avatar


def aspect_ratios(cov2d: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """r = sqrt(λmax/λmin) of the visible 2D covariances [N, 2, 2] (`eigen_ratio`, as
    `engine.refine.refiner.aspect_penalty` uses it, so ReLU(log r − τ) is its summand)."""
    return torch.sqrt(eigen_ratio(cov2d[visible]))


def heldout_aspect_ratios(avatar: Avatar, model: HeadModel, data: VideoData, frames: Sequence[int]) -> np.ndarray:
    """r of every visible Gaussian in each of ``frames`` (tracked parameters and cameras of
    ``data``, i.e. at its working resolution), pooled into one float64 array."""
    animated = AnimatedAvatar(avatar, model)
    shape = avatar.shape[None]
    out = []
    with torch.no_grad():
        for t in frames:
            g = animated.gaussians(dataclasses.replace(data.params.frame(int(t)), shape=shape))
            proj = project_gaussians(g, data.cameras[int(t)])
            out.append(aspect_ratios(proj.cov2d, proj.visible).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class AspectStats:
    median: float
    p99: float
    frac_over_tau: float
    """Fraction with r > e^τ: the Gaussians the aspect penalty pushes on."""
    frac_over_10: float
    count: int


def aspect_stats(r: np.ndarray, tau: float) -> AspectStats:
    """Summary of pooled aspect ratios ``r``; ``tau`` is the penalty's threshold on log r."""
    return AspectStats(float(np.median(r)), float(np.percentile(r, 99)), float(np.mean(r > np.exp(tau))),
                       float(np.mean(r > 10)), len(r))
