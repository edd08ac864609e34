"""The app's two-stage render thread, with a fake service: every request ends in a picture of
the newest state, stale requests are skipped, posing frame n+1 overlaps rasterising frame n,
and failures become an error message."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.types import Frame
from spatialavatar_app.app.render_thread import RenderThread


class FakeService:
    """``pose`` returns the current state value; ``rasterize`` paints it into a 2x2 frame."""

    def __init__(self, block_raster_until_next_pose: bool = False) -> None:
        self.value = 0.0
        self.posed: list[float] = []
        self.rastered: list[float] = []
        self.next_pose = threading.Event()
        self.overlapped = 0
        self.block = block_raster_until_next_pose
        self.fail_pose = False

    def pose(self):
        if self.fail_pose:
            raise RuntimeError("no head model")
        self.posed.append(self.value)
        self.next_pose.set()
        time.sleep(0.01)
        return self.value, None

    def rasterize(self, value, camera) -> Frame:
        self.next_pose.clear()
        if self.block and self.next_pose.wait(0.5):       # a pose started while this frame rasterises
            self.overlapped += 1
        self.rastered.append(value)
        return Frame(rgb=torch.full((2, 2, 3), value), alpha=torch.ones(2, 2), depth=torch.ones(2, 2))


def wait_idle(rt: RenderThread, timeout: float = 5.0) -> None:
    t0 = time.perf_counter()
    while not rt.idle:
        assert time.perf_counter() - t0 < timeout, "the render thread did not finish"
        time.sleep(0.005)


def test_the_newest_state_is_rendered_and_stale_requests_are_skipped():
    svc = FakeService()
    rt = RenderThread(svc)
    try:
        for k in range(1, 21):          # 20 requests far faster than a render
            svc.value = k / 20
            last = rt.request()
        wait_idle(rt)
        out = rt.take()
        assert out is not None and out.seq == last
        assert float(out.frame.rgb[0, 0, 0]) == 1.0 and out.rgba[0, 0, 0] == 255
        assert rt.take() is None                          # taken once
        assert len(svc.rastered) < 20                     # in-between states were skipped...
        assert svc.rastered[-1] == 1.0                    # ...never the newest
        assert svc.posed == svc.rastered                  # nothing posed was dropped
    finally:
        rt.stop()


def test_posing_the_next_frame_overlaps_rasterising_this_one():
    svc = FakeService(block_raster_until_next_pose=True)
    rt = RenderThread(svc)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.5:            # a slider dragged: a new state every UI frame
            svc.value += 1
            rt.request()
            rt.take()
            time.sleep(0.005)
        wait_idle(rt)
        # each raster waits (up to 0.5 s) for the next pose to start; in a serial loop none would
        assert svc.overlapped >= 3 and svc.overlapped >= len(svc.rastered) - 2
    finally:
        rt.stop()


def test_a_failing_pose_is_an_error_message_and_the_thread_goes_idle():
    svc = FakeService()
    svc.fail_pose = True
    rt = RenderThread(svc)
    try:
        rt.request()
        wait_idle(rt)
        assert rt.error == "render failed: no head model"
        assert rt.take() is None
        svc.fail_pose = False
        rt.error = None
        rt.request()
        wait_idle(rt)
        assert rt.take() is not None and rt.error is None
    finally:
        rt.stop()


@pytest.mark.parametrize("timeout", [0.05])
def test_wait_fresh_times_out_without_a_frame(timeout):
    rt = RenderThread(FakeService())
    try:
        t0 = time.perf_counter()
        assert rt.wait_fresh(timeout) is False
        assert time.perf_counter() - t0 >= timeout * 0.9
    finally:
        rt.stop()
