"""The stage's view: orbit, pan and zoom around the head, driven by mouse deltas."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engine.camera import DEFAULT_DISTANCE, DEFAULT_FOV_Y, HEAD_TARGET
from engine.types import Camera

DEG_PER_PIXEL = 0.4            # orbit speed of a drag
ZOOM_PER_STEP = 0.9            # distance factor of one scroll step (in)
PITCH_LIMIT = 85.0
DISTANCE_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class OrbitView:
    """A camera on a sphere around ``HEAD_TARGET + pan``. yaw (+) shows the subject's left side,
    pitch (+) looks from above; pan is in metres along the camera's right and up axes."""

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = DEFAULT_DISTANCE
    fov_y: float = DEFAULT_FOV_Y
    pan: tuple[float, float] = (0.0, 0.0)

    def axes(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """(offset of the eye from the target as a unit vector, camera right, camera up) in world axes."""
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        d = (math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y))
        right = (math.cos(y), 0.0, -math.sin(y))
        up = (-math.sin(p) * math.sin(y), math.cos(p), -math.sin(p) * math.cos(y))
        return d, right, up

    def target(self) -> tuple[float, float, float]:
        _, right, up = self.axes()
        return tuple(HEAD_TARGET[i] + self.pan[0] * right[i] + self.pan[1] * up[i] for i in range(3))

    def camera(self, width: int, height: int | None = None) -> Camera:
        d, _, _ = self.axes()
        t = self.target()
        eye = tuple(t[i] + self.distance * d[i] for i in range(3))
        return Camera.look_at(eye, t, fov_y_deg=self.fov_y, width=width, height=height or width)

    def orbit(self, dx_px: float, dy_px: float) -> "OrbitView":
        """Drag by (dx, dy) pixels: the head turns with the mouse (right drag shows its right side)."""
        pitch = min(PITCH_LIMIT, max(-PITCH_LIMIT, self.pitch + dy_px * DEG_PER_PIXEL))
        return replace(self, yaw=(self.yaw - dx_px * DEG_PER_PIXEL + 180) % 360 - 180, pitch=pitch)

    def pan_by(self, dx_px: float, dy_px: float, height_px: int) -> "OrbitView":
        """Drag by (dx, dy) pixels: the point at the target's depth under the cursor follows it."""
        metres = 2 * self.distance * math.tan(math.radians(self.fov_y) / 2) / height_px
        return replace(self, pan=(self.pan[0] - dx_px * metres, self.pan[1] + dy_px * metres))

    def zoom(self, steps: float) -> "OrbitView":
        """Scroll ``steps`` (+ = in)."""
        lo, hi = DISTANCE_RANGE
        return replace(self, distance=min(hi, max(lo, self.distance * ZOOM_PER_STEP ** steps)))
