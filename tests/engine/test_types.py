"""engine.types: shape checks, HeadParams layout, Camera conventions, Frame compositing."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from engine.types import JOINT_NAMES, Camera, Frame, Gaussians, HeadParams, UVGaussians, check_shape


def _params(batch: int = 2, n_shape: int = 4, n_expr: int = 5, seed: int = 0) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.randn(batch, n, generator=g)  # noqa: E731
    return HeadParams(r(n_shape), r(n_expr), r(3), r(3), r(3), r(6), r(3))


def _project(cam: Camera, point) -> torch.Tensor:
    """Pixel (u, v) of a world point by the pinhole formula K · (R p + t) / z."""
    p = torch.tensor(point, dtype=torch.float32)
    pc = cam.world_to_cam[:3, :3] @ p + cam.world_to_cam[:3, 3]
    uvw = cam.K @ pc
    return uvw[:2] / uvw[2]


def test_camera_pixels_is_the_pinhole_formula_for_each_point() -> None:
    cam = Camera.look_at((0.3, 0.1, 1.2), (0.0, 0.05, 0.0), width=320, height=240)
    points = [(0.0, 0.0, 0.0), (0.05, -0.02, 0.1), (-0.1, 0.08, -0.05)]
    expected = torch.stack([_project(cam, p) for p in points])
    torch.testing.assert_close(cam.pixels(torch.tensor(points)), expected)


# --- check_shape -----------------------------------------------------------------------------

def test_check_shape_accepts_matching_shape_with_wildcards() -> None:
    check_shape(torch.zeros(2, 7, 3), (2, None, 3), "x")  # no exception


@pytest.mark.parametrize("shape, want, msg", [
    ((2, 4), (2, 3), "foo must have shape [2, 3], got [2, 4]"),
    ((2, 3, 1), (None, 3), "foo must have shape [*, 3], got [2, 3, 1]"),
    ((5,), (None, None), "foo must have shape [*, *], got [5]"),
])
def test_check_shape_error_names_field_expected_and_actual_shapes(shape, want, msg) -> None:
    with pytest.raises(ValueError, match=re.escape(msg)):
        check_shape(torch.zeros(shape), want, "foo")


def test_check_shape_rejects_non_tensor_with_type_error_naming_field() -> None:
    with pytest.raises(TypeError, match=re.escape("foo must be a torch.Tensor, got ndarray")):
        check_shape(np.zeros((2, 3)), (2, 3), "foo")


# --- HeadParams ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, bad, msg", [
    ("expr", torch.zeros(3, 5), "HeadParams.expr must have shape [2, *], got [3, 5]"),
    ("rotation", torch.zeros(1, 3), "HeadParams.rotation must have shape [2, 3], got [1, 3]"),
    ("neck", torch.zeros(2, 4), "HeadParams.neck must have shape [2, 3], got [2, 4]"),
    ("jaw", torch.zeros(3, 3), "HeadParams.jaw must have shape [2, 3], got [3, 3]"),
    ("eyes", torch.zeros(2, 3), "HeadParams.eyes must have shape [2, 6], got [2, 3]"),
    ("translation", torch.zeros(4, 3), "HeadParams.translation must have shape [2, 3], got [4, 3]"),
])
def test_headparams_rejects_mismatched_batch_or_width_naming_field(field, bad, msg) -> None:
    kw = {f: getattr(_params(), f) for f in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")}
    kw[field] = bad
    with pytest.raises(ValueError, match=re.escape(msg)):
        HeadParams(**kw)


def test_headparams_rejects_one_dimensional_shape_field() -> None:
    p = _params()
    with pytest.raises(ValueError, match=re.escape("HeadParams.shape must have shape [*, *], got [4]")):
        HeadParams(torch.zeros(4), p.expr, p.rotation, p.neck, p.jaw, p.eyes, p.translation)


def test_headparams_rejects_numpy_shape_with_type_error_naming_field() -> None:
    p = _params()
    with pytest.raises(TypeError, match=re.escape("HeadParams.shape must be a torch.Tensor")):
        HeadParams(np.zeros((2, 4), np.float32), p.expr, p.rotation, p.neck, p.jaw, p.eyes, p.translation)


def test_convention_joint_names_are_flame_order() -> None:
    assert JOINT_NAMES == ("root", "neck", "jaw", "eye_L", "eye_R")


def test_full_pose_stacks_root_neck_jaw_left_eye_right_eye() -> None:
    p = _params()
    pose = p.full_pose()
    assert pose.shape == (2, 5, 3)
    want = torch.stack([p.rotation, p.neck, p.jaw, p.eyes[:, :3], p.eyes[:, 3:]], dim=1)
    assert_close(pose, want, rtol=0, atol=0)
    assert_close(pose[:, JOINT_NAMES.index("eye_L")], p.eyes[:, 0:3], rtol=0, atol=0)
    assert_close(pose[:, JOINT_NAMES.index("eye_R")], p.eyes[:, 3:6], rtol=0, atol=0)
    assert_close(pose[:, JOINT_NAMES.index("root")], p.rotation, rtol=0, atol=0)


def test_condition_is_concat_expr_jaw_neck_eyes_with_e_plus_12_dims() -> None:
    p = _params(n_expr=7)
    c = p.condition()
    assert c.shape == (2, 7 + 12)
    assert_close(c[:, :7], p.expr, rtol=0, atol=0)
    assert_close(c[:, 7:10], p.jaw, rtol=0, atol=0)
    assert_close(c[:, 10:13], p.neck, rtol=0, atol=0)
    assert_close(c[:, 13:19], p.eyes, rtol=0, atol=0)


def test_neutral_is_all_zero_with_requested_sizes_and_frame_slices_batch() -> None:
    n = HeadParams.neutral(n_shape=3, n_expr=4, batch=2)
    assert n.batch_size == 2
    assert (n.shape.shape, n.expr.shape, n.eyes.shape) == ((2, 3), (2, 4), (2, 6))
    assert_close(n.condition(), torch.zeros(2, 16), rtol=0, atol=0)
    p = _params(batch=3)
    f = p.frame(1)
    assert f.batch_size == 1
    assert_close(f.eyes, p.eyes[1:2], rtol=0, atol=0)
    assert_close(f.translation, p.translation[1:2], rtol=0, atol=0)


# --- Camera ----------------------------------------------------------------------------------

def test_convention_look_at_from_plus_z_world_x_projects_right_of_principal_point() -> None:
    cam = Camera.look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), fov_y_deg=14.0, width=512, height=512)
    f = 0.5 * 512 / math.tan(math.radians(14.0) / 2)
    # point (0.1, 0, 0) is 1 m in front of the camera, 0.1 m to the right
    assert_close(_project(cam, (0.1, 0.0, 0.0)), torch.tensor([256.0 + f * 0.1, 256.0]))


def test_convention_look_at_from_plus_z_world_up_projects_above_principal_point() -> None:
    cam = Camera.look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), fov_y_deg=14.0, width=512, height=512)
    f = 0.5 * 512 / math.tan(math.radians(14.0) / 2)
    # OpenCV y points down: world +y must land at a smaller pixel row
    assert_close(_project(cam, (0.0, 0.1, 0.0)), torch.tensor([256.0, 256.0 - f * 0.1]))


def test_look_at_intrinsics_match_fov_formula() -> None:
    cam = Camera.look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), fov_y_deg=30.0, width=640, height=480)
    f = 0.5 * 480 / math.tan(math.radians(30.0) / 2)
    assert_close(cam.K, torch.tensor([[f, 0.0, 320.0], [0.0, f, 240.0], [0.0, 0.0, 1.0]]))
    assert (cam.width, cam.height) == (640, 480)


@pytest.mark.parametrize("eye, target", [
    ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    ((0.3, 0.2, 1.0), (0.0, -0.01, -0.03)),
    ((-2.0, 0.5, -1.0), (0.1, 0.2, 0.3)),
])
def test_look_at_camera_z_axis_points_at_target_and_rotation_is_proper(eye, target) -> None:
    cam = Camera.look_at(eye, target)
    R = cam.world_to_cam[:3, :3]
    d = torch.tensor(target) - torch.tensor(eye)
    assert_close(R[2], d / d.norm())                          # third row = camera z in world
    assert_close(R @ R.T, torch.eye(3), atol=1e-6, rtol=0)
    assert_close(torch.linalg.det(R), torch.tensor(1.0))
    # the target sits on the optical axis at its distance
    pc = R @ torch.tensor(target) + cam.world_to_cam[:3, 3]
    assert_close(pc, torch.tensor([0.0, 0.0, float(d.norm())]), atol=1e-6, rtol=0)
    assert_close(cam.world_to_cam[3], torch.tensor([0.0, 0.0, 0.0, 1.0]), rtol=0, atol=0)


@pytest.mark.parametrize("eye", [(0.0, 0.0, 1.0), (0.3, -0.2, 0.9), (1.5, 2.0, -3.0)])
def test_camera_position_round_trips_look_at_eye(eye) -> None:
    cam = Camera.look_at(eye, (0.0, 0.0, 0.0))
    assert_close(cam.position, torch.tensor(eye), atol=1e-6, rtol=0)


def test_resized_scales_intrinsics_rows_and_keeps_pose() -> None:
    cam = Camera.look_at((0.2, 0.1, 1.0), (0.0, 0.0, 0.0), fov_y_deg=20.0, width=512, height=512)
    small = cam.resized(256, 128)
    sx, sy = 256 / 512, 128 / 512
    want = cam.K.clone()
    want[0] *= sx
    want[1] *= sy
    assert_close(small.K, want, rtol=0, atol=0)
    assert_close(small.K[:, 0:1], torch.tensor([[cam.K[0, 0] * sx], [0.0], [0.0]]))
    assert (small.width, small.height) == (256, 128)
    assert_close(small.world_to_cam, cam.world_to_cam, rtol=0, atol=0)
    assert_close(cam.K[0, 2], torch.tensor(256.0))  # original untouched
    p = (0.05, -0.03, 0.02)
    assert_close(_project(small, p), _project(cam, p) * torch.tensor([sx, sy]))


def test_camera_rejects_bad_shapes_and_sizes() -> None:
    with pytest.raises(ValueError, match=re.escape("Camera.world_to_cam must have shape [4, 4], got [3, 4]")):
        Camera(torch.eye(4)[:3], torch.eye(3), 8, 8)
    with pytest.raises(ValueError, match=re.escape("Camera.K must have shape [3, 3], got [3, 4]")):
        Camera(torch.eye(4), torch.zeros(3, 4), 8, 8)
    with pytest.raises(ValueError, match=re.escape("Camera size must be positive, got 0x8")):
        Camera(torch.eye(4), torch.eye(3), 0, 8)


# --- Frame -----------------------------------------------------------------------------------

def test_frame_to_uint8_composites_premultiplied_rgb_over_background() -> None:
    colour = torch.tensor([[[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]], [[0.3, 0.3, 0.3], [0.9, 0.8, 0.7]]])
    alpha = torch.tensor([[0.5, 1.0], [0.0, 0.25]])
    rgb = colour * alpha[..., None]                       # premultiplied
    frame = Frame(rgb, alpha, torch.zeros(2, 2))
    bg = (1.0, 0.0, 0.5)
    got = frame.to_uint8(bg)
    assert got.dtype == np.uint8 and got.shape == (2, 2, 3)
    img = rgb + (1 - alpha[..., None]) * torch.tensor(bg)
    want = torch.floor(img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    assert_close(torch.from_numpy(got), want, rtol=0, atol=0)
    # by hand: pixel (0, 0) = 0.5*(0.2,0.4,0.6) + 0.5*(1,0,0.5) = (0.6, 0.2, 0.55)
    assert got[0, 0].tolist() == [153, 51, 140]
    assert got[0, 1].tolist() == [255, 0, 128]            # opaque: rgb itself
    assert got[1, 0].tolist() == [255, 0, 128]            # empty: the background


def test_frame_to_uint8_default_background_is_white_and_clamps() -> None:
    rgb = torch.tensor([[[1.5, -0.2, 0.25]]])
    frame = Frame(rgb, torch.tensor([[0.8]]), torch.zeros(1, 1))
    # 1.5 + 0.2 -> 1 (clamped); -0.2 + 0.2 = 0; 0.25 + 0.2 = 0.45 -> 114.75 + 0.5 -> 115
    assert frame.to_uint8().tolist() == [[[255, 0, 115]]]


def test_frame_rejects_numpy_alpha_with_type_error_naming_field() -> None:
    with pytest.raises(TypeError, match=re.escape("Frame.alpha must be a torch.Tensor")):
        Frame(torch.zeros(2, 2, 3), np.zeros((2, 2), np.float32), torch.zeros(2, 2))


def test_frame_rejects_mismatched_shapes_naming_field() -> None:
    with pytest.raises(ValueError, match=re.escape("Frame.rgb must have shape [2, 3, 3], got [2, 3, 4]")):
        Frame(torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=re.escape("Frame.depth must have shape [2, 3], got [3, 2]")):
        Frame(torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=re.escape("Frame.alpha must have shape [*, *], got [2, 3, 1]")):
        Frame(torch.zeros(2, 3, 3), torch.zeros(2, 3, 1), torch.zeros(2, 3))


# --- Gaussians / UVGaussians -------------------------------------------------------------------

def _gauss_fields(n: int = 4) -> dict:
    return dict(means=torch.zeros(n, 3), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                scales=torch.ones(n, 3), opacities=torch.ones(n), colors=torch.zeros(n, 3))


def test_gaussians_accepts_consistent_fields_and_len_is_count() -> None:
    assert len(Gaussians(**_gauss_fields(4))) == 4


@pytest.mark.parametrize("field, bad, msg", [
    ("quats", torch.zeros(4, 3), "Gaussians.quats must have shape [4, 4], got [4, 3]"),
    ("scales", torch.zeros(5, 3), "Gaussians.scales must have shape [4, 3], got [5, 3]"),
    ("opacities", torch.zeros(4, 1), "Gaussians.opacities must have shape [4], got [4, 1]"),
    ("colors", torch.zeros(4, 4), "Gaussians.colors must have shape [4, 3], got [4, 4]"),
    ("means", torch.zeros(4, 2), "Gaussians.means must have shape [4, 3], got [4, 2]"),
])
def test_gaussians_rejects_wrong_shapes_naming_field(field, bad, msg) -> None:
    kw = _gauss_fields(4)
    kw[field] = bad
    with pytest.raises(ValueError, match=re.escape(msg)):
        Gaussians(**kw)


def _uv_fields(r: int = 4) -> dict:
    return dict(local_position=torch.zeros(3, r, r), rotation=torch.zeros(4, r, r), log_scale=torch.zeros(3, r, r),
                color=torch.zeros(3, r, r), opacity=torch.zeros(1, r, r), valid=torch.ones(r, r, dtype=torch.bool))


def test_uvgaussians_accepts_consistent_maps_and_reports_resolution() -> None:
    uvg = UVGaussians(**_uv_fields(4))
    assert uvg.resolution == 4
    assert list(uvg.maps()) == ["local_position", "rotation", "log_scale", "color", "opacity"]


@pytest.mark.parametrize("field, bad, msg", [
    ("rotation", torch.zeros(3, 4, 4), "UVGaussians.rotation must have shape [4, 4, 4], got [3, 4, 4]"),
    ("opacity", torch.zeros(4, 4), "UVGaussians.opacity must have shape [1, 4, 4], got [4, 4]"),
    ("color", torch.zeros(3, 4, 5), "UVGaussians.color must have shape [3, 4, 4], got [3, 4, 5]"),
    ("valid", torch.ones(4, 5, dtype=torch.bool), "UVGaussians.valid must have shape [4, 4], got [4, 5]"),
])
def test_uvgaussians_rejects_wrong_shapes_naming_field(field, bad, msg) -> None:
    kw = _uv_fields(4)
    kw[field] = bad
    with pytest.raises(ValueError, match=re.escape(msg)):
        UVGaussians(**kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_uvgaussians_rejects_non_bool_valid(dtype) -> None:
    kw = _uv_fields(4)
    kw["valid"] = torch.ones(4, 4, dtype=dtype)
    with pytest.raises(TypeError, match=re.escape(f"UVGaussians.valid must be bool, got {dtype}")):
        UVGaussians(**kw)
