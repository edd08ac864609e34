"""`python main.py bench ui`: the app's frame rate while a slider is dragged, measured in the
real app (both windows, the render thread, the UI loop paced as `App.run` paces it)."""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class DragTiming:
    size: int            # render height, pixels
    seconds: float
    ui_fps: float        # UI loop frames per second
    avatar_fps: float    # new avatar pictures put on stage per second
    render_ms: float     # mean time from the start of posing a frame to its RGBA picture (the stages overlap)
    internal: int        # median render height of the pictures shown while dragging (the interactive size)
    at_rest: int         # render height of the picture on stage once the drag stopped


def measure_drag(app, size: int, seconds: float = 5.0) -> DragTiming:
    """Drag the jawOpen slider back and forth (a full sweep each second) for ``seconds`` at
    render height ``size`` and count the UI frames and the new avatar pictures shown."""
    app.view.set_resolution(size)
    app.settle()
    frames, shown0, heights, last = 0, app.frames_shown, [], app.frames_shown
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.view.set_weight("jawOpen", 0.5 - 0.5 * math.cos(2 * math.pi * (time.perf_counter() - t0)))
        app.paced_step()
        frames += 1
        if app.frames_shown != last and app.last_frame is not None:
            last = app.frames_shown
            heights.append(int(app.last_frame.alpha.shape[0]))
    dt = time.perf_counter() - t0
    shown = app.frames_shown - shown0
    ms = 1000 * (app.renders.mean_seconds() or 0.0)
    app.view.set_weight("jawOpen", 0.0)
    app.settle()                                    # at rest: the full-size picture
    rest = int(app.last_frame.alpha.shape[0]) if app.last_frame is not None else 0
    return DragTiming(size, dt, frames / dt, shown / dt, ms, int(statistics.median(heights)) if heights else 0, rest)


def bench_ui(sizes=(256, 512), seconds: float = 5.0, stage_size: tuple[int, int] = (720, 720),
             device=None, head_model=None) -> list[DragTiming]:
    """Open the app on the default avatar of the head model ``head_model`` names (OpenHead when
    None), as `python main.py` does, on ``device`` and time a slider drag at each render size."""
    if not os.environ.get("DISPLAY"):
        raise SystemExit("bench ui opens the app's windows and needs an X display (DISPLAY is not set); "
                         "on a headless machine run it under Xvfb, e.g. `Xvfb :99 & DISPLAY=:99 python main.py bench ui`")
    from engine.headmodel.openhead import load_head_model
    from engine.service import AvatarService, default_avatar
    from spatialavatar_app.app.app import App, app_renderer

    model = load_head_model(head_model, device)
    app = App(AvatarService(model, default_avatar(model), renderer=app_renderer(model.device)), stage_size=stage_size)
    app.open()
    try:
        return [measure_drag(app, s, seconds) for s in sizes]
    finally:
        app.close()
