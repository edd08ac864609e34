"""The driven avatar as a webcam other programs can open (video calls): pyvirtualcam, which
writes to v4l2loopback on Linux and to OBS's virtual camera on macOS and Windows.

pyvirtualcam is optional (`pip install -e '.[virtualcam]'`) and needs such a device: on Linux
`sudo modprobe v4l2loopback devices=1 exclusive_caps=1`; on macOS/Windows, OBS installed once.
Both missing pieces are a `VirtualCameraError` that says what to do.
"""
from __future__ import annotations

import numpy as np

INSTALL = "pip install pyvirtualcam==0.15.0 (or: .venv/bin/pip install -e '.[virtualcam]')"
DEVICE_HELP = ("on Linux load v4l2loopback (sudo modprobe v4l2loopback devices=1 exclusive_caps=1); "
               "on macOS or Windows install OBS, whose virtual camera pyvirtualcam uses")


class VirtualCameraError(OSError):
    """No virtual camera: the package or the device is missing; the message says which (an
    OSError, so the command line prints it as one line)."""


class VirtualCamera:
    """Opens on the first frame (its size fixes the camera's) and sends RGB uint8 frames."""

    def __init__(self, fps: float, device: str | None = None) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise VirtualCameraError(f"virtual camera: pyvirtualcam is not installed; {INSTALL}") from None
        self._module, self.fps, self.device, self._cam = pyvirtualcam, fps, device, None
        self.frames = 0

    def send(self, rgb: np.ndarray) -> None:
        if self._cam is None:
            h, w = rgb.shape[:2]
            try:
                self._cam = self._module.Camera(width=w, height=h, fps=self.fps, device=self.device)
            except RuntimeError as e:
                raise VirtualCameraError(f"virtual camera: no device to send to ({e}); {DEVICE_HELP}") from None
        self._cam.send(np.ascontiguousarray(rgb))
        self.frames += 1

    @property
    def name(self) -> str | None:
        """The device in use (e.g. /dev/video2), once open."""
        return None if self._cam is None else self._cam.device

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None
