"""`python main.py drive [--avatar AVATAR] --video DRIVER.mp4 --out out.mp4`: cross-reenactment;
`--webcam N`: live from a camera into the MP4 until Ctrl-C."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from engine.render.backends import BackendName
from spatialavatar_app.cmd_shared import OnDevice, Source, check_render_size


@dataclass
class Drive(OnDevice):
    """Drive an avatar with another video's face (offline cross-reenactment) or live from a webcam
    (recorded to --out until Ctrl-C or --max-frames). The driver is tracked frame by frame in real-time mode (warm-started, bounded solves), its
    expression and pose are transferred (relative to its own neutral by default, so its identity
    does not leak into the avatar), smoothed (One-Euro) and rendered. Prints per-stage timings."""

    source: Annotated[Source, tyro.conf.OmitArgPrefixes] = Source()
    video: Optional[Path] = None
    """The driving video."""
    webcam: Optional[int] = None
    """Drive live from this camera (OpenCV index), recording to --out until Ctrl-C or --max-frames."""
    mirror: bool = False
    """--webcam: flip the camera image left-right (a selfie view)."""
    virtual_camera: bool = False
    """Also send the driven avatar to a virtual webcam for video calls (pyvirtualcam, optional:
    pip install -e '.[virtualcam]'; on Linux it needs the v4l2loopback module, elsewhere OBS)."""
    out: Path = Path("out/driven.mp4")
    """The MP4 to write."""
    absolute: bool = False
    """Copy the driver's raw parameters instead of its change from its neutral (relative, the default)."""
    head_pose: bool = True
    """Turn the avatar's head with the driver's; --no-head-pose keeps it still (expressions only)."""
    gaze: bool = True
    """Move the avatar's eyes with the driver's; --no-gaze keeps them looking ahead."""
    gain_jaw: float = 1.0
    """Scale of the jaw motion."""
    gain_brows: float = 1.0
    """Scale of brow motion."""
    gain_eyes: float = 1.0
    """Scale of blinks and squints."""
    gain_mouth: float = 1.0
    """Scale of mouth shapes (smile, pucker, ...)."""
    smoothing: float = 0.5
    """One-Euro smoothing strength in [0, 1] (0: none)."""
    size: int = 256
    """Render size (square), pixels."""
    side_by_side: bool = False
    """Put the driver's frame left of the avatar in the output."""
    realtime: bool = False
    """Pace the video like a camera and skip frames the loop is too slow for (measures live behaviour);
    tracking then runs on a worker thread beside rendering, as in the app."""
    max_frames: Optional[int] = None
    """Stop after this many driver frames."""
    renderer: Optional[BackendName] = None
    """Renderer backend; automatic when omitted."""
    save_track: Optional[Path] = None
    """Also write the avatar's parameters of every driven frame here (.npz, with the driver's frame
    rate as its `fps` array): `export --web PAGE.html --track FILE` plays them in the web page."""

    def run(self) -> None:
        from engine.drive.transfer import TransferConfig

        if (self.video is None) == (self.webcam is None):
            raise ValueError("give a driver: --video DRIVER.mp4 or --webcam INDEX")
        check_render_size("--size", self.size)
        driver = self.video
        if self.webcam is not None:
            from engine.drive.sources import WebcamSource

            driver = WebcamSource(self.webcam, mirror=self.mirror)    # CameraError names a missing camera
            print(f"camera {self.webcam}: {driver.size[0]}x{driver.size[1]}; driving live into {self.out} "
                  "(Ctrl-C stops)", file=sys.stderr)
        service = self.source.service(self.compute_device(), self.renderer)
        cfg = TransferConfig(relative=not self.absolute, head_pose=self.head_pose, gaze=self.gaze,
                             gain_jaw=self.gain_jaw, gain_brows=self.gain_brows, gain_eyes=self.gain_eyes,
                             gain_mouth=self.gain_mouth)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.save_track is not None:
            from engine.io import check_writable

            check_writable(self.save_track)
        vcam = None
        if self.virtual_camera:
            from engine.drive.virtualcam import VirtualCamera

            vcam = VirtualCamera(fps=getattr(driver, "fps", None) or 30.0)   # VirtualCameraError: one line
        try:
            stats = service.drive_video(driver, self.out, transfer=cfg, smoothing=self.smoothing,
                                        size=self.size, side_by_side_driver=self.side_by_side, realtime=self.realtime,
                                        max_frames=self.max_frames,
                                        progress=lambda i, n: print(f"\r{i}/{n} frames", end="", file=sys.stderr),
                                        on_frame=vcam.send if vcam is not None else None)
        finally:
            sent = (vcam.frames, vcam.name) if vcam is not None else None
            if vcam is not None:
                vcam.close()
        print(file=sys.stderr)
        print(stats.table())
        if self.save_track is not None and stats.driven is not None:
            import numpy as np

            from engine.io.params import save_params

            fps = getattr(driver, "fps", None) or _video_fps(self.video)
            save_params(stats.driven, self.save_track, fps=np.array([fps], np.float32))
            print(f"wrote {self.save_track} ({stats.driven.batch_size} frames at {fps:.3g} FPS)")
        for n in stats.notes:
            print(f"note: {n}")
        if sent:
            print(f"sent {sent[0]} frames to the virtual camera {sent[1]}")
        print(f"wrote {self.out} ({'relative' if cfg.relative else 'absolute'} transfer)")


def _video_fps(path) -> float:
    """The frame rate of the video at ``path`` (25 when it does not say)."""
    from engine.io.media import VideoReader

    with VideoReader(path) as v:
        return float(v.fps or 25.0)
