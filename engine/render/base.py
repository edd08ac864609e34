"""The renderer interface: options shared by every renderer and the `Renderer` protocol.

Every renderer follows gsplat's 3D Gaussian splatting conventions (EWA projection,
front-to-back alpha compositing, the same thresholds), so the pure-torch reference and
a fast backend can be swapped and compared pixel for pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.types import Camera, Frame, Gaussians


class RendererUnavailable(RuntimeError):
    """The requested backend cannot run here (missing module, no CUDA, failed build, ...)."""


@dataclass(frozen=True)
class RenderOptions:
    """Settings of projection and compositing. Defaults are the original 3DGS code's (gsplat fixes
    alpha_max at 0.999 and cannot change it; its backend warns when these ask otherwise)."""

    near: float = 0.01
    """Gaussians whose centre has camera z <= near (metres) are culled."""
    far: float = 100.0
    """Gaussians whose centre has camera z >= far (metres) are culled."""
    eps2d: float = 0.3
    """Low-pass filter: pixel² added to the diagonal of every 2D covariance."""
    tile_size: int = 16
    """Side of the square screen tiles (pixels) Gaussians are binned into."""
    alpha_min: float = 1 / 255
    """A Gaussian contributes nothing to a pixel where its alpha is below this."""
    alpha_max: float = 0.99
    """Per-Gaussian alpha is clamped to this, so no single Gaussian is fully opaque."""
    transmittance_min: float = 1e-4
    """A pixel stops compositing before the Gaussian that would take its transmittance to or below this."""


@runtime_checkable
class Renderer(Protocol):
    """Renders world-space Gaussians seen by a camera into a `Frame`.

    The returned frame holds, per pixel, with w_i = alpha_i * prod_{j<i} (1 - alpha_j)
    over the Gaussians sorted front to back:

    - ``rgb = sum_i w_i c_i``: premultiplied by alpha, no background (colours are
      clamped to [0, 1] first, as 3DGS clamps its DC colour);
    - ``alpha = sum_i w_i = 1 - T_final``: accumulated opacity;
    - ``depth = sum_i w_i z_i``: alpha-weighted camera-space z, **not normalised**,
      like ``rgb``; it is 0 where empty and ``depth / alpha`` is the expected depth.
      Keeping it unnormalised makes it composite like colour and avoids a division
      that is unstable where alpha is small.

    When ``differentiable`` is true, gradients of the frame flow to every field of
    `Gaussians` (means, quats, scales, opacities, colors); they are zero where a
    threshold of `RenderOptions` clips a contribution.
    """

    name: str
    """Short identifier (``"reference"``, ``"gsplat"``, ...)."""
    differentiable: bool
    """Whether `render` supports autograd back to the Gaussians."""

    def render(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
        """Render ``gaussians`` from ``camera``; tensors stay on the Gaussians' device and dtype."""
        ...
