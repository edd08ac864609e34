"""The export/record controller: a transparent PNG of the stage, a .ply at the current pose, the
avatar bundle, the avatar as a web page and MP4 recordings, each to a new file in the export
folder (never over one)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialavatar_app.app.stage import BACKGROUND

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App


class ExportController:
    def __init__(self, app: "App") -> None:
        self.app = app
        self.recorder = None                # spatialavatar_app.app.recorder.Recorder while recording
        self._camera_width = 0              # > 0: recordings put the camera (this wide) left of the avatar

    def set_folder(self, text: str) -> None:
        self.app.state.export_dir = Path(text).expanduser()

    def new_path(self, stem: str, suffix: str) -> Path | None:
        """A new file in the export folder (``stem-DATE-TIME[-N]suffix``: never an existing one),
        or None with an error line when the folder cannot be made."""
        folder = self.app.state.export_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.app.status(f"export folder {folder}: cannot be created ({e.strerror or e})", error=True)
            return None
        base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = folder / f"{base}{suffix}", 2
        while path.exists():
            path, n = folder / f"{base}-{n}{suffix}", n + 1
        return path

    def screenshot(self) -> Path | None:
        """The frame on stage as an RGBA PNG (transparent background), at full size."""
        app = self.app
        f = app.last_frame
        if f is None:
            app.status("nothing on stage yet", error=True)
            return None
        if not app.view.full_size(app.shown_size):                   # an interactive-size frame
            f = app.guard("screenshot", lambda: app.service.render(app.view.full_camera()))
            if f is None:
                return None

        def write():
            import imageio.v3 as iio

            from engine.atomic import atomic_path

            a = f.alpha.cpu().clamp(0, 1)[..., None]
            rgb = (f.rgb.cpu() / a.clamp_min(1e-6)).clamp(0, 1) * (a > 0)
            rgba = (np.concatenate([rgb.numpy(), a.numpy()], -1) * 255 + 0.5).astype(np.uint8)
            path = self.new_path("screenshot", ".png")
            if path is not None:
                with atomic_path(path) as tmp:
                    iio.imwrite(tmp, rgba)
            return path
        path = app.guard("screenshot", write)
        if path is not None:
            app.status(f"wrote {path}")
        return path

    def export_ply(self) -> None:
        self._write("export .ply", ".ply", self.app.service.export_ply)

    def save_avatar(self) -> None:
        self._write("save avatar", ".savatar", self.app.service.save)

    def export_web(self) -> None:
        """The avatar as one self-contained web page (sliders, presets, ARKit tracks; WebGL2)."""
        self._write("export web page", ".html", self.app.service.export_web)

    def _write(self, name: str, suffix: str, writer) -> None:
        """``writer(path)`` on the job thread, to a new ``avatar-…suffix`` in the export folder."""
        path = self.new_path("avatar", suffix)
        if path is not None:
            self.app.start_job(name, lambda r: writer(path), f"writing {path} ...",
                               lambda _: self.app.status(f"wrote {path}"))

    def toggle_recording(self) -> None:
        from spatialavatar_app.app.recorder import Recorder

        app = self.app
        if self.recorder is None:
            path = self.new_path("recording", ".mp4")
            if path is None:
                return
            self._camera_width = 0
            camera = app.driving.latest_rgb
            if app.driving.live is not None and camera is not None and app.last_frame is not None \
                    and app.state.drive.record_camera:
                h = app.last_frame.alpha.shape[0]
                ch, cw = camera.shape[:2]
                self._camera_width = max(2, round(cw * h / ch / 2) * 2)
            self.recorder = app.guard("record", lambda: Recorder(path))
            if self.recorder is not None:
                app.view.push_view()                   # recordings are full size: no interactive scale
                if app.frames_shown and app.view.full_size(app.shown_size):
                    self.record(time.perf_counter(), self.stage_image(app.last_frame))
                app.panel.update_recording(True)
                app.status(f"recording to {path} ...")
            return
        rec, self.recorder = self.recorder, None
        app.panel.update_recording(False)
        path = app.guard("recording", rec.stop)
        if path is not None:
            app.status(f"wrote {path} ({rec.frames} frames at {rec.fps:.0f} FPS)")

    def record(self, now: float, image: np.ndarray | None) -> None:
        """The recorder's tick; a failed encoder ends the recording with a red line (what it wrote
        before the failure is not kept: the file is replaced only when complete)."""
        try:
            self.recorder.tick(now, image)
        except OSError as e:
            self.recorder = None
            self.app.panel.update_recording(False)
            self.app.status(str(e), error=True)

    def stage_image(self, frame) -> np.ndarray:
        """What a recording shows: the avatar on the stage background, with the camera frame to
        its left when recording started while driving with "with the camera" on (black once the
        camera stops)."""
        image = frame.to_uint8(BACKGROUND)
        if not self._camera_width:
            return image
        import cv2

        h = image.shape[0]
        cam = np.zeros((h, self._camera_width, 3), np.uint8)
        camera = self.app.driving.latest_rgb
        if self.app.driving.live is not None and camera is not None:
            cam = cv2.resize(camera, (self._camera_width, h), interpolation=cv2.INTER_AREA)
        return np.concatenate([cam, image], 1)
