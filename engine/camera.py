"""Viewing cameras around a head."""
from __future__ import annotations

import math

from engine.types import Camera

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
