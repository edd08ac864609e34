"""Frame sources for live driving: a video file or a webcam, as (timestamp, frame) streams.

Both iterate over ``(t, rgb)``: ``t`` seconds since the source's ``origin`` (a
`time.perf_counter` value) at which the frame was captured, ``rgb`` uint8 [H, W, 3]. Neither
raises once iteration has started: when the stream ends, iteration stops and ``end_reason``
says why ("end of video", "camera 0 stopped delivering frames ...").
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import cv2
import numpy as np

from engine.io.media import MediaError, VideoReader

FrameItem = tuple[float, np.ndarray]


class CameraError(MediaError):
    """A camera could not be opened or delivers no frames; the message is ``"camera <index>: <problem>"``."""

    def __init__(self, index: int, problem: str) -> None:
        self.index = index
        super().__init__(f"camera {index}", problem)


class VideoSource:
    """The frames of a video file.

    ``realtime`` paces them to the video's frame rate, the way a camera delivers them: frame i
    is released at ``origin + i / fps``, and a consumer that falls behind gets the newest frame
    (older ones are skipped and counted in ``dropped``), so a video can stand in for a webcam.
    Otherwise every frame is yielded as fast as it decodes. Either way ``t = i / fps``, and
    ``index`` is the index of the frame yielded last. Opening raises `MediaError` for a missing
    or unreadable file."""

    def __init__(self, path: str | os.PathLike, realtime: bool = False, max_frames: int | None = None,
                 max_side: int = 2048) -> None:
        self._reader = VideoReader(path, max_side=max_side)
        self.path = self._reader.path
        self.fps = self._reader.fps
        self.size = self._reader.size                      # (width, height)
        self.n_frames = self._reader.n_frames
        self.realtime = realtime
        self.max_frames = max_frames
        self.origin: float | None = None
        self.index = -1
        self.dropped = 0
        self.end_reason: str | None = None

    def __iter__(self) -> Iterator[FrameItem]:
        return self

    def _read(self) -> np.ndarray | None:
        if self.max_frames is not None and self.index + 1 >= self.max_frames:
            self.end_reason = f"{self.path}: stopped after {self.max_frames} frames (max_frames)"
            return None
        try:
            rgb = next(self._reader)
        except StopIteration:
            self.end_reason = f"{self.path}: end of video"
            return None
        self.index += 1
        return rgb

    def __next__(self) -> FrameItem:
        if self.end_reason is not None:
            raise StopIteration
        if self.origin is None:
            self.origin = time.perf_counter()
        rgb = self._read()
        if rgb is None:
            self.close()
            raise StopIteration
        if self.realtime:
            # Skip the frames a camera would already have replaced, then wait for this one's time.
            while time.perf_counter() - self.origin > (self.index + 1) / self.fps:
                newer = self._read()
                if newer is None:
                    break
                rgb, self.dropped = newer, self.dropped + 1
            wait = self.origin + self.index / self.fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        return self.index / self.fps, rgb

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        self._reader.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WebcamSource:
    """Frames of a camera through OpenCV (``cv2.VideoCapture(index)``), as RGB.

    ``width`` and ``height`` are requested; the camera may deliver another size (``size`` holds
    what it delivers). ``mirror`` flips frames left-right (a selfie view). Opening raises
    `CameraError` naming the index when there is no camera there, or it delivers no frame.
    A camera that stops delivering for a moment (USB cameras do) is read again for up to
    ``stall_s`` seconds; when it delivers nothing for that long (unplugged, taken by another
    program), or for ``max_failures`` reads in a row when that is given, iteration ends and
    ``end_reason`` says so. ``opener`` replaces
    ``cv2.VideoCapture`` (another backend, or a fake in tests)."""

    def __init__(self, index: int = 0, width: int = 640, height: int = 480, fps: float | None = None,
                 mirror: bool = False, max_failures: int | None = None, opener: Callable[[int], object] | None = None,
                 stall_s: float = 3.0) -> None:
        self.index = index
        self.mirror = mirror
        self.max_failures = max_failures
        self.stall_s = stall_s
        self.end_reason: str | None = None
        self.origin: float | None = None
        self.frames = 0
        try:
            self._cap = (opener or cv2.VideoCapture)(index)
        except cv2.error as e:
            raise CameraError(index, f"cannot open ({e.err})") from None
        if not self._cap.isOpened():
            self._cap.release()
            self._cap = None
            raise CameraError(index, "no camera at this index (or it is in use by another program)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        first = self._grab()
        if first is None:
            self.close()
            raise CameraError(index, "opened, but delivers no frames")
        self._pending: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if reported > 0 else None

    def _grab(self) -> np.ndarray | None:
        """One frame as RGB, or None once reads have failed for ``stall_s`` seconds (or
        ``max_failures`` times) in a row."""
        t0, failed = time.monotonic(), 0
        while True:
            cap = self._cap
            if cap is None:             # closed from another thread (`LiveDriver.stop`)
                return None
            try:
                ok, bgr = cap.read()
            except cv2.error:
                ok, bgr = False, None
            if ok and bgr is not None and bgr.size:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
                return np.ascontiguousarray(rgb[:, ::-1]) if self.mirror else rgb
            failed += 1
            if (self.max_failures is not None and failed >= self.max_failures) or \
                    time.monotonic() - t0 >= self.stall_s:
                return None
            time.sleep(min(0.01 * failed, 0.1))

    def __iter__(self) -> Iterator[FrameItem]:
        return self

    def __next__(self) -> FrameItem:
        if self._cap is None:
            raise StopIteration
        if self._pending is not None:
            rgb, self._pending = self._pending, None
        else:
            rgb = self._grab()
        now = time.perf_counter()
        if rgb is None:
            self.end_reason = (f"camera {self.index} stopped delivering frames after {self.frames} "
                               f"(unplugged, or taken by another program)")
            self.close()
            raise StopIteration
        if self.origin is None:
            self.origin = now
        self.frames += 1
        return now - self.origin, rgb

    def close(self) -> None:
        """Release the camera (safe to call twice); iteration then ends."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self.end_reason is None:
            self.end_reason = f"camera {self.index} closed"

    def __enter__(self) -> "WebcamSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
