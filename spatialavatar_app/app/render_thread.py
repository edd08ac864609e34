"""Renders the service's current state on a worker thread whenever asked, keeping only the
newest frame, so the UI thread never waits for a render (the native renderer releases the GIL)."""
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
    frame: Frame
    rgba: np.ndarray    # uint8 [H, W, 4] premultiplied: what the stage uploads (a quarter of float32's bytes)
    seconds: float      # wall-clock time of this render (pose + bind + rasterise)
    seq: int            # request number it answers


def to_rgba8(frame: Frame) -> np.ndarray:
    """Premultiplied rgb + alpha of ``frame`` as uint8 [H, W, 4]."""
    rgba = torch.cat([frame.rgb, frame.alpha[..., None]], -1).clamp(0, 1) * 255 + 0.5
    return rgba.to(torch.uint8).cpu().numpy()


class RenderThread:
    def __init__(self, service: AvatarService) -> None:
        self.service = service
        self._wake = threading.Condition()
        self._requested = 0
        self._done = 0
        self._latest: Rendered | None = None
        self._stop = False
        self.error: str | None = None
        self._times: deque[float] = deque(maxlen=30)
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a render of the service's state as it is now; returns the request number."""
        with self._wake:
            self._requested += 1
            self._wake.notify()
            return self._requested

    def take(self) -> Rendered | None:
        """The newest frame not taken yet, or None."""
        with self._wake:
            out, self._latest = self._latest, None
            return out

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
            self._wake.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._done >= self._requested and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                seq = self._requested
            t0 = time.perf_counter()
            try:
                frame = self.service.render()
                rgba = to_rgba8(frame)
            except Exception as e:  # noqa: BLE001 - shown in the status line, never a crash
                self.error = f"render failed: {e}"
                frame = None
            dt = time.perf_counter() - t0
            with self._wake:
                self._done = seq
                if frame is not None:
                    self._times.append(dt)
                    self._latest = Rendered(frame, rgba, dt, seq)
