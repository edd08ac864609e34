"""The desktop app: the control panel (Dear PyGui) and the stage window (GLFW + moderngl) in
one UI thread, a render thread and a job thread.

Frame loop (`App.step`): poll GLFW (mouse, drops) -> run queued Dear PyGui callbacks (they only
change `UiState` and ask for a render) -> drain job events -> show the newest rendered frame on
the stage -> draw the panel. Nothing slow runs on the UI thread: renders happen on
`RenderThread`, builds, refines and exports on `Jobs`."""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.expressions import Pose, expression_names, posed
from engine.service import AvatarService
from spatialavatar_app.app.drops import classify_drop
from spatialavatar_app.app.interactive import InteractiveScale, scaled_size
from spatialavatar_app.app.jobs import JobEvent, Jobs
from spatialavatar_app.app.orbit import OrbitView
from spatialavatar_app.app.stage import BACKGROUND

PANEL_SIZE = (470, 980)
MAX_UI_FPS = 60.0
BUSY_UI_FPS = 40.0      # while a render is pending: the panel's software-GL frames leave the renderer the cores


@dataclass
class UiState:
    """Everything the panel edits. The render reads it through the service."""

    weights: dict[str, float] = field(default_factory=dict)
    pose: Pose = Pose()
    view: OrbitView = OrbitView()
    resolution: int = 512
    video: Path | None = None
    export_dir: Path = Path("out")


@dataclass
class Stats:
    ui_frames: int = 0
    shown: int = 0              # new avatar frames put on stage
    since: float = 0.0
    ui_fps: float = 0.0
    avatar_fps: float = 0.0
    requested: int = 0          # render requests up to `since`


class App:
    def __init__(self, service: AvatarService, resolution: int = 512, export_dir: Path = Path("out"),
                 stage_size: tuple[int, int] = (720, 720), stage_renderer: str | None = None) -> None:
        self.service = service
        self.stage_renderer = stage_renderer     # "gl": splats drawn in the stage; None: chosen from its GL_RENDERER
        self.splats = None                  # StageSplats while the gl backend draws in the stage
        self.state = UiState(resolution=resolution, export_dir=export_dir)
        self.jobs = Jobs()
        self.stage_size = stage_size
        self.stats = Stats(since=time.perf_counter())
        self._last_frame = None             # the Frame on stage (None: read back from the stage's gl drawing)
        self._shown_size = (0, 0)           # (height, width) of the picture on stage
        self.frames_shown = 0               # avatar frames put on stage since the start
        self.recorder = None
        self.events: list[str] = []         # every status line, for tests and the log
        self._drops: list[list[str]] = []
        self._waiting_for: tuple[int, float, str] | None = None   # (render request, t0, what) to time
        self._stage_px = (0, 0)
        self._video_thumb = None            # first frame of the loaded video
        self._refined_on = None             # (video stem, tracking) the current avatar was refined on, for polish
        self.live = None                    # engine.drive.live.LiveDriver while driving
        self._live_seq = -1                 # index of the last live frame posed
        self._live_shown: dict[int, object] = {}   # render request -> live frame, for the latency
        self._threads_before_drive: int | None = None
        self._live_rgb: np.ndarray | None = None   # the newest camera frame while driving
        self._record_camera_width = 0       # > 0: recordings put the camera (this wide) left of the avatar
        self.interactive = InteractiveScale()   # the render size while the input moves
        self._running = False

    # ---- lifetime
    def open(self) -> None:
        import dearpygui.dearpygui as dpg

        from engine.io.presets import preset_names
        from spatialavatar_app.app.glx import GLXKeeper
        from spatialavatar_app.app.panel import Panel
        from spatialavatar_app.app.render_thread import RenderThread
        from spatialavatar_app.app.stage import StageWindow

        self.dpg = dpg
        # Mesa's software rasterizer (llvmpipe) draws the panel and the stage on the UI thread
        # instead of waking worker threads that compete with the renderer's for the cores
        # (bench ui at 512²: about +2 avatar FPS on 2 cores); hardware drivers ignore it.
        os.environ.setdefault("LP_NUM_THREADS", "0")
        dpg.create_context()
        dpg.configure_app(manual_callback_management=True)
        dpg.create_viewport(title="SpatialAvatar-0", width=PANEL_SIZE[0], height=PANEL_SIZE[1], x_pos=0, y_pos=0)
        self.panel = Panel(self, expression_names(self.service.model), preset_names("expressions"),
                           preset_names("cameras"))
        dpg.setup_dearpygui()
        dpg.show_viewport()
        dpg.set_primary_window(self.panel.window, True)
        dpg.render_dearpygui_frame()
        self._glx = GLXKeeper()
        self._glx.save()
        self.stage = StageWindow(*self.stage_size, position=(PANEL_SIZE[0] + 10, 0), on_view=self.change_view,
                                 on_drop=self._drops.append, on_reset=self.reset_view)
        self._glx.restore()
        from spatialavatar_app.app.stage_gl import StageSplats, use_stage_gl

        if use_stage_gl(self.stage_renderer, self.stage.gl_renderer, self.service.model.device):
            self.splats = self._guard("the gl backend in the stage", lambda: StageSplats(self.stage))
            self._glx.restore()
        self.renders = RenderThread(self.service, rasterize=self.splats is None)
        self._running = True
        self._avatar_changed()
        self._push_pose()
        self.status(f"ready: {self.backend} renderer on {self.service.model.device} (stage OpenGL: "
                    f"{self.stage.gl_renderer}); drop portraits, a video or an avatar on the stage")

    def step(self) -> None:
        """One frame of the UI loop."""
        import glfw

        now = time.perf_counter()
        glfw.poll_events()
        # Every handler runs guarded: a failure is a red line and the app (with a running refine
        # and anything unsaved) stays up; Dear PyGui's own run_callbacks would re-raise it.
        while self._drops:
            paths = self._drops.pop(0)
            self._guard("drop", lambda: self.open_paths(paths), trace=True)
        self._run_callbacks(self.dpg.get_callback_queue())
        for ev in self.jobs.drain():
            self._guard("job result", lambda: self._on_job(ev), trace=True)
        if self.renders.error:
            self.status(self.renders.error, error=True)
            self.renders.error = None
        if self.stage.size != self._stage_px:
            self._stage_px = self.stage.size
            self._push_view()
        self._poll_drive()
        if self.interactive.settle(now):           # the input is still: the full-resolution picture
            self._push_view()
        if not self._present(now) and self.recorder is not None:
            self._record(now, None)          # keeps the recording's clock with the last picture
        self.stage.draw()
        self._glx.restore()
        self._update_stats(now)
        self.dpg.render_dearpygui_frame()
        self.stats.ui_frames += 1

    def _present(self, now: float) -> bool:
        """Put the newest rendered frame, if any, on stage (uploaded; drawn by `stage.draw`)."""
        new = self.renders.take()
        if new is None:
            return False
        if self._live_shown:
            answered = [seq for seq in self._live_shown if seq <= new.seq]
            live_frame = self._live_shown[max(answered)] if answered else None
            if live_frame is not None and self.live is not None:
                self.live.displayed(live_frame, new.seconds * 1000)
            self._live_shown = {k: v for k, v in self._live_shown.items() if k > new.seq}
        if new.posed is not None:          # the gl backend draws in the stage's own context
            self.stage.show_texture(self.splats.draw(*new.posed))
            self._glx.restore()
            self._last_frame, self._shown_size = None, (new.posed[1].height, new.posed[1].width)
        else:
            self.stage.show(new.rgba)
            self._last_frame, self._shown_size = new.frame, tuple(new.frame.alpha.shape)
        self.stats.shown += 1
        self.frames_shown += 1
        if self._waiting_for and new.seq >= self._waiting_for[0]:
            _, t0, what = self._waiting_for
            self._waiting_for = None
            self.status(f"{what}: on screen {now - t0:.2f} s after the request")
        if self.recorder is not None and self._full_size(self._shown_size):   # not a frame asked before it began
            self._record(now, self._stage_image(self.last_frame))
        return True

    @property
    def backend(self) -> str:
        """The live backend's name, as the panel shows it."""
        return "gl (in the stage)" if self.splats is not None else self.service.renderer_name

    @property
    def last_frame(self):
        """The `Frame` on stage (read back from the stage's framebuffer when the gl backend drew
        it; call from the UI thread); None before the first."""
        if self._last_frame is None and self.splats is not None and self.frames_shown:
            self._last_frame = self.splats.read()
            self._glx.restore()
        return self._last_frame

    def settle(self, timeout: float = 60.0) -> None:
        """Step until every requested render is on stage and the input has come to rest, so the
        picture on stage is the full-size one (for tests and benchmarks)."""
        t0 = time.perf_counter()
        while self.interactive.moving or not (self.renders.idle and self.renders.take_peek() is None):
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"the requested render did not reach the stage within {timeout:.0f} s")
            self.step()

    def running(self) -> bool:
        return self._running and self.dpg.is_dearpygui_running() and not self.stage.should_close()

    def paced_step(self) -> None:
        """`step`, then wait so the loop runs at most at MAX_UI_FPS (BUSY_UI_FPS while a render
        is pending). A frame finished during the wait goes on stage at once, without a panel
        frame: the avatar's frame rate is then the renderer's, not a beat of the UI loop's."""
        t0 = time.perf_counter()
        self.step()
        cap = MAX_UI_FPS if self.renders.idle else BUSY_UI_FPS
        deadline = t0 + 1 / cap
        while (rest := deadline - time.perf_counter()) > 0:   # leaves the cores to the renderer and the jobs
            if self.renders.wait_fresh(rest) and self._present(time.perf_counter()):
                self.stage.draw()
                self._glx.restore()

    def run(self) -> None:
        try:
            while self.running():
                self.paced_step()
        finally:
            self.close()

    def close(self) -> None:
        if not self._running:
            return
        self._running = False
        self.jobs.cancel()
        self.jobs.join(10)
        self.stop_drive()
        if self.recorder is not None:
            self.toggle_recording()
        self.renders.stop()
        if self.splats is not None:
            self.splats.release()
        self.stage.close()
        self.dpg.destroy_context()

    # ---- status
    def status(self, text: str, error: bool = False) -> None:
        self.events.append(("error: " if error else "") + text)
        self.panel.status(text, error)

    def _run_callbacks(self, jobs) -> None:
        """Dear PyGui's queued callbacks, each guarded: one that raises is an error line naming
        its control, and the rest still run."""
        for job in jobs or ():
            if job[0] is not None:
                self._guard(self._control_name(job[1]), lambda: self.dpg.run_callbacks([job]), trace=True)

    def _control_name(self, item) -> str:
        """The label of the panel item ``item`` (what an error line names), or "control"."""
        try:
            return self.dpg.get_item_label(item) or "control"
        except Exception:  # noqa: BLE001 - an item gone or not a widget: a name is all we want
            return "control"

    def _guard(self, what: str, fn: Callable[[], object], trace: bool = False) -> object:
        """Run ``fn``; any failure becomes an error line naming ``what`` (``trace``: and its
        traceback on stderr, for failures nothing expected)."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the UI shows errors, it never crashes
            if trace:
                traceback.print_exc()
            self.status(f"{what}: {e}", error=True)
            return None

    def _update_stats(self, now: float) -> None:
        st = self.stats
        if now - st.since < 0.5:
            return
        dt = now - st.since
        st.ui_fps, st.avatar_fps = st.ui_frames / dt, st.shown / dt
        asked, st.requested = self.renders.requested - st.requested, self.renders.requested
        st.ui_frames, st.shown, st.since = 0, 0, now
        ms = self.renders.mean_seconds()
        if st.avatar_fps * dt < 0.9 * asked:     # renders asked for faster than they come: the machine is the limit
            was = self.interactive.scale()
            self.interactive.observe(now, st.avatar_fps)
            if self.interactive.scale() != was:
                self._set_camera()
        h, w = self._shown_size
        self.panel.update_stats(f"{self.backend} on {self.service.model.device}",
                                f"UI {st.ui_fps:.0f} FPS | avatar {st.avatar_fps:.1f} FPS | "
                                f"render {ms * 1000 if ms else 0:.0f} ms at {w}x{h}")

    # ---- pose and view
    def set_weight(self, name: str, value: float) -> None:
        self.state.weights[name] = float(value)
        self._push_pose()

    def set_pose(self, fld: str, index: int, value: float) -> None:
        cur = list(getattr(self.state.pose, fld))
        cur[index] = float(value)
        self.state.pose = dataclasses.replace(self.state.pose, **{fld: tuple(cur)})
        self._push_pose()

    def apply_preset(self, name: str) -> None:
        from engine.io.presets import load_expression_preset

        weights = self._guard(f"preset {name}", lambda: load_expression_preset(name))
        if weights is None:
            return
        self.state.weights = dict(weights)
        self.panel.set_preset_choice(name)
        self.panel.update_sliders(self.state.weights, self.state.pose)
        self._push_pose()

    def save_preset(self, name: str) -> None:
        from engine.io.presets import save_expression_preset

        path = self._guard("save preset", lambda: save_expression_preset(name.strip(), self.state.weights))
        if path is not None:
            self.dpg.configure_item(self.panel.ids.preset, items=self._preset_items())
            self.status(f"saved preset {name.strip()} to {path}")

    def _preset_items(self) -> list[str]:
        from engine.io.presets import preset_names

        return preset_names("expressions")

    def reset_pose(self) -> None:
        self.state.weights, self.state.pose = {}, Pose()
        self.panel.update_sliders({}, self.state.pose)
        self._push_pose()

    def _push_pose(self) -> None:
        model = self.service.model
        try:
            params = posed(self.service.neutral(), model, self.state.weights, self.state.pose)
        except ValueError as e:
            self.status(str(e), error=True)
            return
        self.service.set_params(params)
        self._moved()
        self.renders.request()

    def _moved(self) -> None:
        """An input that re-renders: while inputs keep coming, render at the interactive size."""
        was = self.interactive.scale()
        self.interactive.touch(time.perf_counter())
        if self.interactive.scale() != was:
            self._set_camera()

    def change_view(self, change: Callable[[OrbitView], OrbitView]) -> None:
        self.state.view = change(self.state.view)
        self.interactive.touch(time.perf_counter())
        self._push_view()

    def reset_view(self) -> None:
        self.state.view = OrbitView()
        self.panel.set_camera_choice("front")
        self._push_view()

    def set_camera_preset(self, name: str) -> None:
        from engine.io.presets import load_camera_preset

        c = self._guard(f"camera preset {name}", lambda: load_camera_preset(name))
        if c is not None:
            self.state.view = OrbitView(c.get("yaw", 0.0), c.get("pitch", 0.0), c.get("distance", 0.9),
                                        c.get("fov_y", 20.0))
            self.panel.set_camera_choice(name)
            self._push_view()

    def set_resolution(self, size: int) -> None:
        self.state.resolution = int(size)
        self._push_view()

    def toggle_fullscreen(self) -> None:
        self.stage.toggle_fullscreen()

    def _push_view(self) -> None:
        self._set_camera()
        self.renders.request()

    def _set_camera(self) -> None:
        """The service's camera at the interactive scale (1 at rest, and always while recording)."""
        self.interactive.enabled = self.recorder is None
        self.service.set_camera(self.state.view.camera(*self._render_size(self.interactive.scale())))

    def _render_size(self, scale: float) -> tuple[int, int]:
        """(width, height): the window's aspect (so nothing is letterboxed), the panel's resolution
        times ``scale``."""
        fw, fh = self.stage.size
        return scaled_size(self.state.resolution, fw / max(fh, 1), scale)

    def full_camera(self):
        """The camera at the panel's full resolution (screenshots)."""
        return self.state.view.camera(*self._render_size(1.0))

    def _full_size(self, size: tuple[int, int]) -> bool:
        """Whether a picture of ``size`` (height, width) is at the full resolution (not the interactive size)."""
        return tuple(size) == self._render_size(1.0)[::-1]

    # ---- opening things
    def open_paths(self, paths: Sequence[str | Path]) -> None:
        """What a drop or the file dialog does."""
        action = classify_drop(paths)
        if action.kind == "reject":
            self.status(action.message, error=True)
            return
        if action.kind == "build":
            self.build(list(action.paths))
            return
        if action.kind == "video":
            self.load_video(action.paths[0])
            return
        path = action.paths[0]
        opener = self.service.load if action.kind == "avatar" else self.service.open_ply
        if self._guard(f"open {path.name}", lambda: opener(path) or True):
            self._refined_on = self._tracking_beside(path) if action.kind == "avatar" else None
            self._avatar_changed()
            self._push_pose()
            self._time_next_frame(f"opened {path.name}")

    def _tracking_beside(self, path: Path):
        """(video stem, tracking) of a refined avatar bundle with the tracking it trained on beside
        it (as refine writes them), so polish can continue it; None otherwise."""
        from engine.io import AvatarFileError
        from engine.io.params import load_params
        from engine.refine.session import tracking_path

        refined = _meta(self.service.avatar, "refined", dict) if self.service.avatar else None
        beside = tracking_path(path)
        if not refined or not isinstance(refined.get("video"), str) or not beside.exists():
            return None
        try:
            tracking = load_params(beside)[0]
        except AvatarFileError as e:
            self.status(f"{beside.name} is not a tracking file ({e}); polish needs a new refine", error=True)
            return None
        self.status(f"{path.name} was refined on {refined['video']}; with that video loaded, polish continues it")
        return refined["video"], tracking

    def load_default(self) -> None:
        """The built-in default avatar, on the job thread (built on first use: seconds)."""
        from engine.service import default_avatar

        def work(r):
            r.progress(0.0, "default avatar")
            self.service.set_avatar(default_avatar(self.service.model))
            return None

        self._start_job("default avatar", work, "loading the default avatar ...")

    def build(self, paths: list[Path]) -> None:
        from engine.io.media import read_image

        t0 = time.perf_counter()

        def work(r):
            thumbs = []
            for p in paths:
                try:
                    thumbs.append(read_image(p, max_side=256))
                except Exception:  # noqa: BLE001 - the build reports the bad file by name
                    thumbs.append(None)
            avatar = self.service.build_avatar(paths, progress=lambda stage, f: r.progress(f, stage), cancel=r.cancel)
            return avatar, [t for t in thumbs if t is not None], t0

        self._start_job("build", work, f"building an avatar from {len(paths)} portrait(s) ...")

    def load_video(self, path: Path) -> None:
        from engine.io.media import VideoReader

        def probe():
            with VideoReader(path) as v:
                first = next(iter(v))
                return v, first
        got = self._guard(f"video {path.name}", probe)
        if got is None:
            return
        reader, first = got
        self.state.video = Path(path)
        self._video_thumb = first
        self.panel.update_video(f"{path.name}: {reader.size[0]}x{reader.size[1]}, {reader.n_frames} frames")
        self.panel.update_preview(first)
        self.status(f"loaded video {path.name}; click Refine to refine an avatar on it")

    # ---- refine
    def start_refine(self, preset: str = "fast", from_current: bool = False, iterations: int | None = None) -> None:
        """Refine on the loaded video. ``preset`` "polish" continues the avatar the last refine
        made on this video, on the tracking it trained on (``from_current`` is implied)."""
        if self.state.video is None:
            self.status("load a video first (Open video... or drop one on the stage)", error=True)
            return
        video = self.state.video
        out_dir = self.state.export_dir
        overrides = {} if iterations is None else {"iterations": iterations}
        tracking = None
        if preset == "polish":
            if self._refined_on is None or self._refined_on[0] != video.stem:
                self.status(f"polish continues an avatar refined on {video.name}: refine it with the full "
                            "schedule first", error=True)
                return
            tracking, from_current = self._refined_on[1], True

        from engine.io.params import save_params
        from engine.refine.session import tracking_path

        def work(r):
            def progress(stage, fraction, step):
                if step is None:
                    r.progress(fraction, stage)
                else:
                    r.progress(fraction, f"refining {step.iteration}/{step.total}", step)
            out_dir.mkdir(parents=True, exist_ok=True)
            result = self.service.refine_video(video, preset, from_current, progress, r.cancel,
                                               out_dir / f"{video.stem}.refine.ckpt", tracking, **overrides)
            base = f"{video.stem}.{'polished' if preset == 'polish' else 'refined'}"
            path, n = out_dir / f"{base}.savatar", 2
            while path.exists():                 # a later refine never replaces an earlier one
                path, n = out_dir / f"{base}-{n}.savatar", n + 1
            self.service.save(path)
            save_params(result.tracking, tracking_path(path))     # for `eval refine` and `refine --preset polish`
            return result, path, video

        self._start_job("refine", work, f"refining on {video.name} ({preset}) ...")

    def cancel_job(self) -> None:
        if self.jobs.busy:
            self.jobs.cancel()
            self.status(f"cancelling {self.jobs.current} ...")
        else:
            self.status("nothing to cancel")

    # ---- live driving
    def start_drive(self, source: str = "webcam", device: int = 0, mirror: bool = True) -> None:
        """Drive the avatar from a camera (``source`` "webcam") or the loaded video played like one."""
        import torch

        from engine.drive.pipeline import DrivePipeline
        from engine.drive.live import LiveDriver
        from engine.drive.realtime import RealtimeConfig, RealtimeTracker
        from engine.drive.sources import VideoSource, WebcamSource
        from engine.drive.transfer import TransferConfig

        if self.live is not None:
            self.status("already driving; Stop first", error=True)
            return
        if self.service.avatar is None:
            self.status("a .ply scene cannot be driven: open or build an avatar", error=True)
            return
        if source == "webcam":
            src = self._guard("webcam", lambda: WebcamSource(int(device), mirror=bool(mirror)))
        elif self.state.video is None:
            self.status("load a video first (Open video... or drop one on the stage)", error=True)
            return
        else:
            src = self._guard("video", lambda: VideoSource(self.state.video, realtime=True))
        if src is None:
            return
        opts = self.panel.drive_options()
        cfg = TransferConfig(relative=opts["relative"], head_pose=opts["head_pose"], gaze=opts["gaze"])
        # One torch thread while driving: tracking and rendering then each have a core (LiveDriver's note).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            pipeline = DrivePipeline(self.service.model.expr_names, self.service.neutral(), cfg, opts["smoothing"])
            tracker = RealtimeTracker(self.service.model, RealtimeConfig(threads=None))
            self.live = LiveDriver(src, tracker, pipeline).start()
        except Exception as e:  # noqa: BLE001 - a drive that cannot start is a message; the camera is let go
            torch.set_num_threads(threads)
            self._guard("close the source", src.close)
            self.status(f"drive: cannot start ({e})", error=True)
            return
        self._threads_before_drive = threads
        self._live_seq = -1
        self.status(f"driving from {'camera ' + str(device) if source == 'webcam' else self.state.video.name}")

    def stop_drive(self) -> None:
        if self.live is None:
            return
        import torch

        live, self.live = self.live, None
        live.stop()
        if self._threads_before_drive:
            torch.set_num_threads(self._threads_before_drive)
        self._live_shown.clear()
        self.status(f"driving stopped ({live.frames} frames)" + (f": {live.end_reason}" if live.end_reason else ""))

    def calibrate_drive(self) -> None:
        if self.live is None:
            self.status("start driving first", error=True)
            return
        self.live.calibrate()
        self.status("calibrating: the next frame with a face is the driver's neutral")

    def update_drive_options(self) -> None:
        from engine.drive.transfer import TransferConfig

        if self.live is not None:
            o = self.panel.drive_options()
            self.live.set_transfer(TransferConfig(relative=o["relative"], head_pose=o["head_pose"], gaze=o["gaze"]))

    def set_drive_smoothing(self, strength: float) -> None:
        if self.live is not None:
            self.live.set_smoothing(float(strength))

    def _poll_drive(self) -> None:
        live = self.live
        if live is None:
            return
        if not live.running:
            self.stop_drive()
            if live.error:
                self.status(f"driving failed: {live.error}", error=True)
            return
        frame = live.latest(after=self._live_seq)
        if frame is None:
            return
        self._live_seq = frame.index
        self._live_rgb = frame.rgb
        self.service.set_params(frame.params)
        self._moved()                                # the preview follows the interactive size
        self._live_shown[self.renders.request()] = frame
        if frame.index % 3 == 0:                     # the preview at ~10 FPS is enough
            st = live.stats()
            text = (f"{st.get('fps', 0):.1f} FPS tracked | capture->screen {st.get('latency', 0):.0f} ms\n"
                    f"landmarks {st.get('landmarks', 0):.0f} | solve {st.get('solve', 0):.0f} | "
                    f"render {st.get('render', 0):.0f} ms" + ("" if frame.tracked.found else "\nno face: easing to neutral"))
            self.panel.update_camera(_with_landmarks(frame.rgb, frame.tracked.landmarks), text)

    # ---- export
    def set_export_dir(self, text: str) -> None:
        self.state.export_dir = Path(text).expanduser()

    def _export_path(self, stem: str, suffix: str) -> Path | None:
        """A new file in the export folder (``stem-DATE-TIME[-N]suffix``: never an existing one),
        or None with an error line when the folder cannot be made."""
        folder = self.state.export_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.status(f"export folder {folder}: cannot be created ({e.strerror or e})", error=True)
            return None
        base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = folder / f"{base}{suffix}", 2
        while path.exists():
            path, n = folder / f"{base}-{n}{suffix}", n + 1
        return path

    def screenshot(self) -> Path | None:
        """The frame on stage as an RGBA PNG (transparent background)."""
        if self.last_frame is None:
            self.status("nothing on stage yet", error=True)
            return None

        f = self.last_frame
        if not self._full_size(self._shown_size):                   # an interactive-size frame
            f = self._guard("screenshot", lambda: self.service.render(self.full_camera()))
            if f is None:
                return None

        def write():
            import imageio.v3 as iio

            a = f.alpha.cpu().clamp(0, 1)[..., None]
            rgb = (f.rgb.cpu() / a.clamp_min(1e-6)).clamp(0, 1) * (a > 0)
            rgba = (np.concatenate([rgb.numpy(), a.numpy()], -1) * 255 + 0.5).astype(np.uint8)
            from engine.io._atomic import atomic_path

            path = self._export_path("screenshot", ".png")
            if path is not None:
                with atomic_path(path) as tmp:
                    iio.imwrite(tmp, rgba)
            return path
        path = self._guard("screenshot", write)
        if path is not None:
            self.status(f"wrote {path}")
        return path

    def export_ply(self) -> None:
        path = self._export_path("avatar", ".ply")
        if path is not None:
            self._start_job("export .ply", lambda r: (self.service.export_ply(path), path)[1], f"writing {path} ...")

    def save_avatar(self) -> None:
        path = self._export_path("avatar", ".savatar")
        if path is not None:
            self._start_job("save avatar", lambda r: (self.service.save(path), path)[1], f"writing {path} ...")

    def toggle_recording(self) -> None:
        from spatialavatar_app.app.recorder import Recorder

        if self.recorder is None:
            path = self._export_path("recording", ".mp4")
            if path is None:
                return
            self._record_camera_width = 0
            if self.live is not None and self._live_rgb is not None and self.last_frame is not None \
                    and self.panel.drive_options()["record_camera"]:
                h = self.last_frame.alpha.shape[0]
                ch, cw = self._live_rgb.shape[:2]
                self._record_camera_width = max(2, round(cw * h / ch / 2) * 2)
            self.recorder = self._guard("record", lambda: Recorder(path))
            if self.recorder is not None:
                self._push_view()                   # recordings are full size: no interactive scale
                if self.frames_shown and self._full_size(self._shown_size):
                    self._record(time.perf_counter(), self._stage_image(self.last_frame))
                self.panel.update_recording(True)
                self.status(f"recording to {path} ...")
            return
        rec, self.recorder = self.recorder, None
        self.panel.update_recording(False)
        path = self._guard("recording", rec.stop)
        if path is not None:
            self.status(f"wrote {path} ({rec.frames} frames at {rec.fps:.0f} FPS)")

    def _record(self, now: float, image: np.ndarray | None) -> None:
        """The recorder's tick; a failed encoder ends the recording with a red line (what it wrote
        before the failure is not kept: the file is replaced only when complete)."""
        try:
            self.recorder.tick(now, image)
        except OSError as e:
            self.recorder = None
            self.panel.update_recording(False)
            self.status(str(e), error=True)

    def _stage_image(self, frame) -> np.ndarray:
        """What a recording shows: the avatar on the stage background, with the camera frame to
        its left when recording started while driving with "with the camera" on (black once the
        camera stops)."""
        image = frame.to_uint8(BACKGROUND)
        if not self._record_camera_width:
            return image
        import cv2

        h = image.shape[0]
        cam = np.zeros((h, self._record_camera_width, 3), np.uint8)
        if self.live is not None and self._live_rgb is not None:
            cam = cv2.resize(self._live_rgb, (self._record_camera_width, h), interpolation=cv2.INTER_AREA)
        return np.concatenate([cam, image], 1)

    # ---- jobs
    def _start_job(self, name: str, work, message: str) -> None:
        if not self.jobs.start(name, work):
            self.status(f"{self.jobs.current} is still running; wait or cancel it first", error=True)
            return
        self.panel.update_progress(0.0, name)
        self.status(message)

    def _on_job(self, ev: JobEvent) -> None:
        if ev.kind == "progress":
            step = ev.value
            eta = ""
            if step is not None and hasattr(step, "eta_seconds"):
                eta = f"loss {step.loss:.4f} | {step.its_per_second:.1f} it/s | ETA {step.eta_seconds / 60:.1f} min"
                if step.preview is not None:
                    self.panel.update_preview(step.preview)
            self.panel.update_progress(ev.fraction, ev.text or ev.job, eta)
            return
        if ev.kind in ("failed", "cancelled"):
            self.panel.update_progress(0.0, ev.kind)
            self.status(ev.text, error=ev.kind == "failed")
            return
        self.panel.update_progress(1.0, f"{ev.job} done")
        if ev.job in ("default avatar", "build"):
            self._refined_on = None
        if ev.job == "default avatar":
            self._avatar_changed()
            self._push_pose()
            self.status("default avatar ready")
        elif ev.job == "build":
            avatar, thumbs, t0 = ev.value
            self._avatar_changed(thumbs)
            self._push_pose()
            for n in _meta(avatar, "notes", list) or []:
                self.status(str(n), error=True)
            self._time_next_frame("avatar built", t0)
        elif ev.job == "refine":
            result, path, video = ev.value
            self._refined_on = (video.stem, result.tracking)
            self._avatar_changed([self._video_thumb])
            self._push_pose()
            head = f"{result.psnr_start:.2f} -> {result.psnr_refined:.2f} dB"
            text = (f"held-out PSNR {result.portrait_start:.2f} -> {result.portrait_refined:.2f} dB in the portrait "
                    f"matte, {head} in the head-and-neck matte" if result.portrait_start is not None else
                    f"held-out PSNR {head}")
            text += f" ({result.frames} frames at {result.width}x{result.height}); saved {path}"
            self.panel.update_result(text)
            self.status("refined: " + text)
        else:
            self.status(f"wrote {ev.value}")

    def _time_next_frame(self, what: str, t0: float | None = None) -> None:
        self._waiting_for = (self.renders.request(), t0 or time.perf_counter(), what)

    def _avatar_changed(self, thumbs: list[np.ndarray] | None = None) -> None:
        avatar = self.service.avatar
        if avatar is None:
            self.panel.update_info("static .ply scene (no head-model binding: the sliders do not move it)")
            self.panel.update_thumbnails([])
            return
        sources = [Path(str(s)).name for s in _meta(avatar, "sources", list) or []]
        text = f"{_meta(avatar, 'generator', str) or 'avatar'} avatar, {avatar.n_gaussians:,} Gaussians"
        if sources:
            text += f", from {', '.join(sources)}"
        refined = _meta(avatar, "refined", dict)
        if refined is not None:
            text += f"; refined on {refined.get('video')} ({refined.get('iterations')} it)"
        if avatar.residual is not None:
            text += ", with an expression residual"
        self.panel.update_info(text)
        if thumbs is None:
            thumbs = [avatar.thumbnail] if avatar.thumbnail is not None else []
        self.panel.update_thumbnails(thumbs)


def _meta(avatar, key: str, kind: type):
    """``avatar.metadata[key]`` when it is a ``kind``, else None: a bundle's metadata may hold
    anything JSON can, and what the panel shows must not depend on it."""
    meta = avatar.metadata if isinstance(avatar.metadata, dict) else {}
    value = meta.get(key)
    return value if isinstance(value, kind) else None


def _with_landmarks(rgb: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """The camera frame with the tracked landmarks drawn as green dots."""
    if landmarks is None:
        return rgb
    out = rgb.copy()
    h, w = out.shape[:2]
    pts = np.round(landmarks[:, :2]).astype(int)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    r = max(1, round(max(h, w) / 300))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[np.clip(pts[:, 1] + dy, 0, h - 1), np.clip(pts[:, 0] + dx, 0, w - 1)] = (60, 230, 90)
    return out


def run_app(paths: Sequence[Path] = (), renderer: str | None = None, resolution: int = 512,
            export_dir: Path = Path("out"), generator: str = "projective", checkpoint: Path | None = None,
            device=None, head_model: Path | None = None) -> None:
    """Open the app on ``paths`` (portraits, a video, an avatar bundle or a .ply), or on the
    default avatar, with the head model ``head_model`` names (a FLAME folder or .pkl; OpenHead
    when None); ``device`` is the process's (`engine.device.resolve`; None: the host).
    ``renderer``: the live backend; None chooses (gsplat on CUDA; on the CPU the gl backend in the
    stage when its OpenGL is a GPU's, else native); "gl" draws in the stage whatever the GPU."""
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model

    model = load_head_model(head_model, device)
    # The windows open at once on the plain head; the default avatar follows from a job. With the
    # gl backend in the stage the service keeps a CPU renderer for thumbnails and screenshots.
    live = app_renderer(model.device) if renderer in (None, "gl") else renderer
    service = AvatarService(model, plain_avatar(model), renderer=live, size=resolution, generator=generator,
                            checkpoint=checkpoint)
    app = App(service, resolution, export_dir, stage_renderer=renderer)
    app.open()
    if paths:
        app.open_paths(list(paths))
    else:
        app.load_default()
    app.run()


def app_renderer(device) -> str:
    """The live backend for the compute ``device``: gsplat on CUDA (the device resolver has seen
    it render), else native, else the reference. Never the headless gl renderer: its EGL context
    next to the windows' GLX contexts crashes Mesa."""
    from engine.render.select import RendererUnavailable, select

    for name in ("gsplat", "native"):
        try:
            select(device, prefer=name)
            return name
        except RendererUnavailable:
            continue
    return "reference"
