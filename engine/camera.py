"""Viewing cameras around a head, and the tracker's camera model (`project`): head-model space
seen by a pinhole camera on the head's +z axis, what every tracked portrait and frame carries."""
from __future__ import annotations

import math

import numpy as np
import torch

from torch import Tensor

from engine.types import Camera

FLIP = torch.tensor([1.0, -1.0, -1.0])   # head-model axes -> OpenCV camera axes

HEAD_TARGET = (0.0, -0.01, -0.03)   # a point inside the head, between the ears
DEFAULT_DISTANCE = 0.9
DEFAULT_FOV_Y = 20.0


def orbit_camera(yaw_deg: float = 0.0, pitch_deg: float = 0.0, distance: float = DEFAULT_DISTANCE,
                 size: int = 512, fov_y_deg: float = DEFAULT_FOV_Y, target=HEAD_TARGET) -> Camera:
    """A camera on a sphere around ``target``: yaw turns it to the subject's left (+), pitch
    raises it (+). At yaw = pitch = 0 it looks at the face from the front."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    eye = (target[0] + distance * math.cos(p) * math.sin(y), target[1] + distance * math.sin(p),
           target[2] + distance * math.cos(p) * math.cos(y))
    return Camera.look_at(eye, target, fov_y_deg=fov_y_deg, width=size, height=size)


def shrunk_size(width: int, height: int, longer_side: int) -> tuple[int, int] | None:
    """(width, height) with the longer side scaled down to ``longer_side``; None when it is no larger."""
    s = longer_side / max(width, height)
    return (round(width * s), round(height * s)) if s < 1 else None


def tracker_camera(K: np.ndarray, size: tuple[int, int], longer_side: int) -> Camera:
    """The tracker's camera (origin, looking down -z) for a frame, scaled so its longer side is
    at most ``longer_side``."""
    h, w = size
    cam = Camera(torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])), torch.tensor(K, dtype=torch.float32), w, h)
    small = shrunk_size(w, h, longer_side)
    return cam.resized(*small) if small else cam


def project(points: Tensor, focal: Tensor, image_size: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels [N, L, 2] and camera depth [N, L] of head-space points [N, L, 3]; focal [N] or
    scalar, image_size [N, 2] (height, width)."""
    pc = points * FLIP.to(points.device)
    z = pc[..., 2].clamp_min(1e-3)
    f = focal.reshape(-1, 1)
    uv = torch.stack([f * pc[..., 0] / z + image_size[:, 1:2] / 2, f * pc[..., 1] / z + image_size[:, 0:1] / 2], -1)
    return uv, z
