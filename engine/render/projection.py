"""EWA projection of 3D Gaussians to screen-space 2D Gaussians, in pure differentiable torch.

Follows gsplat's `_fully_fused_projection` (pinhole camera) so that results agree with
gsplat to float precision; tests/engine/render/test_projection.py pins this.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.render.base import RenderOptions
from engine.rotations import quat_to_rotmat
from engine.types import Camera, Gaussians


@dataclass(frozen=True)
class Projected:
    """Gaussians projected to the image of one camera. N = number of Gaussians.

    Culled Gaussians keep their slot (so indices match the input) with ``radii == 0``
    and ``visible == False``; their other values are meaningless.
    """

    means2d: Tensor  # [N, 2] pixels; pixel (x, y) covers [x, x+1) x [y, y+1)
    conics: Tensor   # [N, 3] upper triangle (a, b, c) of the inverse 2D covariance
    cov2d: Tensor    # [N, 2, 2] pixel², eps2d already added
    depths: Tensor   # [N] camera-space z, metres
    radii: Tensor    # [N] int32 pixel radius of the square bounding the footprint, 0 = culled
    visible: Tensor  # [N] bool


def covariance3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances R S S^T R^T.

    quats: [N, 4] wxyz, scales: [N, 3]  ->  [N, 3, 3]
    """
    M = quat_to_rotmat(quats) * scales[:, None, :]  # R @ diag(s)
    return M @ M.transpose(-1, -2)


def _perspective_jacobian(means_c: Tensor, z: Tensor, camera: Camera, K: Tensor) -> Tensor:
    """Jacobian of the pinhole projection at each camera-space mean (EWA's local affine map).

    x/z and y/z are clamped to 0.3 tan(fov/2) beyond the image border, exactly like
    gsplat's `_persp_proj`: far off-screen Gaussians would otherwise get huge, skewed
    footprints that smear across the image.
    means_c: [N, 3], z: [N] (nonzero), K: [3, 3]  ->  [N, 2, 3]
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    w, h = camera.width, camera.height
    tan_x, tan_y = 0.5 * w / fx, 0.5 * h / fy
    u = (means_c[:, 0] / z).clamp(min=-(cx / fx + 0.3 * tan_x), max=(w - cx) / fx + 0.3 * tan_x)
    v = (means_c[:, 1] / z).clamp(min=-(cy / fy + 0.3 * tan_y), max=(h - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    return torch.stack([fx / z, zero, -fx * u / z, zero, fy / z, -fy * v / z], dim=-1).reshape(-1, 2, 3)


def eigen_ratio(cov2d: Tensor) -> Tensor:
    """λmax/λmin of 2D covariances [N, 2, 2] (closed form; λmin clamped at 1e-12): the squared
    screen-space aspect of each splat."""
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    mid, rad = (a + c) / 2, torch.sqrt(((a - c) / 2) ** 2 + b * b + 1e-12)
    return (mid + rad) / (mid - rad).clamp_min(1e-12)


def footprint_extent(alpha_min: float) -> float:
    """Mahalanobis distance beyond which a Gaussian of opacity <= 1 has alpha < alpha_min.

    sqrt(2 ln(1 / alpha_min)) = 3.33 for 1/255: gsplat's "3.33 sigma". A plain 3 sigma
    would drop visible contributions (alpha up to 0.011) at the footprint's rim.
    """
    return math.sqrt(2.0 * math.log(1.0 / alpha_min))


def project_gaussians(gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Projected:
    """Project ``gaussians`` into ``camera``; differentiable w.r.t. means, quats and scales.

    A Gaussian is culled when its centre is not strictly between the near and far
    planes, or when its bounding square lies entirely outside the image.
    """
    dtype, device = gaussians.means.dtype, gaussians.means.device
    view = camera.world_to_cam.to(device=device, dtype=dtype)
    K = camera.K.to(device=device, dtype=dtype)

    means_c = gaussians.means @ view[:3, :3].T + view[:3, 3]  # [N, 3]
    cov_c = view[:3, :3] @ covariance3d(gaussians.quats, gaussians.scales) @ view[:3, :3].T  # [N, 3, 3]
    depths = means_c[:, 2]
    in_depth = (depths > options.near) & (depths < options.far)
    # Culled Gaussians divide by 1 instead of z: z can be 0 there, and a NaN would leak
    # into the gradients of everything through the masked-out branch.
    z = torch.where(in_depth, depths, torch.ones_like(depths))

    means2d = (means_c @ K[:2].T) / z[:, None]  # [N, 2]; unclamped, unlike the Jacobian
    J = _perspective_jacobian(means_c, z, camera, K)
    cov2d = J @ cov_c @ J.transpose(-1, -2) + options.eps2d * torch.eye(2, dtype=dtype, device=device)
    a, b, c = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det = a * c - b * b  # > 0: cov2d is PSD plus eps2d * I
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    with torch.no_grad():
        # One radius for both axes: the square of half-side extent * max(sigma_x, sigma_y)
        # contains every pixel where alpha >= alpha_min, so binning by it loses nothing.
        sigma = torch.maximum(a, c).clamp(min=0).sqrt()
        radii = torch.ceil(footprint_extent(options.alpha_min) * sigma)
        mx, my = means2d[:, 0], means2d[:, 1]
        inside = (mx + radii > 0) & (mx - radii < camera.width) & (my + radii > 0) & (my - radii < camera.height)
        visible = in_depth & inside
        radii = torch.where(visible, radii, torch.zeros_like(radii)).to(torch.int32)
    return Projected(means2d, conics, cov2d, depths, radii, visible)
