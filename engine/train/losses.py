"""The feed-forward training objective (paper §2.3):

    L = λ1·L1 + λms·(1 − MS-SSIM) + λlp·LPIPS + λbox·L_box + λps·TV(local position)
        + λss·TV(log-scale) + λjac·L_jac + λδ·L_δ

- L_box: L1 inside the target's face box (the face gets extra weight);
- TV: total variation in the UV domain over pairs of valid neighbouring texels;
- L_jac = mean over texels of log(1 + ‖∇γ g_x‖² + ‖∇γ g_s‖²), each squared norm a one-sample
  Hutchinson estimate (E_v‖Jᵀv‖² = ‖J‖²_F with Rademacher v) from one backward pass;
- L_δ: mean squared residual-head output (residual shrinkage);
- L2-SP (Phase 2): Σ‖θ − θ_phase1‖² over the trainable parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.binding import UVSlots
from engine.metrics.image import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_min_side


@dataclass(frozen=True)
class LossWeights:
    """The λ of each term (defaults: the paper's, where it gives them; λjac = 0.1 is its
    reported optimum)."""

    l1: float = 1.0
    ms_ssim: float = 0.2
    lpips: float = 0.1
    box: float = 1.0
    tv_position: float = 0.01
    tv_scale: float = 0.01
    jacobian: float = 0.1
    residual: float = 0.01


def ms_ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 − MS-SSIM with as many of the five scales as the image size allows (at least one)."""
    side = min(pred.shape[:2]) if pred.shape[-1] == 3 else min(pred.shape[-2:])
    n = len(MS_SSIM_WEIGHTS)
    while n > 1 and side < ms_ssim_min_side(scales=n):
        n -= 1
    w = torch.tensor(MS_SSIM_WEIGHTS[:n])
    return 1 - ms_ssim(pred, target, weights=tuple((w / w.sum()).tolist()))


def box_l1(pred: Tensor, target: Tensor, box) -> Tensor:
    """L1 inside the face box (x0, y0, x1, y1 pixels) of [H, W, 3] images; 0 if it is empty."""
    h, w = pred.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(round(float(box[2]))), w), min(int(round(float(box[3]))), h)
    if x1 <= x0 or y1 <= y0:
        return pred.sum() * 0
    return (pred[y0:y1, x0:x1] - target[y0:y1, x0:x1]).abs().mean()


def uv_tv(values: Tensor, slots: UVSlots) -> Tensor:
    """Mean absolute difference of per-slot values [N, C] between horizontally and vertically
    adjacent valid texels (UV-domain total variation)."""
    m = slots.scatter(values)                                           # [C, R, R]
    v = slots.valid
    dx = (m[:, :, 1:] - m[:, :, :-1]).abs()[:, v[:, 1:] & v[:, :-1]]
    dy = (m[:, 1:] - m[:, :-1]).abs()[:, v[1:] & v[:-1]]
    return torch.cat([dx.flatten(), dy.flatten()]).mean()


def hutchinson_sq_norm(output: Tensor, wrt: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Per-row estimate of ‖∂output_i/∂wrt_i‖²_F for per-row maps ([N, C_out] of [N, C_in]):
    ‖Jᵀv‖² with one Rademacher v, differentiable (create_graph) so it can be a loss."""
    v = torch.randint(0, 2, output.shape, generator=generator, dtype=output.dtype).mul_(2).sub_(1)
    (g,) = torch.autograd.grad(output, wrt, grad_outputs=v, create_graph=True)
    return g.pow(2).sum(-1)


def jacobian_penalty(position: Tensor, scale: Tensor, gamma: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """L_jac = mean_texels log(1 + ‖∇γ g_x‖² + ‖∇γ g_s‖²); ``gamma`` [N, 27] must be the
    (broadcast, requires_grad) input from which the position and scale heads were computed."""
    return torch.log1p(hutchinson_sq_norm(position, gamma, generator) + hutchinson_sq_norm(scale, gamma, generator)).mean()


def residual_shrinkage(residual: dict[str, Tensor] | None) -> Tensor:
    """Mean squared residual-head output over all its attributes."""
    if not residual:
        return torch.zeros(())
    return torch.cat([r.flatten() for r in residual.values()]).pow(2).mean()


def l2_sp(params: dict[str, Tensor], anchor: dict[str, Tensor]) -> Tensor:
    """Σ‖θ − θ_anchor‖² over the parameters present in both (L2-SP, Li et al. 2018)."""
    terms = [(p - anchor[k]).pow(2).sum() for k, p in params.items() if k in anchor]
    return torch.stack(terms).sum() if terms else torch.zeros(())
