"""Renders the service's current state on worker threads whenever asked, keeping only the
newest frame, so the UI thread never waits for a render (the native renderer releases the GIL).

Two stages on two threads: "pose" (head model + binding: mostly small torch ops, much of it
on one core) and "render" (the rasteriser on every core, then RGBA). While frame n is
rasterised, frame n+1 is posed: while a slider is dragged the frame rate is the slower stage's
rather than the sum of both (measured with `python main.py bench ui`).

With ``rasterize=False`` (the gl backend drawing in the stage's own context, which only the UI
thread may use) the render stage hands on the posed Gaussians instead of a picture."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from engine.service import AvatarService
from engine.types import Frame


@dataclass(frozen=True)
class Rendered:
    frame: Frame | None
    rgba: np.ndarray | None   # uint8 [H, W, 4] premultiplied: what the stage uploads (a quarter of float32's bytes)
    seconds: float      # wall-clock time from the start of posing to the RGBA picture
    seq: int            # request number it answers
    posed: tuple | None = None   # (Gaussians, Camera) for the UI thread to draw, when not rasterised here


PINNED_RING = 3
"""Pinned host buffers per picture size for CUDA frames, used in turn: the UI thread uploads a
picture within a frame of taking it, so a buffer is rewritten only three pictures later."""
_pinned: dict[tuple[int, ...], list] = {}


def to_rgba8(frame: Frame) -> np.ndarray:
    """Premultiplied rgb + alpha of ``frame`` as uint8 [H, W, 4] on the host. A CUDA frame is
    quantised on the GPU (a quarter of float32's bytes to move) and copied once, by DMA, into a
    pinned (page-locked) host buffer that the stage uploads from: one device-to-host copy per
    picture, no pageable staging copy."""
    rgba = (torch.cat([frame.rgb, frame.alpha[..., None]], -1).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    if rgba.device.type != "cuda":
        return rgba.cpu().numpy()
    ring = _pinned.setdefault(tuple(rgba.shape), [])
    if len(ring) < PINNED_RING:
        ring.append(torch.empty(rgba.shape, dtype=torch.uint8, pin_memory=True))
    buf = ring.pop(0)
    ring.append(buf)
    buf.copy_(rgba)             # synchronous: the picture is complete when this returns
    return buf.numpy()


class RenderThread:
    def __init__(self, service: AvatarService, rasterize: bool = True) -> None:
        self.service = service
        self.rasterize = rasterize
        self._wake = threading.Condition()
        self._requested = 0
        self._done = 0
        self._posed: tuple[int, float, tuple] | None = None   # (request, start, service.pose()) for the render stage
        self._latest: Rendered | None = None
        self._stop = False
        self.error: str | None = None
        self._times: deque[float] = deque(maxlen=30)
        self._pose_thread = threading.Thread(target=self._pose_loop, name="pose", daemon=True)
        self._thread = threading.Thread(target=self._render_loop, name="render", daemon=True)
        self._pose_thread.start()
        self._thread.start()

    def request(self) -> int:
        """Ask for a render of the service's state as it is now; returns the request number."""
        with self._wake:
            self._requested += 1
            self._wake.notify_all()
            return self._requested

    @property
    def requested(self) -> int:
        """Requests so far."""
        with self._wake:
            return self._requested

    def take(self) -> Rendered | None:
        """The newest frame not taken yet, or None."""
        with self._wake:
            out, self._latest = self._latest, None
            return out

    def wait_fresh(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a frame not taken yet; True when there is one."""
        with self._wake:
            return self._wake.wait_for(lambda: self._latest is not None, timeout)

    def take_peek(self) -> Rendered | None:
        """The newest frame not taken yet, left in place."""
        with self._wake:
            return self._latest

    @property
    def idle(self) -> bool:
        """True when every request so far has been rendered."""
        with self._wake:
            return self._done >= self._requested

    def mean_seconds(self) -> float | None:
        return sum(self._times) / len(self._times) if self._times else None

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._pose_thread.join(5)
        self._thread.join(5)

    def _pose_loop(self) -> None:
        posed = 0
        while True:
            with self._wake:       # a new request, and the render stage has taken the previous pose
                while (self._requested <= posed or self._posed is not None) and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                seq = self._requested
            t0 = time.perf_counter()
            try:
                out = self.service.pose()
            except Exception as e:  # noqa: BLE001 - shown in the status line, never a crash
                self.error = f"render failed: {e}"
                with self._wake:
                    self._done = max(self._done, seq)
                    posed = seq
                    self._wake.notify_all()
                continue
            with self._wake:
                self._posed, posed = (seq, t0, out), seq
                self._wake.notify_all()

    def _render_loop(self) -> None:
        while True:
            with self._wake:
                while self._posed is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                (seq, t0, out), self._posed = self._posed, None
                self._wake.notify_all()                # the pose stage may start on the next request
            if not self.rasterize:
                with self._wake:
                    self._done = max(self._done, seq)
                    self._latest = Rendered(None, None, time.perf_counter() - t0, seq, out)
                    self._wake.notify_all()
                continue
            try:
                frame = self.service.rasterize(*out)
                rgba = to_rgba8(frame)
            except Exception as e:  # noqa: BLE001 - shown in the status line, never a crash
                self.error = f"render failed: {e}"
                frame = None
            dt = time.perf_counter() - t0
            with self._wake:
                self._done = max(self._done, seq)
                if frame is not None:
                    self._times.append(dt)
                    self._latest = Rendered(frame, rgba, dt, seq)
                self._wake.notify_all()
