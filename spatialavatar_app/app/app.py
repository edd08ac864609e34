"""The desktop app: the control panel (Dear PyGui) and the stage window (GLFW + moderngl) in
one UI thread, a render thread and a job thread.

`App` is the frame loop and what every feature shares (the engine's `AvatarService`, the typed
`UiState`, the render thread, the job thread, the status line). Each feature is a controller
of its own module: `view` (expression, pose, camera), `opening` (drops, builds, videos),
`refining`, `driving` and `exporting` (PNG, .ply, bundle, web page, recordings). The panel's callbacks
call controller methods; controllers change `UiState`, call the service and ask for a render.

Frame loop (`App.step`): poll GLFW (mouse, drops) -> run queued Dear PyGui callbacks -> drain
job events (each finished job hands its typed result to the controller that started it) ->
show the newest rendered frame on the stage -> draw the panel. Nothing slow runs on the UI
thread: renders happen on `RenderThread`, builds, refines and exports on `Jobs`."""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from engine.expressions import expression_names
from engine.generator.registry import PROJECTIVE, GeneratorChoice
from engine.service import AvatarService
from spatialavatar_app.app.driving import DriveController
from spatialavatar_app.app.exporting import ExportController
from spatialavatar_app.app.interactive import InteractiveScale
from spatialavatar_app.app.jobs import JobEvent, Jobs
from spatialavatar_app.app.opening import OpenController
from spatialavatar_app.app.refining import RefineController
from spatialavatar_app.app.state import Stats, UiState
from spatialavatar_app.app.view import ViewController

PANEL_SIZE = (470, 980)
MAX_UI_FPS = 60.0
BUSY_UI_FPS = 40.0      # while a render is pending: the panel's software-GL frames leave the renderer the cores


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
        self.shown_size = (0, 0)            # (height, width) of the picture on stage
        self.frames_shown = 0               # avatar frames put on stage since the start
        self.events: list[str] = []         # every status line, for tests and the log
        self._drops: list[list[str]] = []
        self._waiting_for: tuple[int, float, str] | None = None   # (render request, t0, what) to time
        self._stage_px = (0, 0)
        self.interactive = InteractiveScale()   # the render size while the input moves
        self.panel = self.stage = self.renders = None   # made by `open` (tests give fakes)
        self.view = ViewController(self)
        self.opening = OpenController(self)
        self.refining = RefineController(self)
        self.driving = DriveController(self)
        self.exporting = ExportController(self)
        self._running = False

    # ---- lifetime
    def open(self) -> None:
        import dearpygui.dearpygui as dpg

        from engine.service import preset_names
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
        self.stage = StageWindow(*self.stage_size, position=(PANEL_SIZE[0] + 10, 0), on_view=self.view.change_view,
                                 on_drop=self._drops.append, on_reset=self.view.reset_view)
        self._glx.restore()
        from spatialavatar_app.app.stage_gl import StageSplats, use_stage_gl

        if use_stage_gl(self.stage_renderer, self.stage.gl_renderer, self.service.model.device):
            self.splats = self.guard("the gl backend in the stage", lambda: StageSplats(self.stage))
            self._glx.restore()
        self.renders = RenderThread(self.service, rasterize=self.splats is None)
        self._running = True
        self.opening.avatar_changed()
        self.view.push_pose()
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
            self.guard("drop", lambda: self.opening.open_paths(paths), trace=True)
        self._run_callbacks(self.dpg.get_callback_queue())
        for ev in self.jobs.drain():
            self.guard("job result", lambda: self._on_job(ev), trace=True)
        if self.renders.error:
            self.status(self.renders.error, error=True)
            self.renders.error = None
        if self.stage.size != self._stage_px:
            self._stage_px = self.stage.size
            self.view.push_view()
        self.driving.poll()
        if self.interactive.settle(now):           # the input is still: the full-resolution picture
            self.view.push_view()
        if not self._present(now) and self.exporting.recorder is not None:
            self.exporting.record(now, None)   # keeps the recording's clock with the last picture
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
        self.driving.shown(new.seq, new.seconds)
        if new.posed is not None:          # the gl backend draws in the stage's own context
            self.stage.show_texture(self.splats.draw(*new.posed))
            self._glx.restore()
            self._last_frame, self.shown_size = None, (new.posed[1].height, new.posed[1].width)
        else:
            self.stage.show(new.rgba)
            self._last_frame, self.shown_size = new.frame, tuple(new.frame.alpha.shape)
        self.stats.shown += 1
        self.frames_shown += 1
        if self._waiting_for and new.seq >= self._waiting_for[0]:
            _, t0, what = self._waiting_for
            self._waiting_for = None
            self.status(f"{what}: on screen {now - t0:.2f} s after the request")
        rec = self.exporting
        if rec.recorder is not None and self.view.full_size(self.shown_size):   # not a frame asked before it began
            rec.record(now, rec.stage_image(self.last_frame))
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
        self.driving.stop()
        if self.exporting.recorder is not None:
            self.exporting.toggle_recording()
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
                self.guard(self._control_name(job[1]), lambda: self.dpg.run_callbacks([job]), trace=True)

    def _control_name(self, item) -> str:
        """The label of the panel item ``item`` (what an error line names), or "control"."""
        try:
            return self.dpg.get_item_label(item) or "control"
        except Exception:  # noqa: BLE001 - an item gone or not a widget: a name is all we want
            return "control"

    def guard(self, what: str, fn: Callable[[], object], trace: bool = False) -> object:
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
                self.view.set_camera()
        h, w = self.shown_size
        self.panel.update_stats(f"{self.backend} on {self.service.model.device}",
                                f"UI {st.ui_fps:.0f} FPS | avatar {st.avatar_fps:.1f} FPS | "
                                f"render {ms * 1000 if ms else 0:.0f} ms at {w}x{h}")

    # ---- jobs
    def start_job(self, name: str, work, message: str, then: Callable[[object], None] | None = None) -> None:
        """``work(reporter)`` on the job thread; ``then(result)`` on the UI thread when it is done."""
        if not self.jobs.start(name, work, then):
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
        if ev.then is not None:
            ev.then(ev.value)

    def time_next_frame(self, what: str, t0: float | None = None) -> None:
        """Say how long after ``t0`` (now when None) the next requested render reaches the stage."""
        self._waiting_for = (self.renders.request(), t0 or time.perf_counter(), what)


def run_app(paths: Sequence[Path] = (), renderer: str | None = None, resolution: int = 512,
            export_dir: Path = Path("out"), generator: GeneratorChoice = PROJECTIVE, device=None,
            head_model: Path | None = None) -> None:
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
    service = AvatarService(model, plain_avatar(model), renderer=live, size=resolution, generator=generator)
    app = App(service, resolution, export_dir, stage_renderer=renderer)
    app.open()
    if paths:
        app.opening.open_paths(list(paths))
    else:
        app.opening.load_default()
    app.run()


def app_renderer(device) -> str:
    """The live backend for the compute ``device``: the registry's fastest that may draw the
    stage (gsplat on CUDA, which the device resolver has seen render, else native, else the
    reference; never the headless gl renderer, whose EGL context beside the windows' GLX
    contexts crashes Mesa)."""
    from engine.render.select import live_backend

    return live_backend(device)
