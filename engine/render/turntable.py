"""Offline rendering of an animated avatar to PNG and MP4 (the headless `render` command)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from engine.animate import AnimatedAvatar
from engine.camera import orbit_camera
from engine.expressions import apply_expressions
from engine.render.base import Renderer
from engine.types import HeadParams

SWEEP = ({"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}, {"jawOpen": 0.6}, {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
         {"browInnerUp": 1.0, "eyeWide_L": 1.0, "eyeWide_R": 1.0})


def _renderer(animated: AnimatedAvatar, prefer: str | None) -> Renderer:
    """A renderer for the device the avatar's head model is on."""
    from engine.render.select import select

    return select(animated.model.device, need_grad=False, prefer=prefer)


def render_array(animated: AnimatedAvatar, params: HeadParams, size: int = 512, view_yaw: float = 0.0,
                 view_pitch: float = 0.0, renderer: str | None = None):
    """The avatar on white as a uint8 [size, size, 3] numpy image; ``renderer`` names a backend
    (default: the best available, see `engine.render.select`)."""
    cam = orbit_camera(view_yaw, view_pitch, size=size)
    with torch.no_grad():
        return _renderer(animated, renderer).render(animated.gaussians(params.to(animated.model.device)),
                                                    cam.to(animated.model.device)).to_uint8()


def render_image(animated: AnimatedAvatar, params: HeadParams, out: Path, size: int = 512,
                 view_yaw: float = 0.0, view_pitch: float = 0.0, renderer: str | None = None) -> None:
    import imageio.v3 as iio

    from engine.atomic import atomic_path

    img = render_array(animated, params, size, view_yaw, view_pitch, renderer)
    with atomic_path(out) as tmp:
        iio.imwrite(tmp, img)


def render_turntable(animated: AnimatedAvatar, params: HeadParams, out: Path, size: int = 384, frames: int = 48,
                     fps: int = 24, renderer: str | None = None) -> None:
    """The camera swings ±40° around the head while the face runs through a few expressions."""
    import imageio.v3 as iio
    from tqdm import tqdm

    backend = _renderer(animated, renderer)
    images = []
    for i in tqdm(range(frames), desc=f"rendering {out.name}", unit="frame"):
        t = i / frames
        weights = SWEEP[int(t * len(SWEEP)) % len(SWEEP)]
        amount = math.sin(math.pi * ((t * len(SWEEP)) % 1.0))
        p = apply_expressions(params, animated.model, {k: v * amount for k, v in weights.items()})
        cam = orbit_camera(40.0 * math.sin(2 * math.pi * t), 5.0, size=size)
        with torch.no_grad():
            images.append(backend.render(animated.gaussians(p), cam.to(animated.model.device)).to_uint8())
    from engine.io.media import write_video

    write_video(out, images, fps)            # atomic: an earlier file at ``out`` survives a failure
