"""project_gaussians: agreement with gsplat's pure-torch projection, and convention pins."""
from __future__ import annotations

import math

import pytest
import torch

from engine.render.projection import Projected, project_gaussians
from engine.render.base import RenderOptions
from engine.render.projection import covariance3d, footprint_extent, quat_to_rotmat
from engine.types import Camera, Gaussians


def _camera(width: int = 64, height: int = 48, fx: float = 50.0, fy: float = 55.0,
            cx: float = 30.0, cy: float = 25.0, world_to_cam: torch.Tensor | None = None) -> Camera:
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return Camera(torch.eye(4) if world_to_cam is None else world_to_cam, K, width, height)


def _gaussians(means, quats=None, scales=None) -> Gaussians:
    means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 3)
    n = means.shape[0]
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1) if quats is None else quats
    scales = torch.full((n, 3), 0.05) if scales is None else scales
    return Gaussians(means, quats, scales, torch.full((n,), 0.5), torch.full((n, 3), 0.5))


def _random_scene(n: int, seed: int) -> tuple[Gaussians, Camera]:
    """Gaussians around the origin seen by a rotated, translated camera 3 m away.

    Some means are spread wide enough to land off-screen (exercising the Jacobian clamp)
    and some behind the camera.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.6, 1.5])
    quats = torch.randn(n, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    scales = torch.rand(n, 3, generator=g) * 0.08 + 0.005
    gaussians = Gaussians(means, quats, scales, torch.rand(n, generator=g), torch.rand(n, 3, generator=g))
    cam = Camera.look_at(eye=(0.8, -0.5, 3.0), target=(0.0, 0.0, 0.0), fov_y_deg=30.0, width=64, height=48)
    return gaussians, cam


def test_covariance_matches_gsplat() -> None:
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    gaussians, _ = _random_scene(100, seed=0)
    quats = gaussians.quats * 1.7  # both normalise the quaternion
    want, _ = _quat_scale_to_covar_preci(quats, gaussians.scales, compute_preci=False)
    torch.testing.assert_close(covariance3d(quats, gaussians.scales), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_gsplat(seed: int) -> None:
    # gsplat.cuda._torch_impl imports on CPU without building the CUDA extension (that
    # is only compiled lazily by gsplat.cuda._backend on the first fused-kernel call).
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    gaussians, cam = _random_scene(300, seed)
    opts = RenderOptions()
    ours = project_gaussians(gaussians, cam, opts)
    covars, _ = _quat_scale_to_covar_preci(gaussians.quats, gaussians.scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        gaussians.means, covars, cam.world_to_cam[None], cam.K[None], cam.width, cam.height,
        eps2d=opts.eps2d, near_plane=opts.near, far_plane=opts.far)

    in_depth = (depths[0] > opts.near) & (depths[0] < opts.far)
    assert int((~in_depth).sum()) > 0 and int(in_depth.sum()) > 100  # the scene exercises both
    torch.testing.assert_close(ours.depths, depths[0])
    torch.testing.assert_close(ours.means2d[in_depth], means2d[0][in_depth])
    torch.testing.assert_close(ours.conics[in_depth], conics[0][in_depth])
    # gsplat bins by a per-axis 3.33-sigma box, we by its bounding square, so only
    # Gaussians gsplat sees can differ: ours is a superset.
    gs_visible = (radii[0] > 0).all(dim=-1)
    assert int((gs_visible & ~ours.visible).sum()) == 0
    assert int((ours.radii[gs_visible] - radii[0][gs_visible].amax(dim=-1)).abs().max()) <= 1


def test_projected_shapes() -> None:
    gaussians, cam = _random_scene(7, seed=3)
    p = project_gaussians(gaussians, cam)
    assert isinstance(p, Projected)
    assert [list(t.shape) for t in (p.means2d, p.conics, p.cov2d, p.depths, p.radii, p.visible)] == \
        [[7, 2], [7, 3], [7, 2, 2], [7], [7], [7]]
    assert (p.radii.dtype, p.visible.dtype) == (torch.int32, torch.bool)


def test_quat_to_rotmat_is_wxyz() -> None:
    half = math.pi / 4  # 90 degrees about +z
    R = quat_to_rotmat(torch.tensor([[1.0, 0, 0, 0], [math.cos(half), 0, 0, math.sin(half)]]))
    torch.testing.assert_close(R[0], torch.eye(3))
    torch.testing.assert_close(R[1] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1.0, 0.0]))


def test_centre_lands_on_principal_point() -> None:
    p = project_gaussians(_gaussians([0.0, 0.0, 2.0]), _camera())
    torch.testing.assert_close(p.means2d[0], torch.tensor([30.0, 25.0]))
    torch.testing.assert_close(p.depths[0], torch.tensor(2.0))


def test_opencv_axes() -> None:
    # Identity camera: world = camera, x right, y down, z forward.
    p = project_gaussians(_gaussians([[0.2, 0.0, 2.0], [0.0, 0.2, 2.0]]), _camera())
    torch.testing.assert_close(p.means2d[0], torch.tensor([30.0 + 50.0 * 0.1, 25.0]))  # right of centre
    torch.testing.assert_close(p.means2d[1], torch.tensor([30.0, 25.0 + 55.0 * 0.1]))  # below centre


def test_isotropic_footprint() -> None:
    # sigma_px = f s / z; cov2d = sigma_px^2 + eps2d on the diagonal.
    cam = _camera(fx=50.0, fy=50.0)
    p = project_gaussians(_gaussians([0.0, 0.0, 2.0], scales=torch.full((1, 3), 0.08)), cam)
    var = (50.0 * 0.08 / 2.0) ** 2 + 0.3
    torch.testing.assert_close(p.cov2d[0], torch.eye(2) * var)
    torch.testing.assert_close(p.conics[0], torch.tensor([1 / var, 0.0, 1 / var]))
    assert int(p.radii[0]) == math.ceil(footprint_extent(1 / 255) * math.sqrt(var)) == 7  # 3.33 * 2.07 = 6.9


def test_culling() -> None:
    cam = _camera()
    means = [[0.0, 0.0, -1.0],    # behind the camera
             [0.0, 0.0, 0.005],   # closer than near
             [0.0, 0.0, 200.0],   # beyond far
             [5.0, 0.0, 1.0],     # far right of the image
             [0.0, -5.0, 1.0],    # far above the image
             [0.0, 0.0, 1.0]]     # in view
    p = project_gaussians(_gaussians(means), cam)
    assert p.visible.tolist() == [False, False, False, False, False, True]
    assert p.radii.tolist()[:5] == [0, 0, 0, 0, 0]
    assert int(p.radii[5]) > 0
    assert bool(torch.isfinite(p.means2d).all())


def test_gradients_reach_means_quats_scales() -> None:
    gaussians, cam = _random_scene(20, seed=4)
    leaves = [t.clone().requires_grad_(True) for t in (gaussians.means, gaussians.quats, gaussians.scales)]
    p = project_gaussians(Gaussians(*leaves, gaussians.opacities, gaussians.colors), cam)
    (p.means2d.sum() + p.conics.sum()).backward()
    for leaf in leaves:
        assert bool(torch.isfinite(leaf.grad).all())
        assert float(leaf.grad.abs().sum()) > 0.0
