"""The view and pose controller: expression sliders and presets, joint angles, the orbit camera,
the render resolution and the interactive render size while the input moves."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable

from engine.expressions import Pose
from spatialavatar_app.app.interactive import scaled_size
from spatialavatar_app.app.orbit import OrbitView

if TYPE_CHECKING:
    from spatialavatar_app.app.app import App


class ViewController:
    def __init__(self, app: "App") -> None:
        self.app = app

    # ---- expression and pose
    def set_weight(self, name: str, value: float) -> None:
        self.app.state.weights[name] = float(value)
        self.push_pose()

    def set_pose(self, fld: str, index: int, value: float) -> None:
        state = self.app.state
        cur = list(getattr(state.pose, fld))
        cur[index] = float(value)
        state.pose = dataclasses.replace(state.pose, **{fld: tuple(cur)})
        self.push_pose()

    def apply_preset(self, name: str) -> None:
        from engine.service import load_expression_preset

        app = self.app
        weights = app.guard(f"preset {name}", lambda: load_expression_preset(name))
        if weights is None:
            return
        app.state.weights = dict(weights)
        app.panel.set_preset_choice(name)
        app.panel.update_sliders(app.state.weights, app.state.pose)
        self.push_pose()

    def save_preset(self, name: str) -> None:
        from engine.service import preset_names, save_expression_preset

        app = self.app
        path = app.guard("save preset", lambda: save_expression_preset(name.strip(), app.state.weights))
        if path is not None:
            app.panel.set_presets(preset_names("expressions"))
            app.status(f"saved preset {name.strip()} to {path}")

    def reset_pose(self) -> None:
        state = self.app.state
        state.weights, state.pose = {}, Pose()
        self.app.panel.update_sliders({}, state.pose)
        self.push_pose()

    def push_pose(self) -> None:
        """The state's expression and pose on the current avatar, rendered."""
        app = self.app
        try:
            app.service.set_pose(app.state.weights, app.state.pose)
        except ValueError as e:
            app.status(str(e), error=True)
            return
        self.moved()
        app.renders.request()

    def moved(self) -> None:
        """An input that re-renders: while inputs keep coming, render at the interactive size."""
        interactive = self.app.interactive
        was = interactive.scale()
        interactive.touch(time.perf_counter())
        if interactive.scale() != was:
            self.set_camera()

    # ---- the camera
    def change_view(self, change: Callable[[OrbitView], OrbitView]) -> None:
        self.app.state.view = change(self.app.state.view)
        self.app.interactive.touch(time.perf_counter())
        self.push_view()

    def reset_view(self) -> None:
        self.app.state.view = OrbitView()
        self.app.panel.set_camera_choice("front")
        self.push_view()

    def set_camera_preset(self, name: str) -> None:
        from engine.service import load_camera_preset

        c = self.app.guard(f"camera preset {name}", lambda: load_camera_preset(name))
        if c is not None:
            self.app.state.view = OrbitView(c.get("yaw", 0.0), c.get("pitch", 0.0), c.get("distance", 0.9),
                                            c.get("fov_y", 20.0))
            self.app.panel.set_camera_choice(name)
            self.push_view()

    def set_resolution(self, size: int) -> None:
        self.app.state.resolution = int(size)
        self.push_view()

    def toggle_fullscreen(self) -> None:
        self.app.stage.toggle_fullscreen()

    def push_view(self) -> None:
        self.set_camera()
        self.app.renders.request()

    def set_camera(self) -> None:
        """The service's camera at the interactive scale (1 at rest, and always while recording)."""
        app = self.app
        app.interactive.enabled = app.exporting.recorder is None
        app.service.set_camera(app.state.view.camera(*self.render_size(app.interactive.scale())))

    def render_size(self, scale: float) -> tuple[int, int]:
        """(width, height): the window's aspect (so nothing is letterboxed), the panel's resolution
        times ``scale``."""
        fw, fh = self.app.stage.size
        return scaled_size(self.app.state.resolution, fw / max(fh, 1), scale)

    def full_camera(self):
        """The camera at the panel's full resolution (screenshots)."""
        return self.app.state.view.camera(*self.render_size(1.0))

    def full_size(self, size: tuple[int, int]) -> bool:
        """Whether a picture of ``size`` (height, width) is at the full resolution (not the interactive size)."""
        return tuple(size) == self.render_size(1.0)[::-1]
