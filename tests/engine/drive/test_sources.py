"""Frame sources: a video file (as fast as it decodes, or paced like a camera) and a webcam (faked)."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from engine.drive.sources import CameraError, VideoSource, WebcamSource
from engine.io.media import MediaError, write_video

FPS = 25.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 frames, 64², frame i a flat grey of 20 i."""
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    write_video(path, [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(10)], FPS)
    return path


def grey(rgb: np.ndarray) -> int:
    return round(float(rgb.mean()) / 20)


def test_video_source_yields_every_frame_with_its_time(clip):
    src = VideoSource(clip)
    items = list(src)
    assert [grey(f) for _, f in items] == list(range(10))
    assert [t for t, _ in items] == pytest.approx(np.arange(10) / FPS)
    assert items[0][1].dtype == np.uint8 and items[0][1].shape == (64, 64, 3)
    assert "end of video" in src.end_reason and src.dropped == 0 and src.size == (64, 64)


def test_max_frames_stops_early(clip):
    src = VideoSource(clip, max_frames=4)
    assert len(list(src)) == 4 and "max_frames" in src.end_reason


def test_realtime_paces_to_the_frame_rate(clip):
    src = VideoSource(clip, realtime=True)
    t0 = time.perf_counter()
    for t, _ in src:
        assert time.perf_counter() - src.origin >= t - 1e-3        # never released before its time
    assert time.perf_counter() - t0 >= 9 / FPS - 0.01


def test_realtime_skips_frames_a_slow_consumer_missed(clip):
    src = VideoSource(clip, realtime=True)
    seen = []
    for t, rgb in src:
        seen.append(grey(rgb))
        time.sleep(2.5 / FPS)                                      # a loop that runs at 10 FPS
    assert seen[0] == 0 and seen == sorted(seen) and len(seen) < 10 and src.dropped == 10 - len(seen)
    assert seen[-1] >= 8


def test_a_missing_video_is_a_media_error(tmp_path):
    with pytest.raises(MediaError, match="nope.mp4"):
        VideoSource(tmp_path / "nope.mp4")


class FakeCapture:
    """cv2.VideoCapture stand-in: ``frames`` good reads, then the camera is gone."""

    def __init__(self, frames: int, opened: bool = True) -> None:
        self.left, self.opened, self.props, self.released = frames, opened, {}, False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def set(self, prop, value) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :8, 2] = 255                                         # red on the left (BGR)
        return True, img

    def release(self) -> None:
        self.released = True


def test_webcam_frames_are_rgb_timed_and_mirrorable():
    cap = FakeCapture(3)
    cam = WebcamSource(2, width=320, height=240, opener=lambda i: cap)
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 320 and cam.size == (64, 48) and cam.fps == 30.0
    t, rgb = next(cam)
    assert t == 0.0 and rgb[0, 0].tolist() == [255, 0, 0]
    mirrored = next(iter(WebcamSource(0, mirror=True, opener=lambda i: FakeCapture(1))))[1]
    assert mirrored[0, -1].tolist() == [255, 0, 0]


def test_webcam_unplugged_mid_stream_ends_the_loop_with_a_reason():
    cap = FakeCapture(5)
    cam = WebcamSource(1, opener=lambda i: cap, max_failures=3)
    frames = [rgb for _, rgb in cam]                               # no exception reaches the loop
    assert len(frames) == 5
    assert "camera 1 stopped delivering frames" in cam.end_reason and cap.released
    assert list(cam) == []


def test_a_camera_that_stalls_for_a_second_keeps_the_stream():
    """Reads that fail for about a second (a USB hiccup) are waited out; the loop gave up after
    ~150 ms before."""
    class Stalling(FakeCapture):
        def __init__(self):
            super().__init__(10)
            self.reads, self.stall_until = 0, None

        def read(self):
            self.reads += 1
            if self.reads == 4 and self.stall_until is None:
                self.stall_until = time.monotonic() + 1.0
            if self.stall_until is not None and time.monotonic() < self.stall_until:
                return False, None
            return super().read()

    cam = WebcamSource(0, opener=lambda i: Stalling(), stall_s=1.5)
    assert len([rgb for _, rgb in cam]) == 10
    assert "stopped delivering frames after 10" in cam.end_reason


def test_no_camera_at_an_index_is_an_error_naming_it():
    with pytest.raises(CameraError, match="camera 7: no camera at this index"):
        WebcamSource(7, opener=lambda i: FakeCapture(0, opened=False))
    with pytest.raises(CameraError, match="camera 3: opened, but delivers no frames"):
        WebcamSource(3, opener=lambda i: FakeCapture(0), max_failures=3)
    assert issubclass(CameraError, MediaError)


def test_a_real_missing_camera_index_is_an_error():
    with pytest.raises(CameraError, match="camera 97"):
        WebcamSource(97)
