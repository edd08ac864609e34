"""engine.camera.orbit_camera: placement on the orbit sphere, aim at the target, image centre."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from engine.camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y, HEAD_TARGET, orbit_camera
from engine.types import Camera


def _project(cam: Camera, point) -> torch.Tensor:
    p = torch.as_tensor(point, dtype=torch.float32)
    pc = cam.world_to_cam[:3, :3] @ p + cam.world_to_cam[:3, 3]
    uvw = cam.K @ pc
    return uvw[:2] / uvw[2]


def _target() -> torch.Tensor:
    return torch.tensor(HEAD_TARGET)


def test_orbit_front_view_sits_on_plus_z_of_target_looking_at_it() -> None:
    cam = orbit_camera(0.0, 0.0)
    assert_close(cam.position, _target() + torch.tensor([0.0, 0.0, DEFAULT_DISTANCE]), atol=1e-6, rtol=0)
    assert_close(cam.world_to_cam[2, :3], torch.tensor([0.0, 0.0, -1.0]))   # camera z = -world z
    assert_close(cam.world_to_cam[0, :3], torch.tensor([1.0, 0.0, 0.0]))    # subject's left on the right
    assert_close(cam.world_to_cam[1, :3], torch.tensor([0.0, -1.0, 0.0]))   # image down = world down


def test_orbit_yaw_90_sits_on_plus_x_subjects_left() -> None:
    cam = orbit_camera(90.0, 0.0, distance=1.2)
    assert_close(cam.position, _target() + torch.tensor([1.2, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert_close(cam.world_to_cam[2, :3], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("pitch", [15.0, 45.0, -30.0])
def test_orbit_pitch_raises_the_eye_on_the_sphere(pitch: float) -> None:
    d = 0.8
    cam = orbit_camera(0.0, pitch, distance=d)
    p = math.radians(pitch)
    assert_close(cam.position, _target() + torch.tensor([0.0, d * math.sin(p), d * math.cos(p)]), atol=1e-6, rtol=0)
    fwd = (_target() - cam.position) / d
    assert_close(cam.world_to_cam[2, :3], fwd, atol=1e-6, rtol=0)


@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (35.0, 10.0), (-120.0, -40.0), (180.0, 5.0)])
def test_orbit_general_position_formula_and_target_at_image_centre(yaw: float, pitch: float) -> None:
    d, size = 0.9, 256
    cam = orbit_camera(yaw, pitch, distance=d, size=size)
    y, p = math.radians(yaw), math.radians(pitch)
    offset = torch.tensor([d * math.cos(p) * math.sin(y), d * math.sin(p), d * math.cos(p) * math.cos(y)])
    assert_close(cam.position, _target() + offset, atol=1e-6, rtol=0)
    assert_close(_project(cam, HEAD_TARGET), torch.tensor([size / 2, size / 2]), atol=1e-3, rtol=0)
    assert_close(torch.linalg.det(cam.world_to_cam[:3, :3]), torch.tensor(1.0))


def test_orbit_intrinsics_and_custom_target() -> None:
    cam = orbit_camera(20.0, 10.0, size=300, fov_y_deg=30.0, target=(0.1, 0.2, 0.3))
    f = 0.5 * 300 / math.tan(math.radians(30.0) / 2)
    assert_close(cam.K, torch.tensor([[f, 0.0, 150.0], [0.0, f, 150.0], [0.0, 0.0, 1.0]]))
    assert (cam.width, cam.height) == (300, 300)
    assert_close(_project(cam, (0.1, 0.2, 0.3)), torch.tensor([150.0, 150.0]), atol=1e-3, rtol=0)
    default = orbit_camera()
    f0 = 0.5 * 512 / math.tan(math.radians(DEFAULT_FOV_Y) / 2)
    assert_close(default.K[1, 1], torch.tensor(f0))


@pytest.mark.parametrize("pitch", [90.0, -90.0])
def test_orbit_pitch_at_pole_gives_finite_camera_looking_straight_at_target(pitch: float) -> None:
    cam = orbit_camera(0.0, pitch, distance=0.9)
    assert bool(torch.isfinite(cam.world_to_cam).all())
    sign = 1.0 if pitch > 0 else -1.0
    assert_close(cam.world_to_cam[2, :3], torch.tensor([0.0, -sign, 0.0]), atol=1e-6, rtol=0)
    R = cam.world_to_cam[:3, :3]
    assert_close(R @ R.T, torch.eye(3), atol=1e-6, rtol=0)
    assert_close(_project(cam, HEAD_TARGET), torch.tensor([256.0, 256.0]), atol=1e-3, rtol=0)
