"""The drive controller: the avatar driven live from a webcam or the loaded video played like
one (the engine's `AvatarService.start_live`), its options, the camera preview with the tracked
landmarks, and the capture-to-screen latency."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App


class DriveController:
    def __init__(self, app: "App") -> None:
        self.app = app
        self.live = None                    # engine.drive.live.LiveDriver while driving
        self.latest_rgb: np.ndarray | None = None   # the newest camera frame while driving
        self._seq = -1                      # index of the last live frame posed
        self._shown: dict[int, object] = {}     # render request -> live frame, for the latency
        self._threads_before: int | None = None

    def set_option(self, name: str, value) -> None:
        """One of the Drive section's `DriveOptions`; the transfer switches and the smoothing
        apply to a running drive at once."""
        from engine.service import TransferConfig

        state = self.app.state
        state.drive = replace(state.drive, **{name: value})
        if self.live is None:
            return
        o = state.drive
        if name == "smoothing":
            self.live.set_smoothing(float(o.smoothing))
        elif name in ("relative", "head_pose", "gaze"):
            self.live.set_transfer(TransferConfig(relative=o.relative, head_pose=o.head_pose, gaze=o.gaze))

    def start(self) -> None:
        """Drive the avatar from the state's source: a camera or the loaded video played like one."""
        import torch

        from engine.service import TransferConfig, live_source

        app, o = self.app, self.app.state.drive
        if self.live is not None:
            app.status("already driving; Stop first", error=True)
            return
        if app.service.avatar is None:
            app.status("a .ply scene cannot be driven: open or build an avatar", error=True)
            return
        if o.source == "webcam":
            src = app.guard("webcam", lambda: live_source(webcam=o.device, mirror=o.mirror))
        elif app.state.video is None:
            app.status("load a video first (Open video... or drop one on the stage)", error=True)
            return
        else:
            src = app.guard("video", lambda: live_source(video=app.state.video))
        if src is None:
            return
        cfg = TransferConfig(relative=o.relative, head_pose=o.head_pose, gaze=o.gaze)
        # One torch thread while driving: tracking and rendering then each have a core (LiveDriver's note).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.live = app.service.start_live(src, cfg, o.smoothing)
        except Exception as e:  # noqa: BLE001 - a drive that cannot start is a message; the camera is let go
            torch.set_num_threads(threads)
            app.guard("close the source", src.close)
            app.status(f"drive: cannot start ({e})", error=True)
            return
        self._threads_before = threads
        self._seq = -1
        app.status(f"driving from {'camera ' + str(o.device) if o.source == 'webcam' else app.state.video.name}")

    def stop(self) -> None:
        if self.live is None:
            return
        import torch

        live, self.live = self.live, None
        live.stop()
        if self._threads_before:
            torch.set_num_threads(self._threads_before)
        self._shown.clear()
        self.app.status(f"driving stopped ({live.frames} frames)" + (f": {live.end_reason}" if live.end_reason else ""))

    def calibrate(self) -> None:
        if self.live is None:
            self.app.status("start driving first", error=True)
            return
        self.live.calibrate()
        self.app.status("calibrating: the next frame with a face is the driver's neutral")

    def poll(self) -> None:
        """Each UI frame: the newest driven parameters onto the avatar, the preview and the stats."""
        app, live = self.app, self.live
        if live is None:
            return
        if not live.running:
            self.stop()
            if live.error:
                app.status(f"driving failed: {live.error}", error=True)
            return
        frame = live.latest(after=self._seq)
        if frame is None:
            return
        self._seq = frame.index
        self.latest_rgb = frame.rgb
        app.service.set_params(frame.params)
        app.view.moved()                             # the preview follows the interactive size
        self._shown[app.renders.request()] = frame
        if frame.index % 3 == 0:                     # the preview at ~10 FPS is enough
            st = live.stats()
            text = (f"{st.get('fps', 0):.1f} FPS tracked | capture->screen {st.get('latency', 0):.0f} ms\n"
                    f"landmarks {st.get('landmarks', 0):.0f} | solve {st.get('solve', 0):.0f} | "
                    f"render {st.get('render', 0):.0f} ms" + ("" if frame.tracked.found else "\nno face: easing to neutral"))
            app.panel.update_camera(with_landmarks(frame.rgb, frame.tracked.landmarks), text)

    def shown(self, seq: int, seconds: float) -> None:
        """The render request ``seq`` reached the stage after ``seconds`` of rendering: tell the
        driver which of its frames that was, for the capture-to-screen latency."""
        if not self._shown:
            return
        answered = [s for s in self._shown if s <= seq]
        frame = self._shown[max(answered)] if answered else None
        if frame is not None and self.live is not None:
            self.live.displayed(frame, seconds * 1000)
        self._shown = {k: v for k, v in self._shown.items() if k > seq}


def with_landmarks(rgb: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """The camera frame with the tracked landmarks drawn as green dots."""
    if landmarks is None:
        return rgb
    out = rgb.copy()
    h, w = out.shape[:2]
    pts = np.round(landmarks[:, :2]).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    r = max(1, round(max(h, w) / 300))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[np.clip(pts[:, 1] + dy, 0, h - 1), np.clip(pts[:, 0] + dx, 0, w - 1)] = (60, 230, 90)
    return out
