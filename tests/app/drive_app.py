"""Drives the real app under a display, the way a person would, and records what happened.

    python tests/app/drive_app.py OUT_DIR [--measure]

Run by tests/app/test_app_xvfb.py in a subprocess (on its own Xvfb). Writes OUT_DIR/result.json
and screenshots; with --measure it also times slider dragging (a benchmark, not a test)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(out: Path, measure: bool) -> None:
    import imageio.v3 as iio
    from PIL import ImageGrab
    from skimage import data

    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model
    from engine.service import AvatarService
    from spatialavatar_app.app.app import PANEL_SIZE, App, app_renderer

    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"events": []}
    model = load_head_model()
    app = App(AvatarService(model, plain_avatar(model), renderer=app_renderer(model.device)), resolution=256,
              export_dir=out / "exports", stage_size=(512, 512))
    app.open()                                   # as run_app does: windows first, then the default avatar
    app.opening.load_default()

    def pump(until, timeout: float, what: str) -> float:
        t0 = time.perf_counter()
        while not until():
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{what}: not within {timeout} s; events: {app.events[-5:]}")
            app.step()
        return time.perf_counter() - t0

    def settle() -> None:
        """Until every requested render is on stage."""
        app.settle()
        for _ in range(3):
            app.step()

    def shot(name: str) -> None:
        iio.imwrite(out / f"stage_{name}.png", app.stage.read())
        app._glx.restore()
        app.step()
        display = os.environ["DISPLAY"]
        ImageGrab.grab(bbox=(0, 0, *PANEL_SIZE), xdisplay=display).save(out / f"panel_{name}.png")

    def wait_for(text: str, timeout: float) -> str:
        """Pump until a new status line contains ``text`` (or an error line appears)."""
        mark = len(app.events)
        pump(lambda: any(text in e or e.startswith("error") for e in app.events[mark:]), timeout, text)
        line = next(e for e in app.events[mark:] if text in e or e.startswith("error"))
        if line.startswith("error"):
            raise RuntimeError(line)
        return line

    wait_for("default avatar ready", 120)
    settle()
    res["renderer"] = app.service.renderer_name
    shot("start")

    # A portrait dropped on the stage builds an avatar.
    portrait = out / "portrait.png"
    iio.imwrite(portrait, data.astronaut())
    t0 = time.perf_counter()
    app._drops.append([str(portrait)])          # what GLFW's drop callback does
    wait_for("avatar built: on screen", 120)
    res["drop_to_screen_s"] = time.perf_counter() - t0
    settle()
    res["built"] = app.service.avatar.metadata.get("sources")

    # Sliders (through the same controller methods the widgets call).
    neutral = app.last_frame.to_uint8()
    app.view.apply_preset("smile")
    settle()
    smile = app.last_frame.to_uint8()
    app.view.set_weight("jawOpen", 0.8)
    app.view.set_pose("head", 0, 20.0)
    settle()
    jaw = app.last_frame.to_uint8()
    changed = lambda a, b: float((np.abs(a.astype(int) - b).max(-1) > 16).mean())  # noqa: E731
    res["smile_vs_neutral"] = changed(smile, neutral)       # fraction of pixels that changed visibly
    res["jaw_vs_smile"] = changed(jaw, smile)
    app.view.set_pose("head", 0, 0.0)
    app.view.set_weight("jawOpen", 0.0)
    settle()
    shot("smile")

    if measure:
        from spatialavatar_app.app.bench_ui import measure_drag

        for size in (256, 512):
            r = measure_drag(app, size)
            res[f"drag_{size}"] = {"ui_fps": r.ui_fps, "avatar_fps": r.avatar_fps, "render_ms": r.render_ms}
        app.view.set_resolution(256)
        settle()

    # The panel's "Open..." dialog does what a drop does (its pick callback gets the selection).
    app.panel.open_dialog("sources")
    app.step()
    import dearpygui.dearpygui as dpg

    res["dialog_shown"] = bool(dpg.is_item_shown(app.panel.ids.file_dialog))
    ImageGrab.grab(xdisplay=os.environ["DISPLAY"]).save(out / "screen_dialog.png")
    dpg.hide_item(app.panel.ids.file_dialog)
    portrait2 = out / "portrait2.png"
    iio.imwrite(portrait2, data.astronaut()[:, ::-1])
    app.panel._picked(None, {"file_path_name": str(portrait2), "selections": {"portrait2.png": str(portrait2)}})
    wait_for("avatar built: on screen", 120)
    settle()
    res["built_from_dialog"] = app.service.avatar.metadata.get("sources")

    # Fullscreen (the F key and the panel button call this) and back.
    windowed = app.stage.size
    app.view.toggle_fullscreen()
    pump(lambda: app.stage.size != windowed, 10, "fullscreen")
    res["fullscreen_size"] = list(app.stage.size)
    settle()
    app.view.toggle_fullscreen()
    pump(lambda: app.stage.size == windowed, 10, "windowed again")
    res["windowed_size"] = [list(windowed), list(app.stage.size)]
    settle()

    # Exports.
    png = app.exporting.screenshot()
    res["png"] = list(iio.imread(png).shape)
    app.exporting.export_ply()
    wait_for("wrote", 60)
    app.exporting.save_avatar()
    wait_for("wrote", 60)
    app.exporting.export_web()
    wait_for("wrote", 60)
    app.exporting.toggle_recording()
    pump(lambda: False if app.exporting.recorder and app.exporting.recorder.frames < 30 else True, 30, "recording")
    app.exporting.toggle_recording()
    res["exports"] = sorted(p.name.split("-")[0] + p.suffix for p in (out / "exports").iterdir())

    # Bad drops are messages, never crashes.
    (out / "notes.txt").write_text("not an image")
    app._drops.append([str(out / "notes.txt")])
    app.step()
    app._drops.append([str(portrait)] * 5)
    app.step()
    coffee = out / "coffee.png"                  # a photo without a face: the build fails with a message
    iio.imwrite(coffee, data.coffee())
    app._drops.append([str(coffee)])
    mark = len(app.events)
    pump(lambda: any(e.startswith("error: build failed") for e in app.events[mark:]), 120, "no-face build")
    res["avatar_after_failed_build"] = Path(app.service.avatar.metadata["sources"][0]).name

    # Faults are red lines and the app stays up: an export folder that cannot be made, a panel
    # callback that raises (through the real callback dispatch), a bundle with odd metadata.
    import dataclasses

    from engine.io import save_avatar

    blocker = out / "a-file"
    blocker.write_text("a file where the export folder should be")
    app.exporting.set_folder(str(blocker / "exports"))
    app.exporting.export_ply()
    app.exporting.screenshot()
    app.exporting.set_folder(str(out / "exports"))
    button = app.dpg.add_button(label="Boom", parent=app.panel.window)

    def boom() -> None:
        raise RuntimeError("a callback failed")

    app._run_callbacks([(boom, button, None, None), (lambda: res.setdefault("next_callback_ran", True), button,
                                                     None, None)])
    app.dpg.delete_item(button)
    app.step()
    kept = sorted((out / "exports").glob("avatar-*.savatar"))[0]
    save_avatar(dataclasses.replace(app.service.avatar, metadata={"sources": 5, "generator": ["x"], "refined": "yes",
                                                                  "notes": 7}), out / "odd.savatar")
    app._drops.append([str(out / "odd.savatar")])
    wait_for("opened odd.savatar", 60)
    res["odd_sources"] = app.service.avatar.metadata["sources"]
    app._drops.append([str(kept)])
    wait_for(f"opened {kept.name}", 60)

    # A video: load it, refine 50 iterations.
    clip = out / "clip.mp4"
    make_clip(app, clip)
    app._drops.append([str(clip)])
    app.step()
    res["video"] = str(app.state.video)
    app.refining.set_preset("polish")
    app.refining.start()                         # nothing refined on this clip yet: a message
    app.refining.set_preset("fast")
    app.refining.start(iterations=50)
    t0 = time.perf_counter()
    wait_for("refined: held-out PSNR", 600)
    res["refine_s"] = time.perf_counter() - t0
    settle()
    res["refined"] = (app.service.avatar.metadata.get("refined") or {}).get("iterations")
    shot("refined")
    app._drops.append([str(out / "exports" / "clip.refined.savatar")])   # reopened from disk: polish still knows
    app.step()                                                            # its tracking (the file beside it)
    mark = len(app.events)
    app.refining.set_preset("polish")
    app.refining.start(iterations=20)            # continues it on the tracking it trained on
    pump(lambda: any(e.startswith("refined: held-out PSNR") for e in app.events[mark:]), 600, "polish")
    res["polished"] = (app.service.avatar.metadata.get("refined") or {}).get("config", {}).get("resolution")

    # Live driving, with the loaded clip standing in for a webcam.
    app.driving.set_option("source", "loaded video")
    app.driving.start()
    live, jaws = app.driving.live, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 8 and app.driving.live is not None:     # the clip ends by itself (~2 s)
        app.step()
        jaws.append(float(app.service.params.jaw[0, 0]))
        if app.exporting.recorder is None and app.driving.latest_rgb is not None and app.last_frame is not None:
            app.exporting.toggle_recording()                                    # camera | avatar while driving
    stats, frames = live.stats(), live.frames
    app.driving.stop()
    if app.exporting.recorder is not None:
        app.exporting.toggle_recording()
    rec = sorted((out / "exports").glob("recording-*.mp4"))[-1]
    res["drive_recording"] = list(iio.imread(rec, index=0).shape)
    res["drive"] = {"frames": frames, "jaw_range": max(jaws) - min(jaws), **stats}
    app.driving.set_option("source", "webcam")
    app.driving.set_option("device", 9)
    app.driving.start()                          # no camera 9 here: a message, not a crash
    res["events"] = app.events
    app.close()
    (out / "result.json").write_text(json.dumps(res, indent=1))


def make_clip(app, path: Path, n: int = 48) -> None:
    """The current avatar talking and turning a little, rendered at 256²: a video the tracker can follow."""
    import dataclasses

    import torch

    from engine.camera import orbit_camera
    from engine.expressions import apply_expressions
    from engine.io.media import write_video

    svc = app.service
    model = svc.model
    frames = []
    for i in range(n):
        p = apply_expressions(svc.neutral(), model, {"jawOpen": 0.5 * (1 + math.sin(i / 3)) / 2,
                                                     "mouthSmile_L": 0.4 * (i % 7 > 3), "mouthSmile_R": 0.4 * (i % 7 > 3)})
        p = dataclasses.replace(p, rotation=torch.tensor([[0.0, 0.15 * math.sin(i / 8), 0.0]]))
        with torch.no_grad():
            f = svc._renderer.render(svc._animated.gaussians(p), orbit_camera(size=256))
        frames.append(f.to_uint8((0.45, 0.5, 0.55)))
    write_video(path, frames, 25.0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--measure" in sys.argv[2:])
