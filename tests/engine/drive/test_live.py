"""The live loop's worker thread with a stub tracker (no camera, no mediapipe)."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from engine.drive.pipeline import DrivePipeline
from engine.drive.live import LiveDriver
from engine.drive.realtime import TrackedFrame
from engine.drive.sources import WebcamSource
from engine.drive.transfer import TransferConfig
from engine.types import HeadParams

NAMES = ("jawForward", "mouthSmile_L", "browInnerUp")


class StubTracker:
    """Reads the jaw angle from the frame's first pixel (value / 255); pixel 255 = no face."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.n, self.closed = fail_at, 0, False

    def track(self, rgb: np.ndarray) -> TrackedFrame:
        self.n += 1
        if self.fail_at is not None and self.n > self.fail_at:
            raise RuntimeError("tracker broke")
        v = int(rgb[0, 0, 0])
        p = dataclasses.replace(HeadParams.neutral(2, len(NAMES)), jaw=torch.tensor([[v / 255, 0.0, 0.0]]))
        return TrackedFrame(p, v != 255, None, 0.0 if v != 255 else math.nan, 1.0, 2.0)

    def close(self) -> None:
        self.closed = True


class Source:
    """Frames whose first pixel is ``values[i]``, every ``dt`` seconds."""

    def __init__(self, values, dt: float = 0.005) -> None:
        self.values, self.dt, self.origin, self.end_reason, self.closed = list(values), dt, None, None, False

    def __iter__(self):
        self.origin = time.perf_counter()
        for i, v in enumerate(self.values):
            time.sleep(self.dt)
            yield i * self.dt, np.full((4, 4, 3), v, np.uint8)
        self.end_reason = "end of test stream"

    def close(self) -> None:
        self.closed = True


def pipeline(relative: bool = False) -> DrivePipeline:
    return DrivePipeline(NAMES, HeadParams.neutral(2, len(NAMES)), TransferConfig(relative=relative), smoothing=0.0)


def wait(driver: LiveDriver, timeout: float = 10.0) -> None:
    t0 = time.perf_counter()
    while driver.running and time.perf_counter() - t0 < timeout:
        time.sleep(0.01)
    assert not driver.running


def test_frames_flow_and_the_end_is_reported():
    src, tr = Source([10, 20, 30, 40]), StubTracker()
    d = LiveDriver(src, tr, pipeline()).start()
    wait(d)
    f = d.latest()
    assert f.index == 3 and f.params.jaw[0, 0] == pytest.approx(40 / 255) and f.tracked.found
    assert f.captured_at == pytest.approx(src.origin + f.t)
    assert d.latest(after=3) is None
    assert d.end_reason == "end of test stream" and d.error is None and d.frames == 4
    assert src.closed and tr.closed
    s = d.stats()
    assert s["landmarks"] == 1.0 and s["solve"] == 2.0 and s["fps"] > 0
    d.displayed(f, render_ms=5.0)
    assert d.stats()["render"] == 5.0 and d.stats()["latency"] > 0


def test_calibrate_applies_to_the_next_frame_with_a_face():
    src = Source([50] * 20 + [255] * 5 + [100] * 200, dt=0.004)
    d = LiveDriver(src, StubTracker(), pipeline(relative=True)).start()
    while (f := d.latest()) is None or f.index < 22:
        time.sleep(0.002)
    d.calibrate()                                                # requested while the face is lost
    wait(d)
    assert d.pipeline.transfer.calibrated
    assert float(d.pipeline.transfer.driver_neutral.jaw[0, 0]) == pytest.approx(100 / 255)
    assert float(d.latest().params.jaw[0, 0]) == pytest.approx(0.0)


def test_stop_ends_the_worker():
    d = LiveDriver(Source([10] * 10_000), StubTracker(), pipeline()).start()
    time.sleep(0.05)
    d.stop()
    assert not d.running and d.end_reason == "stopped"


def test_a_tracker_error_stops_the_worker_without_raising():
    tr = StubTracker(fail_at=3)
    d = LiveDriver(Source([10] * 10), tr, pipeline()).start()
    wait(d)
    assert d.error == "RuntimeError: tracker broke" and "error" in d.end_reason and tr.closed
    assert d.latest().index == 2


def test_an_unplugged_camera_ends_the_loop_with_its_reason():
    class Unplugged:
        """cv2.VideoCapture stand-in: 6 good reads, then the camera is gone."""

        left = 6

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return True

        def set(self, prop, value):
            return True

        def get(self, prop):
            return 0.0

        def read(self):
            self.left -= 1
            return (True, np.zeros((4, 4, 3), np.uint8)) if self.left >= 0 else (False, None)

        def release(self):
            pass

    cam = WebcamSource(0, opener=lambda i: Unplugged(), max_failures=2)
    d = LiveDriver(cam, StubTracker(), pipeline()).start()
    wait(d)
    assert d.frames == 6 and "camera 0 stopped delivering frames" in d.end_reason and d.error is None


def test_stop_ends_a_worker_stuck_in_a_camera_read():
    """A V4L2 read that never returns kept the worker (and the camera) after Stop; closing the
    capture under it ends the read."""
    import threading

    class Stuck:
        def __init__(self):
            self.reads, self.released = 0, threading.Event()

        def isOpened(self):
            return True

        def set(self, *a):
            return True

        def get(self, prop):
            return 30.0

        def read(self):
            self.reads += 1
            if self.reads <= 2:
                return True, np.full((4, 4, 3), 10, np.uint8)
            self.released.wait()                      # blocks until the capture is released
            return False, None

        def release(self):
            self.released.set()

    cap = Stuck()
    d = LiveDriver(WebcamSource(0, opener=lambda i: cap), StubTracker(), pipeline()).start()
    t0 = time.perf_counter()
    while cap.reads < 3 and time.perf_counter() - t0 < 5:
        time.sleep(0.01)
    assert cap.reads == 3 and d.running                 # the worker is inside the stuck read
    assert d.stop(timeout=0.2) and not d.running
    assert cap.released.is_set() and time.perf_counter() - t0 < 5
