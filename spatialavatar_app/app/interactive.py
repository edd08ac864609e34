"""The render size while the user drags, orbits or drives: reduced to hold the frame rate,
full again once the input is still.

`InteractiveScale` is a small controller without a window: the app calls `touch` on every
input that re-renders, `scale` when it sets the camera, `observe` with the avatar frame rate
it measured, and `settle` each frame, which says when to render at full size again. The scale
(per side, of the panel's render resolution) never goes below `MIN_SCALE` (half the display
size per side); the stage upscales the smaller picture to the same area. The picture at rest
is always the full-resolution render.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_SCALE = 0.5
"""Never below half the display size per side."""


@dataclass
class InteractiveScale:
    target_fps: float = 25.0        # the avatar frame rate to hold while the input moves
    still_seconds: float = 0.25     # no input for this long: back to full size
    step: float = 0.85              # a scale change per adjustment (per side)
    adjust_seconds: float = 0.5     # how often the frame rate is compared with the target
    enabled: bool = True            # off: always full size (recordings)

    def __post_init__(self) -> None:
        self.current = 1.0          # the scale of the interactive renders (kept between interactions)
        self.moving = False
        self._last_input = -1e9
        self._last_adjust = -1e9

    def touch(self, now: float) -> None:
        """An input that re-renders (a slider, an orbit, a live-drive frame) happened at ``now``."""
        if not self.moving:
            self._last_adjust = now     # judge the frame rate only after a full period of motion
        self.moving = True
        self._last_input = now

    def scale(self) -> float:
        """The scale to render at now."""
        return self.current if (self.moving and self.enabled) else 1.0

    def observe(self, now: float, avatar_fps: float) -> None:
        """Adjust the interactive scale from the avatar frame rate measured while moving: smaller
        when below the target, larger when comfortably above it."""
        if not (self.moving and self.enabled) or now - self._last_adjust < self.adjust_seconds:
            return
        self._last_adjust = now
        if avatar_fps < self.target_fps:
            self.current = max(MIN_SCALE, self.current * self.step)
        elif avatar_fps > 1.2 * self.target_fps:
            self.current = min(1.0, self.current / self.step)

    def settle(self, now: float) -> bool:
        """True once, when the input has been still for ``still_seconds`` after moving: the app
        then renders at full size."""
        if self.moving and now - self._last_input >= self.still_seconds:
            self.moving = False
            return self.current < 1.0 and self.enabled
        return False


def scaled_size(height: int, aspect: float, scale: float) -> tuple[int, int]:
    """(width, height) of a render ``height`` px tall at ``scale`` with the stage's ``aspect``
    (width / height); even sizes, at least 2 px."""
    h = max(2, round(height * max(MIN_SCALE, min(1.0, scale)) / 2) * 2)
    w = max(2, round(h * aspect / 2) * 2)
    return w, h
