"""engine.rotations: wxyz convention, quaternion <-> matrix, Hamilton product, Rodrigues."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from engine.rotations import axis_angle_to_rotmat, quat_multiply, quat_to_rotmat, rotmat_to_quat


def _random_quats(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def _rot_axis(axis: int, theta: float) -> torch.Tensor:
    """Elementary rotation matrix about world axis 0/1/2 by theta (right-hand rule)."""
    c, s = math.cos(theta), math.sin(theta)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


@pytest.mark.parametrize("theta", [0.3, math.pi / 2, 2.0])
def test_convention_quaternion_component_order_is_w_x_y_z(theta: float) -> None:
    q = torch.tensor([math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)], dtype=torch.float64)
    R = quat_to_rotmat(q)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert_close(R @ x, torch.tensor([math.cos(theta), math.sin(theta), 0.0], dtype=torch.float64))
    assert_close(R, _rot_axis(2, theta))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_quat_to_rotmat_matches_elementary_rotation_about_each_axis(axis: int) -> None:
    theta = 0.7
    q = torch.zeros(4, dtype=torch.float64)
    q[0], q[1 + axis] = math.cos(theta / 2), math.sin(theta / 2)
    assert_close(quat_to_rotmat(q), _rot_axis(axis, theta))


def test_quat_to_rotmat_normalises_input_and_keeps_batch_shape() -> None:
    q = _random_quats(12, seed=1).reshape(3, 4, 4)
    R = quat_to_rotmat(q)
    assert R.shape == (3, 4, 3, 3)
    assert_close(quat_to_rotmat(q * 3.7), R)
    assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(3, 4, 3, 3))
    assert_close(torch.linalg.det(R), torch.ones(3, 4, dtype=torch.float64))


def test_rotmat_to_quat_round_trips_random_rotations() -> None:
    q = _random_quats(2000, seed=2)
    R = quat_to_rotmat(q)
    q2 = rotmat_to_quat(R)
    assert_close(quat_to_rotmat(q2), R)
    assert_close(q2.norm(dim=-1), torch.ones(2000, dtype=torch.float64))
    assert bool((q2[:, 0] >= 0).all())
    # the same quaternion up to the sign ambiguity q ~ -q (w >= 0 chosen)
    assert_close(q2, q * torch.where(q[:, :1] < 0, -1.0, 1.0))


def test_rotmat_to_quat_float32_round_trip() -> None:
    q = _random_quats(500, seed=3).float()
    R = quat_to_rotmat(q)
    assert_close(quat_to_rotmat(rotmat_to_quat(R)), R, atol=1e-6, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotmat_to_quat_half_turn_about_each_axis(axis: int) -> None:
    R = _rot_axis(axis, math.pi)
    q = rotmat_to_quat(R)
    want = torch.zeros(4, dtype=torch.float64)
    want[1 + axis] = 1.0
    # w = 0 here, so either sign is a valid answer: compare up to sign and via matrices
    assert_close(q * torch.sign(q[1 + axis]), want, atol=1e-12, rtol=0)
    assert_close(quat_to_rotmat(q), R, atol=1e-12, rtol=0)


def test_rotmat_to_quat_half_turns_about_random_axes_and_near_half_turns() -> None:
    g = torch.Generator().manual_seed(4)
    k = torch.randn(200, 3, generator=g, dtype=torch.float64)
    k = k / k.norm(dim=-1, keepdim=True)
    R_half = 2 * k[:, :, None] * k[:, None, :] - torch.eye(3, dtype=torch.float64)   # R = 2kk^T - I
    assert_close(quat_to_rotmat(rotmat_to_quat(R_half)), R_half)
    near = axis_angle_to_rotmat(k * (math.pi - 1e-4))
    assert_close(quat_to_rotmat(rotmat_to_quat(near)), near)


def test_rotmat_to_quat_of_identity_is_unit_w() -> None:
    assert_close(rotmat_to_quat(torch.eye(3)), torch.tensor([1.0, 0.0, 0.0, 0.0]), rtol=0, atol=0)
    assert rotmat_to_quat(torch.eye(3).expand(2, 5, 3, 3)).shape == (2, 5, 4)


def test_quat_multiply_matrix_equals_product_of_matrices() -> None:
    a, b = _random_quats(300, seed=5), _random_quats(300, seed=6)
    assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b))
    # unit inputs give a unit product, and the order matters (apply b, then a)
    assert_close(quat_multiply(a, b).norm(dim=-1), torch.ones(300, dtype=torch.float64))


def test_quat_multiply_identity_and_known_product() -> None:
    q = _random_quats(5, seed=7)
    one = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).expand(5, 4)
    assert_close(quat_multiply(one, q), q)
    assert_close(quat_multiply(q, one), q)
    i, j, k = (torch.eye(4, dtype=torch.float64)[n] for n in (1, 2, 3))
    assert_close(quat_multiply(i, j), k)          # Hamilton: ij = k
    assert_close(quat_multiply(j, i), -k)


def test_axis_angle_to_rotmat_matches_smplx_batch_rodrigues() -> None:
    from smplx.lbs import batch_rodrigues

    g = torch.Generator().manual_seed(8)
    aa = torch.randn(500, 3, generator=g) * 1.5
    assert_close(axis_angle_to_rotmat(aa), batch_rodrigues(aa), atol=1e-6, rtol=0)


def test_axis_angle_to_rotmat_zero_vector_is_identity() -> None:
    R = axis_angle_to_rotmat(torch.zeros(4, 3))
    assert_close(R, torch.eye(3).expand(4, 3, 3), rtol=0, atol=0)


def test_axis_angle_to_rotmat_equals_quaternion_of_same_axis_angle() -> None:
    g = torch.Generator().manual_seed(9)
    aa = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    theta = aa.norm(dim=-1, keepdim=True)
    q = torch.cat([torch.cos(theta / 2), torch.sin(theta / 2) * aa / theta], -1)
    R = axis_angle_to_rotmat(aa)
    assert R.shape == (2, 50, 3, 3)
    assert_close(R, quat_to_rotmat(q))
