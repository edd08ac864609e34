"""The app's controllers against a fake engine API, without a window: each does what its
panel section promises, through `UiState` and the service, and says so on the status line."""
from __future__ import annotations

import math
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.headmodel.openhead import load_head_model
from engine.service import RefineResult
from engine.types import HeadParams
from spatialavatar_app.app.app import App


class Recorder:
    """Any method call is recorded as (name, args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        return lambda *args, **kw: self.calls.append((name, args))

    def named(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]


class FakeRenders:
    def __init__(self) -> None:
        self.requested = 0

    def request(self) -> int:
        self.requested += 1
        return self.requested


class FakeLive:
    def __init__(self, source, transfer, smoothing) -> None:
        self.source, self.transfer, self.smoothing = source, transfer, smoothing
        self.stopped = False
        self.frames, self.end_reason = 0, None

    def set_transfer(self, cfg) -> None:
        self.transfer = cfg

    def set_smoothing(self, s: float) -> None:
        self.smoothing = s

    def stop(self) -> None:
        self.stopped = True


class FakeService:
    """The engine API the app calls (`engine.service.AvatarService`), on the real head model,
    with every slow operation replaced by a record of the call."""

    def __init__(self, model) -> None:
        self.model = model
        self.avatar = avatar({"generator": "projective", "sources": ["a.png"]})
        self.params: HeadParams | None = None
        self.camera = None
        self.calls: list[tuple] = []

    def neutral(self) -> HeadParams:
        return self.model.neutral()

    def set_params(self, params: HeadParams) -> None:
        self.params = params

    def set_camera(self, camera) -> None:
        self.camera = camera

    def set_pose(self, weights, pose) -> HeadParams:
        from engine.expressions import posed

        self.params = posed(self.neutral(), self.model, weights, pose)
        return self.params

    def build_avatar(self, paths, progress=None, cancel=None):
        self.calls.append(("build", tuple(paths)))
        self.avatar = avatar({"sources": [str(p) for p in paths], "notes": ["left out b.png: no face"]})
        return self.avatar

    def refine_video(self, video, preset, from_current, progress, cancel, checkpoint, tracking, **over):
        self.calls.append(("refine", video, preset, from_current, tracking is not None, over))
        progress("refining", 0.5, None)
        return RefineResult(self.avatar, 20.0, 25.0, 10, 256, 256, self.model.neutral(), 19.0, 24.0)

    def save_refined(self, path: Path, tracking: HeadParams) -> None:
        self.calls.append(("save_refined", path))
        path.write_text("refined")

    def save(self, path: Path) -> None:
        self.calls.append(("save", path))
        path.write_text("bundle")

    def export_ply(self, path: Path) -> None:
        self.calls.append(("export_ply", path))
        path.write_text("ply")

    def export_web(self, path: Path) -> int:
        self.calls.append(("export_web", path))
        path.write_text("<html>")
        return 6

    def start_live(self, source, transfer, smoothing):
        self.calls.append(("start_live", source))
        return FakeLive(source, transfer, smoothing)


def avatar(metadata: dict):
    return SimpleNamespace(metadata=metadata, n_gaussians=1234, thumbnail=None, residual=None)


@pytest.fixture(scope="module")
def model():
    return load_head_model()


@pytest.fixture
def app(model, tmp_path):
    a = App(FakeService(model), resolution=256, export_dir=tmp_path / "exports")
    a.panel, a.renders = Recorder(), FakeRenders()
    a.stage = SimpleNamespace(size=(512, 256), toggled=0)
    return a


def finish_jobs(app: App) -> None:
    """Wait for the running job and hand its events to the app, as the frame loop does."""
    app.jobs.join(30)
    for ev in app.jobs.drain():
        app._on_job(ev)


def test_a_slider_sets_the_named_weight_and_the_joint_angle_and_asks_for_a_render(app, model):
    from engine.expressions import JAW_OPEN_RAD

    app.view.set_weight("mouthSmile_L", 0.8)
    app.view.set_weight("jawOpen", 0.5)                   # a joint motion, added to the jaw slider's angle
    app.view.set_pose("jaw", 0, 10.0)
    app.view.set_pose("gaze", 0, 20.0)
    p = app.service.params
    names = list(model.expr_names)
    assert float(p.expr[0, names.index("mouthSmile_L")]) == pytest.approx(0.8)
    assert float(p.jaw[0, 0]) == pytest.approx(0.5 * JAW_OPEN_RAD + math.radians(10.0), abs=1e-6)
    assert float(p.eyes[0, 1]) == pytest.approx(math.radians(20.0), abs=1e-6)    # yaw of the right eye
    assert torch.equal(p.eyes[0, :3], p.eyes[0, 3:])                            # both eyes
    assert app.state.weights == {"mouthSmile_L": 0.8, "jawOpen": 0.5} and app.state.pose.jaw == (10.0, 0.0)
    assert app.renders.requested == 4


def test_a_preset_replaces_the_weights_and_moves_the_sliders(app):
    import json

    app.view.set_weight("jawOpen", 0.5)
    app.view.apply_preset("smile")
    smile = json.loads((Path(__file__).parents[2] / "presets/expressions/smile.json").read_text())["weights"]
    assert app.state.weights == smile
    assert app.panel.named("update_sliders")[-1][0] == smile
    app.view.apply_preset("no-such-preset")
    assert app.events[-1].startswith("error: preset no-such-preset") and app.state.weights == smile


def test_the_camera_follows_the_window_aspect_at_the_panel_resolution(app):
    app.view.set_resolution(256)
    cam = app.service.camera
    assert (cam.width, cam.height) == (512, 256)            # the 2:1 stage, 256 rows
    assert app.view.full_size((256, 512)) and not app.view.full_size((128, 256))


def test_dropped_portraits_build_on_the_job_thread_and_the_result_reaches_the_panel(app, tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    app.opening.open_paths([tmp_path / "a.png"])
    finish_jobs(app)
    assert app.service.calls == [("build", (tmp_path / "a.png",))]
    assert "error: left out b.png: no face" in app.events          # the build's notes are red lines
    assert app.panel.named("update_info")[-1] == ("avatar avatar, 1,234 Gaussians, from a.png",)
    assert len(app.panel.named("update_thumbnails")[-1][0]) == 1              # the portrait's thumbnail
    assert app.events[-1] == "error: left out b.png: no face" and app._waiting_for[2] == "avatar built"
    assert app.panel.named("update_progress")[-1] == (1.0, "build done")


def test_a_bad_drop_is_a_message_and_touches_nothing(app, tmp_path):
    app.opening.open_paths([tmp_path / "notes.txt"])
    assert app.events[-1].startswith("error:") and "notes.txt" in app.events[-1]
    assert app.service.calls == [] and app.jobs.current is None


def test_refine_needs_a_video_then_never_overwrites_and_polish_continues_on_its_tracking(app, tmp_path):
    app.refining.start()
    assert app.events[-1] == "error: load a video first (Open video... or drop one on the stage)"
    app.state.video = tmp_path / "clip.mp4"
    app.refining.set_preset("polish")
    app.refining.start()
    assert "polish continues an avatar refined on clip.mp4" in app.events[-1]
    app.refining.set_preset("fast")
    for _ in range(2):
        app.refining.start(iterations=50)
        finish_jobs(app)
    saved = [c[1].name for c in app.service.calls if c[0] == "save_refined"]
    assert saved == ["clip.refined.savatar", "clip.refined-2.savatar"]
    assert app.service.calls[0] == ("refine", tmp_path / "clip.mp4", "fast", False, False, {"iterations": 50})
    assert "held-out PSNR 19.00 -> 24.00 dB in the portrait matte" in app.events[-1]
    app.refining.set_preset("polish")
    app.refining.start()
    finish_jobs(app)
    refine = [c for c in app.service.calls if c[0] == "refine"][-1]
    assert refine[2:5] == ("polish", True, True)           # from the current avatar, on its tracking
    assert [c[1].name for c in app.service.calls if c[0] == "save_refined"][-1] == "clip.polished.savatar"


def test_a_failed_job_is_a_red_line_and_a_second_job_waits(app):
    started, release = threading.Event(), threading.Event()

    def work(r):
        started.set()
        release.wait(10)
        raise OSError("disk full")

    app.start_job("export", work, "exporting ...")
    started.wait(5)
    app.start_job("other", lambda r: None, "other ...")
    assert app.events[-1] == "error: export is still running; wait or cancel it first"
    release.set()
    finish_jobs(app)
    assert app.events[-1] == "error: export failed: disk full"


def test_drive_options_live_in_the_state_and_reach_a_running_drive(app, tmp_path):
    app.driving.set_option("source", "loaded video")
    app.driving.start()
    assert app.events[-1].startswith("error: load a video first") and app.driving.live is None
    app.state.video = tmp_path / "missing.mp4"
    app.driving.start()                                     # an unreadable video: a message, no drive
    assert app.events[-1].startswith("error: video") and app.driving.live is None
    live = FakeLive(None, None, 0.5)
    app.driving.live = live
    app.driving.set_option("gaze", False)
    app.driving.set_option("smoothing", 0.9)
    assert live.transfer.gaze is False and live.transfer.head_pose is True and live.smoothing == 0.9
    assert app.state.drive.gaze is False and app.state.drive.smoothing == 0.9
    app.driving.stop()
    assert live.stopped and app.driving.live is None


def test_exports_go_to_new_files_and_a_blocked_folder_is_a_message(app, tmp_path):
    app.exporting.save_avatar()
    finish_jobs(app)
    app.exporting.export_ply()
    finish_jobs(app)
    app.exporting.export_web()
    finish_jobs(app)
    written = [c[1] for c in app.service.calls]
    assert [p.suffix for p in written] == [".savatar", ".ply", ".html"] and all(p.exists() for p in written)
    assert app.events[-1] == f"wrote {written[-1]}"
    first = app.exporting.new_path("avatar", ".ply")
    first.write_text("taken")
    assert app.exporting.new_path("avatar", ".ply") != first
    (tmp_path / "blocker").write_text("a file")
    app.exporting.set_folder(str(tmp_path / "blocker" / "exports"))
    app.exporting.export_ply()
    assert app.events[-1].startswith(f"error: export folder {tmp_path / 'blocker' / 'exports'}: cannot be created")
    assert app.exporting.screenshot() is None and app.events[-1] == "error: nothing on stage yet"


def test_the_landmark_preview_marks_the_points_inside_the_frame():
    from spatialavatar_app.app.driving import with_landmarks

    rgb = np.zeros((60, 90, 3), np.uint8)
    out = with_landmarks(rgb, np.array([[10.0, 20.0], [200.0, 5.0]]))
    assert tuple(out[20, 10]) == (60, 230, 90) and int(out.sum(-1).astype(bool).sum()) == 9   # one 3x3 dot
    assert rgb.sum() == 0
