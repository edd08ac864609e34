"""The control panel (Dear PyGui). Widgets only: every callback calls one controller method of
the `App` with the widget's value (so `UiState` holds everything the panel edits and nothing
outside this module reads a widget), and the app pushes state back through the small
`update_*` methods here. Widget ids are generated and kept in one dataclass, never magic strings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.expressions import POSE_SLIDERS, Pose, group_expressions

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App

THUMB = 96              # source thumbnails, px
PREVIEW = 160           # refine preview, px
RESOLUTIONS = ("256", "384", "512", "768")
REFINE_SCHEDULES = {"fast (1.5K it, 192 px)": "fast", "full (10K it, 256 px)": "default",
                    "full + expression residual (10K it, 256 px)": "residual",
                    "residual, then polish (10K it, 256 px; 3K it, 512 px)": "quality",
                    "polish (3K it, 512 px, after full)": "polish"}
"""Refine menu label -> refine preset (presets/refine); polish continues any of the full schedules."""


@dataclass
class PanelIds:
    thumbs: list[int] = field(default_factory=list)
    avatar_info: int = 0
    backend: int = 0
    stats: int = 0
    camera: int = 0
    resolution: int = 0
    preset: int = 0
    preset_name: int = 0
    sliders: dict[str, int] = field(default_factory=dict)
    pose: dict[tuple[str, int], int] = field(default_factory=dict)
    video: int = 0
    schedule: int = 0
    from_current: int = 0
    start: int = 0
    cancel: int = 0
    progress: int = 0
    eta: int = 0
    preview: int = 0
    result: int = 0
    drive_source: int = 0
    drive_device: int = 0
    drive_mirror: int = 0
    drive_relative: int = 0
    drive_pose: int = 0
    drive_gaze: int = 0
    drive_smoothing: int = 0
    drive_stats: int = 0
    drive_record_camera: int = 0
    export_dir: int = 0
    record: int = 0
    status: int = 0
    log: int = 0
    file_dialog: int = 0
    dialog_mode: str = ""


def _rgba(img: np.ndarray | None, size: int) -> list[float]:
    """A uint8 [h, w, 3] image fitted into size x size (letterboxed) as DPG's flat RGBA floats."""
    out = np.zeros((size, size, 4), np.float32)
    out[..., 3] = 1.0
    out[..., :3] = 0.12
    if img is not None:
        import cv2

        h, w = img.shape[:2]
        s = size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        y, x = (size - nh) // 2, (size - nw) // 2
        out[y : y + nh, x : x + nw, :3] = small[..., :3] / 255.0
    return out.ravel().tolist()


class Panel:
    def __init__(self, app: "App", expression_names: list[str], presets: list[str], cameras: list[str]) -> None:
        import dearpygui.dearpygui as dpg

        self.dpg = dpg
        self.app = app
        self.ids = PanelIds()
        with dpg.texture_registry():
            self.ids.thumbs = [dpg.add_dynamic_texture(THUMB, THUMB, _rgba(None, THUMB)) for _ in range(4)]
            self._preview_tex = dpg.add_dynamic_texture(PREVIEW, PREVIEW, _rgba(None, PREVIEW))
            self._camera_tex = dpg.add_dynamic_texture(PREVIEW, PREVIEW, _rgba(None, PREVIEW))
        self.window = dpg.generate_uuid()
        with dpg.window(tag=self.window, label="SpatialAvatar-0", no_close=True):
            self._avatar_section()
            self._view_section(cameras)
            self._expression_section(expression_names, presets)
            self._pose_section()
            self._refine_section()
            self._drive_section()
            self._export_section()
            self._log_section()
        self._file_dialog()

    # ---- sections
    def _avatar_section(self) -> None:
        dpg = self.dpg
        with dpg.collapsing_header(label="Avatar", default_open=True):
            with dpg.group(horizontal=True):
                for t in self.ids.thumbs:
                    dpg.add_image(t)
            self.ids.avatar_info = dpg.add_text("", wrap=420)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Open portraits...", callback=lambda: self.open_dialog("portraits"))
                dpg.add_button(label="Open avatar / .ply...", callback=lambda: self.open_dialog("avatar"))
            dpg.add_text("or drop 1-4 portraits, a video, a .savatar or a .ply on the stage window", wrap=420)

    def _view_section(self, cameras: list[str]) -> None:
        dpg, app = self.dpg, self.app
        with dpg.collapsing_header(label="View", default_open=True):
            with dpg.group(horizontal=True):
                self.ids.camera = dpg.add_combo(cameras, default_value="front", width=170,
                                                callback=lambda s, v: app.view.set_camera_preset(v))
                dpg.add_button(label="Reset view", callback=lambda: app.view.reset_view())
                dpg.add_button(label="Fullscreen", callback=lambda: app.view.toggle_fullscreen())
            with dpg.group(horizontal=True):
                dpg.add_text("resolution")
                self.ids.resolution = dpg.add_combo(RESOLUTIONS, default_value=str(app.state.resolution), width=80,
                                                    callback=lambda s, v: app.view.set_resolution(int(v)))
                self.ids.backend = dpg.add_text("")
            self.ids.stats = dpg.add_text("")

    def _expression_section(self, names: list[str], presets: list[str]) -> None:
        dpg, app = self.dpg, self.app
        with dpg.collapsing_header(label="Expression", default_open=True):
            with dpg.group(horizontal=True):
                self.ids.preset = dpg.add_combo(presets, default_value="neutral", width=150,
                                                callback=lambda s, v: app.view.apply_preset(v))
                dpg.add_button(label="Reset", callback=lambda: app.view.reset_pose())
            with dpg.group(horizontal=True):
                self.ids.preset_name = dpg.add_input_text(hint="preset name", width=150)
                dpg.add_button(label="Save preset", callback=lambda: app.view.save_preset(dpg.get_value(self.ids.preset_name)))
            for label, group in group_expressions(names):
                with dpg.tree_node(label=f"{label} ({len(group)})"):
                    for n in group:
                        self.ids.sliders[n] = dpg.add_slider_float(
                            label=n, min_value=0.0, max_value=1.0, width=220,
                            callback=lambda s, v, name: app.view.set_weight(name, v), user_data=n)

    def _pose_section(self) -> None:
        dpg, app = self.dpg, self.app
        with dpg.collapsing_header(label="Pose (degrees)", default_open=False):
            for label, fld, i, rng in POSE_SLIDERS:
                self.ids.pose[(fld, i)] = dpg.add_slider_float(
                    label=label, min_value=-rng, max_value=rng, width=220,
                    callback=lambda s, v, key: app.view.set_pose(key[0], key[1], v), user_data=(fld, i))

    def _refine_section(self) -> None:
        dpg, app = self.dpg, self.app
        with dpg.collapsing_header(label="Refine on a video", default_open=True):
            with dpg.group(horizontal=True):
                dpg.add_button(label="Open video...", callback=lambda: self.open_dialog("video"))
                self.ids.video = dpg.add_text("no video loaded")
            label = next(k for k, v in REFINE_SCHEDULES.items() if v == app.state.refine.preset)
            self.ids.schedule = dpg.add_combo(list(REFINE_SCHEDULES), default_value=label, width=420,
                                              callback=lambda s, v: app.refining.set_preset(REFINE_SCHEDULES[v]))
            with dpg.group(horizontal=True):
                self.ids.start = dpg.add_button(label="Refine", callback=lambda: app.refining.start())
                self.ids.cancel = dpg.add_button(label="Cancel", callback=lambda: app.refining.cancel())
                self.ids.from_current = dpg.add_checkbox(label="from current avatar",
                                                         default_value=app.state.refine.from_current,
                                                         callback=lambda s, v: app.refining.set_from_current(v))
            self.ids.progress = dpg.add_progress_bar(default_value=0.0, width=420, overlay="idle")
            self.ids.eta = dpg.add_text("")
            with dpg.group(horizontal=True):
                self.ids.preview = dpg.add_image(self._preview_tex)
                self.ids.result = dpg.add_text("", wrap=250)

    def _drive_section(self) -> None:
        dpg, drive, ids = self.dpg, self.app.driving, self.ids
        o = self.app.state.drive

        def option(name: str, cast=bool):
            return lambda s, v: drive.set_option(name, cast(v))
        with dpg.collapsing_header(label="Drive (webcam or video)", default_open=False):
            with dpg.group(horizontal=True):
                ids.drive_source = dpg.add_radio_button(("webcam", "loaded video"), default_value=o.source,
                                                        horizontal=True, callback=option("source", str))
                ids.drive_device = dpg.add_input_int(label="device", default_value=o.device, width=80, min_value=0,
                                                     min_clamped=True, callback=option("device", int))
            with dpg.group(horizontal=True):
                ids.drive_mirror = dpg.add_checkbox(label="mirror", default_value=o.mirror, callback=option("mirror"))
                ids.drive_relative = dpg.add_checkbox(label="relative", default_value=o.relative,
                                                      callback=option("relative"))
                ids.drive_pose = dpg.add_checkbox(label="head pose", default_value=o.head_pose,
                                                  callback=option("head_pose"))
                ids.drive_gaze = dpg.add_checkbox(label="gaze", default_value=o.gaze, callback=option("gaze"))
            ids.drive_smoothing = dpg.add_slider_float(label="smoothing", default_value=o.smoothing, min_value=0.0,
                                                       max_value=1.0, width=220, callback=option("smoothing", float))
            with dpg.group(horizontal=True):
                dpg.add_button(label="Start", callback=lambda: drive.start())
                dpg.add_button(label="Stop", callback=lambda: drive.stop())
                dpg.add_button(label="Calibrate neutral", callback=lambda: drive.calibrate())
            ids.drive_record_camera = dpg.add_checkbox(label="Record MP4 with the camera beside the avatar",
                                                       default_value=o.record_camera, callback=option("record_camera"))
            with dpg.group(horizontal=True):
                dpg.add_image(self._camera_tex)
                ids.drive_stats = dpg.add_text("", wrap=250)

    def update_camera(self, image: np.ndarray | None, text: str) -> None:
        if image is not None:
            self.dpg.set_value(self._camera_tex, _rgba(image, PREVIEW))
        self.dpg.set_value(self.ids.drive_stats, text)

    def _export_section(self) -> None:
        dpg, app = self.dpg, self.app
        with dpg.collapsing_header(label="Export", default_open=True):
            with dpg.group(horizontal=True):
                dpg.add_text("folder")
                self.ids.export_dir = dpg.add_input_text(default_value=str(app.state.export_dir), width=330,
                                                         callback=lambda s, v: app.exporting.set_folder(v))
            with dpg.group(horizontal=True):
                dpg.add_button(label="PNG", callback=lambda: app.exporting.screenshot())
                dpg.add_button(label=".ply (this pose)", callback=lambda: app.exporting.export_ply())
                dpg.add_button(label="Avatar bundle", callback=lambda: app.exporting.save_avatar())
                dpg.add_button(label="Web page", callback=lambda: app.exporting.export_web())
                self.ids.record = dpg.add_button(label="Record MP4", callback=lambda: app.exporting.toggle_recording())

    def _log_section(self) -> None:
        dpg = self.dpg
        dpg.add_separator()
        self.ids.status = dpg.add_text("ready", wrap=420)
        with dpg.child_window(height=90, border=True) as self.ids.log:
            pass

    def _file_dialog(self) -> None:
        dpg = self.dpg
        # Dear PyGui opens it ~60 px from the left of the 470-px viewport: wider than 400 px it is cut off
        with dpg.file_dialog(show=False, width=400, height=460, file_count=4, callback=self._picked,
                             cancel_callback=lambda: None) as self.ids.file_dialog:
            dpg.add_file_extension("Supported{.jpg,.jpeg,.png,.bmp,.webp,.mp4,.mov,.avi,.mkv,.webm,.savatar,.ply}")
            dpg.add_file_extension(".*")

    def open_dialog(self, mode: str) -> None:
        self.ids.dialog_mode = mode
        self.dpg.show_item(self.ids.file_dialog)

    def _picked(self, sender, app_data) -> None:
        paths = list((app_data or {}).get("selections", {}).values())
        if paths:
            self.app.opening.open_paths(paths)

    # ---- updates from the app
    def update_sliders(self, weights: dict[str, float], pose: Pose) -> None:
        for name, item in self.ids.sliders.items():
            self.dpg.set_value(item, float(weights.get(name, 0.0)))
        for (fld, i), item in self.ids.pose.items():
            self.dpg.set_value(item, float(getattr(pose, fld)[i]))

    def update_thumbnails(self, images: list[np.ndarray]) -> None:
        for k, tex in enumerate(self.ids.thumbs):
            self.dpg.set_value(tex, _rgba(images[k] if k < len(images) else None, THUMB))

    def update_preview(self, image: np.ndarray | None) -> None:
        self.dpg.set_value(self._preview_tex, _rgba(image, PREVIEW))

    def update_info(self, text: str) -> None:
        self.dpg.set_value(self.ids.avatar_info, text)

    def update_video(self, text: str) -> None:
        self.dpg.set_value(self.ids.video, text)

    def update_stats(self, backend: str, text: str) -> None:
        self.dpg.set_value(self.ids.backend, f"backend: {backend}")
        self.dpg.set_value(self.ids.stats, text)

    def update_progress(self, fraction: float, overlay: str, eta: str = "") -> None:
        self.dpg.set_value(self.ids.progress, max(0.0, min(1.0, fraction)))
        self.dpg.configure_item(self.ids.progress, overlay=overlay)
        self.dpg.set_value(self.ids.eta, eta)

    def update_result(self, text: str) -> None:
        self.dpg.set_value(self.ids.result, text)

    def update_recording(self, on: bool) -> None:
        self.dpg.configure_item(self.ids.record, label="Stop recording" if on else "Record MP4")

    def set_presets(self, names: list[str]) -> None:
        self.dpg.configure_item(self.ids.preset, items=names)

    def set_preset_choice(self, name: str) -> None:
        self.dpg.set_value(self.ids.preset, name)

    def set_camera_choice(self, name: str) -> None:
        self.dpg.set_value(self.ids.camera, name)

    def status(self, text: str, error: bool = False) -> None:
        dpg = self.dpg
        dpg.set_value(self.ids.status, text)
        dpg.configure_item(self.ids.status, color=(255, 110, 100) if error else (220, 220, 220))
        dpg.add_text(text, parent=self.ids.log, wrap=400, color=(255, 110, 100) if error else (190, 190, 190))
        children = dpg.get_item_children(self.ids.log, 1) or []
        for old in children[:-50]:
            dpg.delete_item(old)
        dpg.set_y_scroll(self.ids.log, dpg.get_y_scroll_max(self.ids.log) + 1000)
