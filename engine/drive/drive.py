"""Driving an avatar from a stream: tracker -> transfer -> smoothing -> render.

`DrivePipeline` (`engine.drive.pipeline`) turns a driver's per-frame parameters into the
avatar's; the live loop (`engine.drive.live`) and `drive_video` share it. `drive_video` is offline cross-reenactment: a driver video through the real-time tracker and
the pipeline, rendered frame by frame to an MP4, with per-stage timings.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.drive.realtime import RealtimeConfig, RealtimeTracker, torch_threads
from engine.drive.sources import VideoSource
from engine.drive.pipeline import DrivePipeline
from engine.drive.transfer import TransferConfig
from engine.headmodel.base import HeadModel
from engine.types import Avatar, Camera, HeadParams

STAGES = ("capture", "landmarks", "solve", "transfer", "animate", "render", "encode")


@dataclass
class DriveStats:
    """Timings of a drive: per stage, milliseconds per frame."""

    frames: int                    # frames processed (tracked and rendered)
    found: int                     # of which with a face
    seconds: float                 # wall time of the whole run, initial fit included
    init_ms: float                 # the tracker's initial full fit (in 'solve' of its frame too)
    stages: dict = field(default_factory=dict)   # stage -> {"mean", "p50", "p95", "max"} ms
    latency: dict = field(default_factory=dict)  # capture done -> frame rendered: {"mean", "p50", "p95", "max"} ms
    first_ms: float = 0.0          # wall time of the first frame (initial fit, warm-up)
    dropped: int = 0               # frames not shown: skipped by a real-time source, or tracked and replaced
                                   # by a newer one before the renderer took them (consumer too slow)
    notes: list = field(default_factory=list)
    driver: HeadParams | None = None   # [N, ...] the tracker's parameters per processed frame
    driven: HeadParams | None = None   # [N, ...] the avatar's, as rendered
    found_mask: np.ndarray | None = None  # [N] bool

    @property
    def fps(self) -> float:
        """End-to-end frames per second over the run."""
        return self.frames / self.seconds if self.seconds > 0 else math.nan

    @property
    def steady_fps(self) -> float:
        """Frames per second without the first frame (the initial fit and warm-up)."""
        rest = self.seconds - self.first_ms / 1000
        return (self.frames - 1) / rest if self.frames > 1 and rest > 0 else math.nan

    def table(self) -> str:
        """A plain-text table of the stage timings."""
        rows = [f"{'stage':<10} {'mean':>8} {'p50':>8} {'p95':>8} {'max':>8}  (ms per frame)"]
        for name, s in list(self.stages.items()) + [("latency", self.latency)]:
            if s:
                rows.append(f"{name:<10} {s['mean']:8.1f} {s['p50']:8.1f} {s['p95']:8.1f} {s['max']:8.1f}")
        rows.append(f"{self.frames} frames ({self.found} with a face, {self.dropped} dropped) in {self.seconds:.1f} s: "
                    f"{self.fps:.1f} FPS end to end, {self.steady_fps:.1f} FPS after the first frame "
                    f"(initial fit {self.init_ms:.0f} ms)")
        return "\n".join(rows)


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "sum": float(a.sum())}


def side_by_side(driver: np.ndarray, avatar: np.ndarray) -> np.ndarray:
    """The driver frame scaled to the avatar frame's height, left of it: uint8 [H, W1 + W2, 3]."""
    import cv2

    h = avatar.shape[0]
    w = max(1, round(driver.shape[1] * h / driver.shape[0]))
    interp = cv2.INTER_AREA if driver.shape[0] > h else cv2.INTER_LINEAR
    return np.concatenate([cv2.resize(driver, (w, h), interpolation=interp), avatar], 1)


def drive_video(avatar: Avatar, model: HeadModel, driver_video: str | os.PathLike, out_mp4: str | os.PathLike,
                relative: bool = True, transfer: TransferConfig | None = None, smoothing: float = 0.5,
                size: int = 256, camera: Camera | None = None, side_by_side_driver: bool = False,
                realtime: bool = False, renderer: str | None = None, tracker: RealtimeConfig = RealtimeConfig(),
                max_frames: int | None = None, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                threads: int | None = 1, progress: Callable[[int, int], None] | None = None,
                pipelined: bool | None = None, on_frame: Callable[[np.ndarray], None] | None = None) -> DriveStats:
    """Cross-reenactment: drive ``avatar`` with the face in ``driver_video``; write ``out_mp4``.
    ``driver_video`` may also be a live source (`WebcamSource`): driven until it ends, Ctrl-C or
    ``max_frames`` camera frames, always real-time and pipelined.

    ``relative`` (overridden by ``transfer``, a full `TransferConfig`) transfers the driver's
    change from its neutral, estimated from its first seconds; ``smoothing`` is the One-Euro
    strength in [0, 1]. Frames are ``size``² renders from ``camera`` (default: the front orbit
    camera) by ``renderer`` (default: the fastest CPU renderer, `engine.render.select`),
    optionally right of the driver frame (``side_by_side_driver``). ``realtime`` paces the
    video like a camera and skips frames the loop is too slow for (the output repeats the last
    frame there, so it keeps the video's timing). Frames without a face hold the last pose and
    ease to neutral over 0.5 s. ``threads``: torch's (and the native renderer's) threads for the
    loop, restored after; None leaves them. One is the default because on a busy 2-core machine
    two made posing the avatar 40x and rendering 2-4x slower (OpenMP threads waiting on each
    other). ``pipelined`` (default: with ``realtime``) runs capture, tracking and transfer on a
    worker thread (`LiveDriver`, as the app does) while this thread renders and encodes the
    newest result, so the two halves overlap on two cores; the output still keeps the video's
    timing. ``on_frame`` receives every rendered output frame as well (e.g. a `VirtualCamera`'s
    ``send``). Returns the per-stage timings; raises `MediaError` for an unreadable video."""
    from engine.camera import orbit_camera
    from engine.io.media import NoFramesError, write_video
    from engine.render.select import select

    cfg = transfer if transfer is not None else TransferConfig(relative=relative)
    animated = AnimatedAvatar(avatar, model)
    rend = select(model.device, need_grad=False, prefer=renderer)
    cam = camera if camera is not None else orbit_camera(size=size)
    pipe = DrivePipeline(model.expr_names, animated.neutral(), cfg, smoothing)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    latency: list[float] = []
    driver_params: list[HeadParams] = []
    driven_params: list[HeadParams] = []
    found_mask: list[bool] = []
    stats = DriveStats(0, 0, 0.0, 0.0)
    camera_source = not isinstance(driver_video, (str, os.PathLike))
    if camera_source:          # a live source (`WebcamSource`): always real time, so pipelined
        source, realtime, pipelined = driver_video, True, True
        source.fps = source.fps or 30.0
        name = f"camera {getattr(source, 'index', '')}".strip()
    else:
        source = VideoSource(driver_video, realtime=realtime, max_frames=max_frames)
        name = str(Path(driver_video))
    total = min(getattr(source, "n_frames", None) or 0, max_frames or 10**9)
    tr = RealtimeTracker(model, tracker)

    def pose(params: HeadParams):
        with torch.no_grad():
            return animated.gaussians(params)

    def render(params: HeadParams, posed=None) -> tuple[np.ndarray, float, float]:
        """(image, animate ms, render ms); ``posed``: the Gaussians when they are posed already."""
        t1 = time.perf_counter()
        g = posed if posed is not None else pose(params)
        t2 = time.perf_counter()
        with torch.no_grad():
            img = rend.render(g, cam).to_uint8(background)
        return img, 1000 * (t2 - t1), 1000 * (time.perf_counter() - t2)

    def record(tf, p: HeadParams, ms: dict, captured_at: float) -> None:
        for k, v in ms.items():
            times[k].append(v)
        latency.append(1000 * (time.perf_counter() - captured_at))
        if tf.initialised:
            stats.init_ms = tf.solve_ms
        stats.frames += 1
        stats.found += tf.found
        driver_params.append(tf.params)
        driven_params.append(p)
        found_mask.append(tf.found)
        if stats.frames == 1:
            stats.first_ms = 1000 * (time.perf_counter() - start)

    last = {"index": -1, "frame": None}

    def emit(index: int, rgb: np.ndarray, img: np.ndarray) -> Iterator[np.ndarray]:
        """The output frame for driver frame ``index``, after repeats of the previous output for
        the frames skipped since (so the MP4 keeps the driver's timing)."""
        out = side_by_side(rgb, img) if side_by_side_driver else img
        if last["frame"] is not None:
            for _ in range(max(0, index - last["index"] - 1)):
                yield last["frame"]
        last["index"], last["frame"] = index, out
        if on_frame is not None:
            on_frame(out)
        t4 = time.perf_counter()
        yield out
        times["encode"].append(1000 * (time.perf_counter() - t4))
        if progress:
            progress(index + 1, max(total, index + 1))

    def frames() -> Iterator[np.ndarray]:
        tick = time.perf_counter()
        for t, rgb in source:
            t_cap = time.perf_counter()
            tf = tr.track(rgb)
            t0 = time.perf_counter()
            p = pipe(t, tf.params, tf.found)
            t1 = time.perf_counter()
            img, animate_ms, render_ms = render(p)
            record(tf, p, {"capture": 1000 * (t_cap - tick), "landmarks": tf.landmarks_ms, "solve": tf.solve_ms,
                           "transfer": 1000 * (t1 - t0), "animate": animate_ms, "render": render_ms}, t_cap)
            yield from emit(source.index, rgb, img)
            tick = time.perf_counter()

    def live_frames() -> Iterator[np.ndarray]:
        """The worker tracks; this thread renders the newest tracked frame (video index = t * fps)."""
        from engine.drive.live import LiveDriver

        live = LiveDriver(source, tr, pipe, pose=pose).start()     # posing on the worker too
        seen = -1
        try:
            while max_frames is None or last["index"] + 1 < max_frames:
                if interrupted.is_set():
                    stats.notes.append("stopped by Ctrl-C")
                    break
                f = live.latest(seen)
                if f is None:
                    if not live.running:
                        if live.error:
                            raise RuntimeError(f"driving stopped: {live.error}")
                        break
                    time.sleep(0.0005)
                    continue
                stats.dropped += f.index - seen - 1     # tracked, then replaced by a newer frame before shown
                seen = f.index
                img, _, render_ms = render(f.params, f.posed)
                live.displayed(f, render_ms)
                record(f.tracked, f.params, {"capture": f.capture_ms, "landmarks": f.tracked.landmarks_ms,
                                             "solve": f.tracked.solve_ms, "transfer": f.transfer_ms,
                                             "animate": f.pose_ms, "render": render_ms}, f.captured_at)
                yield from emit(round(f.t * source.fps), f.rgb, img)
        except KeyboardInterrupt:      # Ctrl-C ends a live recording; the MP4 is closed properly
            stats.notes.append("stopped by Ctrl-C")
        finally:
            live.stop()

    start = time.perf_counter()
    live_mode = realtime if pipelined is None else pipelined
    interrupted = threading.Event()
    try:
        with torch_threads(threads), (_ctrl_c_sets(interrupted) if live_mode else contextlib.nullcontext()):
            write_video(out_mp4, live_frames() if live_mode else frames(), source.fps)
    except NoFramesError:
        why = "stopped by Ctrl-C before the first frame was shown" if "stopped by Ctrl-C" in stats.notes \
            else "no frame was read"
        raise ValueError(f"{name}: {why}; nothing was recorded and {out_mp4} was not written") from None
    finally:
        tr.close()
        source.close()
    stats.seconds = time.perf_counter() - start
    stats.dropped += getattr(source, "dropped", 0)
    stats.stages = {k: _summary(v) for k, v in times.items() if v}
    stats.latency = _summary(latency)
    if driven_params:
        stats.driver, stats.driven = _stack(driver_params), _stack(driven_params)
        stats.found_mask = np.array(found_mask)
    if stats.found == 0:
        msg = f"{name}: no face found in any frame; the avatar stayed neutral"
        warnings.warn(msg)
        stats.notes.append(msg)
    elif stats.found < stats.frames:
        stats.notes.append(f"{name}: no face in {stats.frames - stats.found} of {stats.frames} frames "
                           f"(held, then eased to neutral)")
    return stats


@contextlib.contextmanager
def _ctrl_c_sets(event: threading.Event) -> Iterator[None]:
    """While live recording: the first Ctrl-C sets ``event`` (the recording ends after the frame
    being encoded and the MP4 is closed properly; a KeyboardInterrupt raised inside the encoder
    lost the whole file); a second one interrupts as usual. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum, frame) -> None:
        event.set()
        print("stopping: the recording is being closed (Ctrl-C again abandons it)", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    before = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _stack(params: list[HeadParams]) -> HeadParams:
    """Batch-1 `HeadParams` stacked into one batch."""
    return HeadParams(*(torch.cat([getattr(p, k) for p in params]) for k in
                        ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
