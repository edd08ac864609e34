"""The live loop's capture half on a worker thread: source -> tracker -> `DrivePipeline`.

The caller (the app's render thread, a command's loop) renders whatever `LiveDriver.latest`
holds, so capture and tracking of frame n+1 overlap the rendering of frame n, and a slow
renderer never stalls the camera (a real-time source drops the frames nobody took). The
worker never raises into the caller: a camera unplugged, a video ended or an error in the
tracker stop it with ``end_reason`` / ``error`` set.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from engine.drive.pipeline import DrivePipeline
from engine.drive.realtime import TrackedFrame
from engine.drive.transfer import TransferConfig
from engine.types import HeadParams

WINDOW = 120   # frames the rolling timing statistics cover


@dataclass(frozen=True)
class LiveFrame:
    """One processed camera frame."""

    index: int                 # sequence number of processed frames, from 0
    t: float                   # capture time, seconds since the source's origin
    captured_at: float         # the same as a `time.perf_counter` value
    rgb: np.ndarray            # uint8 [H, W, 3] the camera frame
    tracked: TrackedFrame      # driver params, found, landmarks, landmarks/solve ms
    params: HeadParams         # the avatar's params [1, ...] to render
    capture_ms: float          # waiting for and reading the frame
    transfer_ms: float         # transfer + easing + smoothing
    posed: object = None       # ``pose(params)`` when the driver was given ``pose``
    pose_ms: float = 0.0


class LiveDriver:
    """Runs ``source`` (yielding (t, rgb), with an ``origin`` attribute) through ``tracker``
    (``track(rgb) -> TrackedFrame``, ``close()``) and ``pipeline`` on a daemon thread.

    torch's thread count is process-wide: give a `RealtimeTracker` ``RealtimeConfig(threads=None)``
    here and set the count once (1 on a 2-core machine: tracking and rendering then each
    have a core), or its per-frame switch also changes the render thread's."""

    def __init__(self, source: Iterable, tracker, pipeline: DrivePipeline, pose=None) -> None:
        """``pose``: optional ``params -> anything`` (e.g. an avatar's posed Gaussians) run on the
        worker too, so the caller only renders: the two halves then take about as long each."""
        self.source, self.tracker, self.pipeline, self.pose = source, tracker, pipeline, pose
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: LiveFrame | None = None
        self._commands: list = []
        self._times: dict[str, collections.deque] = {k: collections.deque(maxlen=WINDOW) for k in
                                                      ("capture", "landmarks", "solve", "transfer", "render", "latency")}
        self._starts: collections.deque = collections.deque(maxlen=WINDOW)   # perf_counter at each frame's start
        self.end_reason: str | None = None
        self.error: str | None = None
        self.frames = 0

    # -- control (any thread) --------------------------------------------------------------
    def start(self) -> "LiveDriver":
        self._thread = threading.Thread(target=self._run, name="live-driver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the worker to stop and wait up to ``timeout`` s for it (it finishes the frame in
        hand). A worker still inside its source's read then (a camera read that never returns)
        gets the source closed under it, which ends the read, and one more second. True when the
        worker has ended."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        close = getattr(self.source, "close", None)
        if self._thread.is_alive() and close is not None:
            try:
                close()
            except Exception:      # noqa: BLE001 - a source that cannot close is left to its thread
                pass
            self._thread.join(1.0)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def calibrate(self) -> None:
        """Take the driver's next frame with a face as its neutral (relative mode)."""
        self._command(("calibrate",))

    def set_transfer(self, cfg: TransferConfig) -> None:
        self._command(("transfer", cfg))

    def set_smoothing(self, strength: float) -> None:
        self._command(("smoothing", strength))

    def _command(self, cmd: tuple) -> None:
        with self._lock:
            self._commands.append(cmd)

    # -- results (any thread) ---------------------------------------------------------------
    def latest(self, after: int = -1) -> LiveFrame | None:
        """The newest processed frame if its index is greater than ``after``, else None."""
        with self._lock:
            f = self._latest
        return f if f is not None and f.index > after else None

    def displayed(self, frame: LiveFrame, render_ms: float) -> None:
        """Record that ``frame`` reached the screen now, after ``render_ms`` of rendering: feeds the
        'render' and capture-to-screen 'latency' statistics."""
        with self._lock:
            self._times["render"].append(render_ms)
            self._times["latency"].append(1000 * (time.perf_counter() - frame.captured_at))

    def stats(self) -> dict[str, float]:
        """Mean milliseconds per stage over the last frames (capture, landmarks, solve, transfer,
        render, latency = capture to screen), and 'fps': frames processed per second."""
        with self._lock:
            out = {k: float(np.mean(v)) for k, v in self._times.items() if v}
            starts = list(self._starts)
        if len(starts) > 1 and starts[-1] > starts[0]:
            out["fps"] = (len(starts) - 1) / (starts[-1] - starts[0])
        return out

    # -- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        calibrate = False
        frames: Iterator = iter(self.source)
        try:
            while not self._stop.is_set():
                tick = time.perf_counter()
                item = next(frames, None)
                if item is None:
                    self.end_reason = getattr(self.source, "end_reason", None) or "the source ended"
                    break
                t, rgb = item
                now = time.perf_counter()
                origin = getattr(self.source, "origin", None)
                captured_at = origin + t if origin is not None else now
                tracked = self.tracker.track(rgb)
                with self._lock:
                    commands, self._commands = self._commands, []
                for cmd in commands:
                    if cmd[0] == "calibrate":
                        calibrate = True
                    elif cmd[0] == "transfer":
                        self.pipeline.transfer.set_config(cmd[1])
                    elif cmd[0] == "smoothing":
                        self.pipeline.set_smoothing(cmd[1])
                if calibrate and tracked.found:
                    self.pipeline.calibrate(tracked.params)
                    calibrate = False
                t0 = time.perf_counter()
                params = self.pipeline(t, tracked.params, tracked.found)
                t1 = time.perf_counter()
                posed = self.pose(params) if self.pose is not None else None
                t2 = time.perf_counter()
                frame = LiveFrame(self.frames, t, captured_at, rgb, tracked, params, 1000 * (now - tick), 1000 * (t1 - t0),
                                  posed, 1000 * (t2 - t1))
                with self._lock:
                    self._latest = frame
                    for k, v in (("capture", frame.capture_ms), ("landmarks", tracked.landmarks_ms),
                                 ("solve", tracked.solve_ms), ("transfer", frame.transfer_ms)):
                        self._times[k].append(v)
                    self._starts.append(tick)
                self.frames += 1
            else:
                self.end_reason = "stopped"
        except Exception as e:  # noqa: BLE001 - reported to the caller, never raised into its loop
            self.error = f"{type(e).__name__}: {e}"
            self.end_reason = f"stopped by an error ({self.error})"
        finally:
            for closer in (getattr(self.source, "close", None), getattr(self.tracker, "close", None)):
                if closer is not None:
                    try:
                        closer()
                    except Exception:  # noqa: BLE001
                        pass
