"""A pure-torch, differentiable tile rasterizer: the ground truth other renderers are tested against.

Per-pixel semantics are gsplat's `rasterize_to_pixels` (forward): pixel centres at
(x + 0.5, y + 0.5); alpha_i = min(alpha_max, o_i exp(power_i)) with
power = -0.5 (a dx² + c dy²) - b dx dy; alphas below alpha_min are skipped; compositing
stops *before* the Gaussian whose alpha would take the transmittance to or below
transmittance_min. Slow, any device, autograd does the backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from engine.render.base import RenderOptions
from engine.render.projection import Projected, project_gaussians
from engine.types import Camera, Frame, Gaussians


@dataclass(frozen=True)
class ReferenceRenderer:
    """Loops over screen tiles in Python; vectorised over [pixels, Gaussians] inside a tile.

    Within a tile, Gaussians are composited in depth-sorted chunks of ``chunk_size``
    carrying the transmittance between chunks, and the tile stops once every pixel is
    saturated: that bounds memory and skips the hidden Gaussians of dense scenes.
    Each tile is checkpointed: autograd keeps only the tile's inputs and recomputes its
    [pixels, Gaussians] intermediates during backward. Keeping them all costs several GB
    for a 58k-Gaussian head at 256x256, and allocating that memory made the forward pass
    ~10x slower than without autograd.
    """

    chunk_size: int = 512
    name: str = field(default="reference", init=False)
    differentiable: bool = field(default=True, init=False)

    def render(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
        """See `engine.render.base.Renderer`."""
        proj = project_gaussians(gaussians, camera, options)
        dtype, device = proj.means2d.dtype, proj.means2d.device
        H, W, ts = camera.height, camera.width, options.tile_size
        rgb = torch.zeros(H, W, 3, dtype=dtype, device=device)
        alpha = torch.zeros(H, W, dtype=dtype, device=device)
        depth = torch.zeros(H, W, dtype=dtype, device=device)

        order, tile_lo, tile_hi = _bin_front_to_back(proj, ts)
        colors = gaussians.colors.clamp(0, 1)
        for ty in range((H + ts - 1) // ts):
            for tx in range((W + ts - 1) // ts):
                hit = (tile_lo[:, 0] <= tx) & (tile_hi[:, 0] >= tx) & (tile_lo[:, 1] <= ty) & (tile_hi[:, 1] >= ty)
                ids = order[hit]  # [K] front to back
                if ids.numel() == 0:
                    continue
                y0, x0 = ty * ts, tx * ts
                y1, x1 = min(y0 + ts, H), min(x0 + ts, W)
                ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=dtype, device=device),
                                        torch.arange(x0, x1, dtype=dtype, device=device), indexing="ij")
                pix = torch.stack([xs, ys], dim=-1).reshape(-1, 2) + 0.5
                t_rgb, t_alpha, t_depth = checkpoint(
                    _composite_tile, pix, proj.means2d[ids], proj.conics[ids], gaussians.opacities[ids],
                    colors[ids], proj.depths[ids], options, self.chunk_size, use_reentrant=False)
                rgb[y0:y1, x0:x1] = t_rgb.reshape(y1 - y0, x1 - x0, 3)
                alpha[y0:y1, x0:x1] = t_alpha.reshape(y1 - y0, x1 - x0)
                depth[y0:y1, x0:x1] = t_depth.reshape(y1 - y0, x1 - x0)
        return Frame(rgb=rgb, alpha=alpha, depth=depth)


def _bin_front_to_back(proj: Projected, tile_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Visible Gaussians sorted by depth, with the inclusive tile range of their bounding square.

    -> order [M] indices into the Gaussians, tile_lo [M, 2], tile_hi [M, 2] (tile x, tile y)
    """
    with torch.no_grad():
        ids = proj.visible.nonzero().squeeze(1)
        order = ids[torch.argsort(proj.depths[ids], stable=True)]
        centre = proj.means2d[order]
        r = proj.radii[order, None].to(centre.dtype)
        tile_lo = torch.floor((centre - r) / tile_size).long()
        tile_hi = torch.floor((centre + r) / tile_size).long()
    return order, tile_lo, tile_hi


def _composite_tile(pix: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor,
                    depths: Tensor, options: RenderOptions, chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of K depth-sorted Gaussians over P pixels.

    pix [P, 2], means2d [K, 2], conics [K, 3], opacities [K], colors [K, 3], depths [K]
    -> rgb [P, 3], alpha [P], depth [P]
    """
    P = pix.shape[0]
    # `trans` is the running product of (1 - alpha) over *all* Gaussians so far, not only
    # the contributing ones: it is monotone, so "trans after Gaussian i > transmittance_min"
    # selects exactly the prefix gsplat composites before it stops, chunk after chunk.
    trans = torch.ones(P, dtype=pix.dtype, device=pix.device)
    rgb = pix.new_zeros(P, 3)
    alpha = pix.new_zeros(P)
    depth = pix.new_zeros(P)
    for start in range(0, means2d.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        d = pix[:, None, :] - means2d[None, chunk]  # [P, k, 2]
        a, b, c = conics[chunk].unbind(-1)
        power = -0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]
        g_alpha = (opacities[chunk] * torch.exp(power)).clamp(max=options.alpha_max)  # [P, k]
        g_alpha = torch.where(g_alpha >= options.alpha_min, g_alpha, torch.zeros_like(g_alpha))
        t_after = trans[:, None] * torch.cumprod(1 - g_alpha, dim=1)  # [P, k]
        t_before = torch.cat([trans[:, None], t_after[:, :-1]], dim=1)
        w = torch.where(t_after > options.transmittance_min, g_alpha * t_before, torch.zeros_like(g_alpha))
        rgb = rgb + w @ colors[chunk]
        alpha = alpha + w.sum(dim=1)
        depth = depth + w @ depths[chunk]
        trans = t_after[:, -1]
        if bool((trans <= options.transmittance_min).all()):
            break
    return rgb, alpha, depth


def make(device: torch.device, need_grad: bool) -> ReferenceRenderer:
    """The reference renderer runs anywhere (`engine.render.select`'s registry entry)."""
    return ReferenceRenderer()
