"""Driving end to end: a synthetic parameter stream through transfer, smoothing and the renderer (no
camera, no mediapipe), and a rendered talking clip through the real-time tracker and `drive_video`."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.camera import orbit_camera
from engine.drive.drive import drive_video
from engine.drive.pipeline import DrivePipeline
from engine.drive.realtime import RealtimeConfig, torch_threads
from engine.drive.transfer import TransferConfig
from engine.headmodel.base import HeadModel
from engine.types import HeadParams

FPS = 25.0
# Tests check what the tracker finds, not how fast: no time budget, so a busy machine cannot cut
# solves short (the budget itself is tested in test_realtime.py).
UNBOUNDED = RealtimeConfig(budget_ms=1e6)
INNER_LIPS = (13, 14)    # FaceMesh (= OpenHead vertex) ids of the upper and lower inner lip


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


@pytest.fixture(scope="module")
def animated(model) -> AnimatedAvatar:
    from engine.service import default_avatar

    return AnimatedAvatar(default_avatar(model), model)


@pytest.fixture(scope="module")
def renderer():
    from engine.render.select import select

    return select("cpu")


def render(animated, renderer, p: HeadParams, size: int = 256, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    with torch.no_grad(), torch_threads(1):
        return renderer.render(animated.gaussians(p), orbit_camera(size=size)).to_uint8(background)


def mouth_pixel(model: HeadModel, p: HeadParams, size: int = 256) -> tuple[int, int]:
    """(row, column) of the point between the inner lips of ``p``, in the front camera's image."""
    cam = orbit_camera(size=size)
    with torch.no_grad():
        v = model.vertices(p)[0][list(INNER_LIPS)].mean(0)
    c = cam.world_to_cam[:3, :3] @ v + cam.world_to_cam[:3, 3]
    uv = cam.K @ c
    return int(round(float(uv[1] / uv[2]))), int(round(float(uv[0] / uv[2])))


def darkness(img: np.ndarray, rc: tuple[int, int]) -> float:
    """Mean of 255 - grey over a 5x5 patch."""
    r, c = rc
    return float(255 - img[r - 2 : r + 3, c - 2 : c + 3].mean())


def driver_stream(model: HeadModel, n: int = 30) -> list[HeadParams]:
    """Another person (own shape, a slight smile at rest, head held turned), still for 0.4 s,
    then opening the jaw to 0.3 rad over 0.4 s and holding it."""
    g = torch.Generator().manual_seed(3)
    smile = model.expr_names.index("mouthSmile_L")
    base = model.neutral()
    expr = base.expr.clone()
    expr[0, smile] = 0.3
    base = dataclasses.replace(base, shape=torch.rand(1, model.n_shape, generator=g) - 0.5, expr=expr,
                               neck=torch.tensor([[0.0, 0.25, 0.0]]), translation=torch.tensor([[0.02, 0.0, -0.6]]))
    out = []
    for i in range(n):
        jaw = 0.3 * min(1.0, max(0.0, (i - 10) / 10))
        noise = 0.003 * torch.randn(1, model.n_expr, generator=g)        # tracker jitter
        out.append(dataclasses.replace(base, expr=base.expr + noise, jaw=torch.tensor([[jaw, 0.0, 0.0]])))
    return out


def test_a_synthetic_parameter_stream_opens_the_rendered_mouth(model, animated, renderer):
    pipe = DrivePipeline(model.expr_names, animated.neutral(), TransferConfig(relative=True, neutral_seconds=0.35),
                         smoothing=0.5)
    stream = driver_stream(model)
    outs = [pipe(i / FPS, d, True) for i, d in enumerate(stream)]
    closed, opened = outs[5], outs[-1]
    frames = {5: render(animated, renderer, closed), -1: render(animated, renderer, opened)}
    smile = model.expr_names.index("mouthSmile_L")
    # relative: the driver's resting smile, head turn, shape and position do not reach the avatar
    assert float(closed.expr[0, smile]) < 0.02 and float(closed.neck.abs().max()) < 0.02
    assert torch.equal(closed.shape, animated.neutral().shape)
    assert torch.equal(opened.translation, animated.neutral().translation)
    # the jaw follows the stream (smoothed: a little behind it)
    jaw = np.array([float(p.jaw[0, 0]) for p in outs])
    assert jaw[:10].max() < 0.01 and jaw[-1] == pytest.approx(0.3, abs=0.03) and (np.diff(jaw[10:]) > -1e-3).all()
    # rendered: between the open lips the mouth cavity shows, dark; there the closed frame shows skin
    rc = mouth_pixel(model, opened)
    assert darkness(frames[-1], rc) > darkness(frames[5], rc) + 60
    assert darkness(frames[-1], rc) > 120


def test_a_lost_face_holds_then_eases_to_neutral_in_the_pipeline(model, animated):
    pipe = DrivePipeline(model.expr_names, animated.neutral(), TransferConfig(relative=False), smoothing=0.0, ease_s=0.5)
    d = dataclasses.replace(model.neutral(), jaw=torch.tensor([[0.3, 0.0, 0.0]]))
    pipe(0.0, d, True)
    jaws = [float(pipe(t, d, False).jaw[0, 0]) for t in np.arange(1, 20) / FPS]
    assert jaws[0] == pytest.approx(0.3) and jaws[-1] == 0.0
    assert (np.diff(jaws) <= 1e-6).all()


def test_a_nan_driver_frame_is_a_lost_frame_not_a_blank_avatar(model, animated):
    """One NaN frame from the tracker latched the One-Euro filter: every later frame was NaN (an
    invisible avatar) until Stop. Now it is held like a lost face, and the next good frame drives."""
    pipe = DrivePipeline(model.expr_names, animated.neutral(), TransferConfig(relative=False), smoothing=0.8)
    good = dataclasses.replace(model.neutral(), jaw=torch.tensor([[0.2, 0.0, 0.0]]))
    bad = dataclasses.replace(good, expr=torch.full_like(good.expr, float("nan")))
    outs = [pipe(0.0, good, True), pipe(1 / FPS, bad, True)] + [pipe(k / FPS, good, True) for k in range(2, 6)]
    assert all(o.is_finite() for o in outs)
    assert float(outs[1].jaw[0, 0]) == pytest.approx(float(outs[0].jaw[0, 0]))     # held
    assert float(outs[-1].jaw[0, 0]) == pytest.approx(0.2, abs=0.02)


@pytest.fixture(scope="module")
def talking_clip(model, animated, renderer, tmp_path_factory):
    """16 frames at 256² of the default avatar opening and closing its jaw: (path, jaw angles)."""
    from engine.expressions import apply_expressions
    from engine.io.media import write_video

    jaws, frames = [], []
    for i in range(16):
        w = 0.6 * (1 - math.cos(i / 15 * 2 * math.pi)) / 2
        p = apply_expressions(animated.neutral(), model, {"jawOpen": w})
        jaws.append(float(p.jaw[0, 0]))
        frames.append(render(animated, renderer, p, background=(0.45, 0.5, 0.55)))
    path = tmp_path_factory.mktemp("drive") / "talk.mp4"
    write_video(path, frames, FPS)
    return path, np.array(jaws)


def test_the_realtime_tracker_follows_a_rendered_talking_clip(model, talking_clip):
    from engine.drive.realtime import RealtimeTracker
    from engine.drive.sources import VideoSource

    path, truth = talking_clip
    tracked, lm_ms, solve_ms = [], [], []
    with RealtimeTracker(model, UNBOUNDED) as tr:
        for _, rgb in VideoSource(path):
            out = tr.track(rgb)
            assert out.found and out.landmarks.shape == (478, 3) and out.error_px < 6
            tracked.append(float(out.params.jaw[0, 0]))
            lm_ms.append(out.landmarks_ms)
            solve_ms.append(out.solve_ms)
    assert np.corrcoef(tracked, truth)[0, 1] > 0.9
    assert min(lm_ms) > 0 and all(s > 0 for s in solve_ms)


def test_drive_video_writes_a_side_by_side_mp4_with_stage_timings(model, animated, talking_clip, tmp_path):
    from engine.io.media import VideoReader

    path, truth = talking_clip
    out = tmp_path / "driven.mp4"
    # relative to the first frame (closed mouth): the clip is too short for the default estimate
    stats = drive_video(animated.avatar, model, path, out, transfer=TransferConfig(relative=True, neutral_seconds=0.0),
                        size=128, side_by_side_driver=True, tracker=UNBOUNDED)
    print(stats.table())
    with VideoReader(out) as video:
        frames = list(video)
        assert video.fps == pytest.approx(FPS)
    assert len(frames) == 16 and frames[0].shape == (128, 256, 3)
    assert stats.frames == 16 and stats.found == 16 and stats.init_ms > 0 and stats.fps > 0
    assert set(stats.stages) == {"capture", "landmarks", "solve", "transfer", "animate", "render", "encode"}
    assert stats.latency["mean"] > stats.stages["render"]["mean"]
    assert "FPS end to end" in stats.table()
    # the driven avatar's jaw follows the driver's, and its rendered mouth opens with it: between
    # the lips, teeth or the cavity show where the first (closed) frame shows lips
    jaw = stats.driven.jaw[:, 0].numpy()
    assert stats.driver.batch_size == 16 and stats.found_mask.all()
    # (0.79 on the default avatar with hair and shoulders, whose render FaceMesh reads less
    # cleanly than the bald head's; the tracker alone follows it at > 0.9, the test above)
    assert np.corrcoef(jaw, truth)[0, 1] > 0.75 and jaw.max() > 0.05
    k = int(jaw.argmax())
    r, c = mouth_pixel(model, stats.driven.frame(k), size=128)
    c += 128                                                          # the avatar is the right half
    patch = lambda img: img[r - 2:r + 3, c - 2:c + 3].astype(float)   # noqa: E731
    change = np.abs(patch(frames[k]) - patch(frames[0])).mean()
    print("mouth change", change)
    assert change > 15


def test_drive_video_eases_to_neutral_where_the_face_is_lost(model, animated, renderer, tmp_path):
    """A clip with the jaw held open whose frames 6-21 show no face: the avatar holds the open jaw
    (0.1 s), then eases it closed (0.5 s); the tracker finds the face again at frame 22."""
    from engine.expressions import apply_expressions
    from engine.io.media import write_video

    p = apply_expressions(animated.neutral(), model, {"jawOpen": 0.5})
    face = render(animated, renderer, p, background=(0.45, 0.5, 0.55))
    blank = np.empty_like(face)
    blank[:] = face[0, 0]
    path = tmp_path / "lost.mp4"
    lost = range(6, 22)
    write_video(path, [blank if i in lost else face for i in range(25)], FPS)
    stats = drive_video(animated.avatar, model, path, tmp_path / "out.mp4", relative=False, size=64, smoothing=0.0,
                        tracker=UNBOUNDED)
    assert stats.found_mask.tolist() == [i not in lost for i in range(25)]
    assert any("no face in 16 of 25 frames" in n for n in stats.notes)
    jaw = stats.driven.jaw[:, 0].numpy()
    assert jaw[5] > 0.02 and jaw[6] == pytest.approx(jaw[5]) and jaw[8] == pytest.approx(jaw[5])   # held
    assert (np.diff(jaw[6:22]) <= 1e-6).all() and jaw[12] < jaw[5] and abs(jaw[21]) < 1e-6  # eased to neutral
    assert jaw[22:].min() > 0.01                                         # found again


def test_realtime_drive_tracks_on_a_worker_and_keeps_the_videos_timing(model, animated, talking_clip, tmp_path):
    """Pipelined real-time driving (the tracker on `LiveDriver`'s thread, rendering here): the
    output has one frame per input frame whatever was dropped, and what was rendered follows the
    driver's jaw."""
    from engine.io.media import VideoReader

    path, truth = talking_clip
    out = tmp_path / "live.mp4"
    stats = drive_video(animated.avatar, model, path, out, transfer=TransferConfig(relative=True, neutral_seconds=0.0),
                        size=64, realtime=True, tracker=UNBOUNDED)
    with VideoReader(out) as video:
        n = sum(1 for _ in video)
    assert n == 16
    assert 1 <= stats.frames <= 16 and stats.found == stats.frames
    assert stats.frames + stats.dropped == 16
    assert set(stats.stages) >= {"capture", "landmarks", "solve", "render", "encode"}
    assert stats.latency["mean"] > stats.stages["render"]["mean"]
    if stats.frames >= 8:                     # a loaded machine may drop most frames of a 16-frame clip
        jaw = stats.driven.jaw[:, 0].numpy()
        assert jaw.max() > 0.05


def test_live_drive_from_a_camera_records_until_the_camera_stops(model, animated, talking_clip, tmp_path):
    """`drive --webcam`: a camera (here OpenCV reading the clip as if it were a device) drives the
    avatar live into an MP4; the camera ending (unplugged) ends the recording cleanly."""
    import cv2

    from engine.drive.sources import WebcamSource
    from engine.io.media import VideoReader

    path, _ = talking_clip
    cam = WebcamSource(0, opener=lambda i: cv2.VideoCapture(str(path)), max_failures=1)
    out = tmp_path / "live.mp4"
    stats = drive_video(animated.avatar, model, cam, out, transfer=TransferConfig(relative=False), size=64,
                        tracker=UNBOUNDED)
    assert 1 <= stats.frames <= 16 and stats.found >= 1
    assert "stopped delivering frames" in cam.end_reason
    with VideoReader(out) as video:
        assert sum(1 for _ in video) >= stats.frames and video.fps == pytest.approx(cam.fps)   # wall-clock timing


def test_ctrl_c_during_a_live_recording_keeps_the_mp4(model, animated, talking_clip, tmp_path, monkeypatch):
    """Ctrl-C could land inside the encoder, which then deleted the whole recording. Now the first
    Ctrl-C ends it after the frame in hand and the MP4 is complete. The Ctrl-C comes half a second
    after the first frame reached the screen: a fixed delay from the start came before any frame
    when the tracker started cold."""
    import os
    import signal
    import threading

    import cv2

    from engine.drive.sources import WebcamSource
    from engine.io.media import VideoReader

    path, _ = talking_clip

    class Looping:                                   # a camera that never ends: the clip, over and over
        def __init__(self):
            self.cap = cv2.VideoCapture(str(path))

        def read(self):
            ok, bgr = self.cap.read()
            if not ok:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self.cap.read()
            time.sleep(0.02)
            return ok, bgr

        def __getattr__(self, name):
            return getattr(self.cap, name)

    from engine.drive.live import LiveDriver

    shown, first = LiveDriver.displayed, threading.Event()

    def ctrl_c_soon_after_the_first(self, frame, render_ms):
        shown(self, frame, render_ms)
        if not first.is_set():
            first.set()
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()

    monkeypatch.setattr(LiveDriver, "displayed", ctrl_c_soon_after_the_first)
    cam = WebcamSource(0, opener=lambda i: Looping())
    out = tmp_path / "live.mp4"
    stats = drive_video(animated.avatar, model, cam, out, transfer=TransferConfig(relative=False), size=64,
                        tracker=UNBOUNDED)
    assert "stopped by Ctrl-C" in stats.notes and stats.frames >= 1
    with VideoReader(out) as video:
        assert sum(1 for _ in video) >= stats.frames
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # restored


def test_ctrl_c_before_the_first_live_frame_says_nothing_was_recorded(model, animated, talking_clip, tmp_path,
                                                                      monkeypatch):
    """A Ctrl-C before any tracked frame reached the screen: one line saying nothing was
    recorded, no file, and Ctrl-C handled as usual again."""
    import os
    import signal

    import cv2

    from engine.drive.live import LiveDriver
    from engine.drive.sources import WebcamSource

    path, _ = talking_clip

    def ctrl_c_while_waiting(self, seen):          # the display loop's first look for a frame
        os.kill(os.getpid(), signal.SIGINT)
        return None

    monkeypatch.setattr(LiveDriver, "latest", ctrl_c_while_waiting)
    out = tmp_path / "live.mp4"
    cam = WebcamSource(0, opener=lambda i: cv2.VideoCapture(str(path)))
    with pytest.raises(ValueError, match=r"^camera 0: stopped by Ctrl-C before the first frame was shown; "
                                         r"nothing was recorded"):
        drive_video(animated.avatar, model, cam, out, transfer=TransferConfig(relative=False), size=64,
                    tracker=UNBOUNDED)
    assert not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_driven_frames_reach_a_virtual_camera_and_a_missing_one_is_explained(model, animated, talking_clip,
                                                                           tmp_path, monkeypatch):
    import sys
    import types

    from engine.drive.virtualcam import VirtualCamera, VirtualCameraError

    sent: list = []

    class FakeCamera:          # pyvirtualcam.Camera's documented interface
        def __init__(self, width, height, fps, device=None):
            self.width, self.height, self.fps, self.device = width, height, fps, "/dev/video9"

        def send(self, frame):
            assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
            sent.append(frame)

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "pyvirtualcam", types.SimpleNamespace(Camera=FakeCamera))
    vcam = VirtualCamera(fps=30)
    path, _ = talking_clip
    stats = drive_video(animated.avatar, model, path, tmp_path / "o.mp4", relative=False, size=64, smoothing=0.0,
                        tracker=UNBOUNDED, on_frame=vcam.send)
    assert len(sent) == stats.frames == 16 and vcam.name == "/dev/video9"

    def no_device(**kw):
        raise RuntimeError("'v4l2loopback' backend: no device found")

    monkeypatch.setitem(sys.modules, "pyvirtualcam", types.SimpleNamespace(Camera=no_device))
    with pytest.raises(VirtualCameraError, match="no device to send to.*modprobe v4l2loopback"):
        VirtualCamera(fps=30).send(np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)            # not installed
    with pytest.raises(VirtualCameraError, match="pyvirtualcam is not installed; pip install pyvirtualcam"):
        VirtualCamera(fps=30)
