import math

import numpy as np
import pytest
import torch

from engine.camera import HEAD_TARGET, orbit_camera
from spatialavatar_app.app.orbit import DISTANCE_RANGE, PITCH_LIMIT, OrbitView


def project(cam, point) -> np.ndarray:
    p = cam.world_to_cam[:3, :3] @ torch.tensor(point, dtype=torch.float32) + cam.world_to_cam[:3, 3]
    uv = cam.K @ (p / p[2])
    return uv[:2].numpy()


def test_the_default_view_is_the_default_orbit_camera():
    a, b = OrbitView().camera(512), orbit_camera(size=512)
    torch.testing.assert_close(a.world_to_cam, b.world_to_cam)
    torch.testing.assert_close(a.K, b.K)


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (35, 10), (-120, -40)])
def test_pan_moves_the_target_with_the_cursor(yaw, pitch):
    view = OrbitView(yaw=yaw, pitch=pitch)
    before = project(view.camera(400), HEAD_TARGET)
    after = project(view.pan_by(30, -12, 400).camera(400), HEAD_TARGET)
    np.testing.assert_allclose(after - before, [30, -12], atol=1e-2)


def test_dragging_right_shows_the_subjects_right_side():
    view = OrbitView().orbit(50, 0)
    eye = view.camera(256).position
    assert view.yaw < 0 and float(eye[0]) < HEAD_TARGET[0]      # the subject's right is -x


def test_pitch_is_limited_and_yaw_wraps():
    assert OrbitView().orbit(0, 10_000).pitch == PITCH_LIMIT
    assert OrbitView().orbit(0, -10_000).pitch == -PITCH_LIMIT
    assert -180 <= OrbitView(yaw=170).orbit(-100, 0).yaw < 180


def test_zoom_scales_distance_within_range():
    v = OrbitView(distance=1.0)
    assert v.zoom(1).distance == pytest.approx(0.9)
    assert v.zoom(-1).distance == pytest.approx(1 / 0.9)
    assert v.zoom(1000).distance == DISTANCE_RANGE[0]
    assert v.zoom(-1000).distance == DISTANCE_RANGE[1]


def test_orbit_keeps_distance_to_the_target():
    v = OrbitView(pan=(0.02, -0.01)).orbit(123, 45)
    cam = v.camera(256)
    eye = cam.position
    assert math.dist(eye.tolist(), v.target()) == pytest.approx(v.distance, rel=1e-5)
