"""The native backend: a multi-threaded C++/OpenMP tile rasterizer, forward and backward.

Why a torch C++ extension rather than numba: the hot loops are a branch-free per-pixel
body over 8-pixel chunks that gcc auto-vectorises (AVX2/AVX-512 via -march=native) with a
polynomial exp, tile-local state on the stack and OpenMP's dynamic schedule over tiles;
the extension also takes torch tensors without copies and needs no extra dependency
(numba is not in the pinned environment and would pin numpy/llvmlite). See
engine/native/rasterize.cpp for the algorithm and `python main.py bench render`
for the measured speed.

Everything runs in C++: projection (EWA, as engine/render/projection.py), a stable radix
sort by depth, binning into 16x16 tiles, compositing, and the backward of all of it. The
tile size of `RenderOptions` is ignored (results do not depend on it); every other option
is honoured. Gaussians with any non-finite field are skipped (the reference renders NaN
colours as NaN); opacities are expected in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.render.base import RenderOptions
from engine.native import NativeBuildError, available, load
from engine.render.projection import footprint_extent
from engine.types import Camera, Frame, Gaussians

__all__ = ["NativeRenderer", "NativeBuildError", "available"]


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                viewmat: Tensor, K: Tensor, settings: tuple) -> tuple[Tensor, Tensor, Tensor]:
        ext = load()
        rgb, alpha, depth, packed, offsets, ids, tfinal, last = ext.forward(
            means, quats, scales, opacities, colors, viewmat, K, *settings)
        if any(ctx.needs_input_grad[:5]):
            ctx.save_for_backward(means, quats, scales, packed, offsets, ids, tfinal, last, viewmat, K)
        ctx.settings = settings
        return rgb, alpha, depth

    @staticmethod
    def backward(ctx, g_rgb: Tensor, g_alpha: Tensor, g_depth: Tensor):
        means, quats, scales, packed, offsets, ids, tfinal, last, viewmat, K = ctx.saved_tensors
        dtype = means.dtype
        g_rgb, g_alpha, g_depth = (g.to(dtype).contiguous() for g in (g_rgb, g_alpha, g_depth))
        gm, gq, gs, go, gc = load().backward(means, quats, scales, packed, offsets, ids, tfinal, last,
                                             g_rgb, g_alpha, g_depth, viewmat, K, *ctx.settings)
        return gm, gq, gs, go, gc, None, None, None


@dataclass(frozen=True)
class NativeRenderer:
    """CPU tile rasterizer in C++/OpenMP (threads: ``torch.get_num_threads()``).

    Matches `ReferenceRenderer` to float rounding; float32 and float64 are supported.
    The first use compiles the extension (about a minute, cached per machine).
    """

    name: str = field(default="native", init=False)
    differentiable: bool = field(default=True, init=False)

    def render(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
        """See `engine.render.base.Renderer`."""
        means = gaussians.means
        if means.device.type != "cpu":
            raise ValueError(f"the native renderer runs on the CPU; got tensors on {means.device}")
        dtype = means.dtype if means.dtype in (torch.float32, torch.float64) else torch.float32
        fields = [t.to(dtype).contiguous() for t in
                  (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                   gaussians.colors.clamp(0, 1))]
        viewmat = camera.world_to_cam.detach().to("cpu", torch.float64)
        K = camera.K.detach().to("cpu", torch.float64)
        settings = (int(camera.width), int(camera.height), float(options.near), float(options.far),
                    float(options.eps2d), float(options.alpha_min), float(options.alpha_max),
                    float(options.transmittance_min), footprint_extent(options.alpha_min))
        rgb, alpha, depth = _Rasterize.apply(*fields, viewmat, K, settings)
        return Frame(rgb=rgb, alpha=alpha, depth=depth)


def make(device: torch.device, need_grad: bool) -> NativeRenderer:
    """The native renderer for ``device`` (`engine.render.select`'s registry entry): the CPU
    only, once its C++ code has compiled."""
    from engine.render.base import RendererUnavailable

    if device.type != "cpu":
        raise RendererUnavailable(f"the native renderer runs on the CPU, the device is {device}")
    try:
        load()
    except NativeBuildError as e:
        raise RendererUnavailable(str(e)) from e
    return NativeRenderer()
