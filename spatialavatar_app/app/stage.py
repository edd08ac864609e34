"""The stage window (GLFW + moderngl): shows the rendered avatar, turns mouse input into view
changes and receives OS file drops, which Dear PyGui cannot.

Mouse: left drag orbits, right or middle drag (or shift + left) pans, the wheel zooms.
Keys: R resets the view, F toggles fullscreen, Esc leaves fullscreen."""
from __future__ import annotations

from typing import Callable

import numpy as np

from spatialavatar_app.app.orbit import OrbitView

BACKGROUND = (0.16, 0.16, 0.18)

_VERT = """#version 330
uniform vec2 scale;
in vec2 pos;
out vec2 uv;
void main() { uv = pos * 0.5 + 0.5; gl_Position = vec4(pos * scale, 0.0, 1.0); }
"""
# Textures hold image row 0 in GL's bottom row (as gl_backend.upload_frame lays them out): flip v.
# Colours are premultiplied: composite over the background here.
_FRAG = """#version 330
uniform sampler2D image;
uniform vec3 background;
in vec2 uv;
out vec4 color;
void main() {
    vec4 c = texture(image, vec2(uv.x, 1.0 - uv.y));
    color = vec4(c.rgb + (1.0 - c.a) * background, 1.0);
}
"""


class StageWindow:
    """One GLFW window with its own moderngl context. Call every method from the UI thread."""

    def __init__(self, width: int = 720, height: int = 720, title: str = "SpatialAvatar-0 — stage",
                 position: tuple[int, int] | None = None,
                 on_view: Callable[[Callable[[OrbitView], OrbitView]], None] | None = None,
                 on_drop: Callable[[list[str]], None] | None = None,
                 on_reset: Callable[[], None] | None = None) -> None:
        import glfw
        import moderngl

        if not glfw.init():
            raise RuntimeError("GLFW could not start (no display?)")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        self.window = glfw.create_window(width, height, title, None, None)
        if not self.window:
            raise RuntimeError("GLFW could not open the stage window (OpenGL 3.3 needed)")
        if position is not None:
            glfw.set_window_pos(self.window, *position)
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)
        self.ctx = moderngl.create_context()
        self._prog = self.ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        quad = self.ctx.buffer(np.array([-1, -1, 1, -1, -1, 1, 1, 1], "f4").tobytes())
        self._vao = self.ctx.vertex_array(self._prog, [(quad, "2f", "pos")])
        self._prog["background"].value = BACKGROUND
        self._texture = None
        self._shown = None                 # the texture on stage: ours, or one drawn in this context (gl)
        self._on_view, self._on_drop, self._on_reset = on_view, on_drop, on_reset
        self._drag: str | None = None
        self._last = (0.0, 0.0)
        self._windowed = (0, 0, width, height)
        self.needs_draw = True             # set by a new picture, a resize or the window system (expose)
        for setter, fn in ((glfw.set_mouse_button_callback, self._mouse_button),
                           (glfw.set_cursor_pos_callback, self._cursor),
                           (glfw.set_scroll_callback, self._scroll),
                           (glfw.set_key_callback, self._key),
                           (glfw.set_drop_callback, self._drop),
                           (glfw.set_window_refresh_callback, self._refresh),
                           (glfw.set_framebuffer_size_callback, lambda w, fw, fh: self._refresh(w))):
            setter(self.window, fn)
        self._glfw = glfw

    # ---- display
    def show(self, rgba: np.ndarray) -> None:
        """Make ``rgba`` (uint8 [H, W, 4], premultiplied, image row 0 first) the picture on stage
        (uploaded now, drawn by `draw`)."""
        self._glfw.make_context_current(self.window)
        h, w = rgba.shape[:2]
        if self._texture is None or self._texture.size != (w, h):
            if self._texture is not None:
                self._texture.release()
            self._texture = self.ctx.texture((w, h), 4)
        self._texture.write(np.ascontiguousarray(rgba).tobytes())
        self._shown = self._texture
        self.needs_draw = True

    def show_texture(self, texture) -> None:
        """Make a texture of this window's context the picture on stage (the gl backend's
        framebuffer: premultiplied, image row 0 in GL's bottom row, as `show` lays it out)."""
        self._shown = texture
        self.needs_draw = True

    def make_current(self) -> None:
        self._glfw.make_context_current(self.window)

    @property
    def gl_renderer(self) -> str:
        """The OpenGL renderer string of this window's context (e.g. llvmpipe, a GPU's name)."""
        return str(self.ctx.info.get("GL_RENDERER", ""))

    def draw(self) -> None:
        """Paint and swap, when something changed: a software-GL swap of an unchanged picture
        cost the UI thread ~7 ms a frame that the renderer needed."""
        if not self.needs_draw:
            return
        self.needs_draw = False
        self._paint()
        self._glfw.swap_buffers(self.window)

    def _paint(self) -> None:
        glfw = self._glfw
        glfw.make_context_current(self.window)
        fw, fh = glfw.get_framebuffer_size(self.window)
        self.ctx.viewport = (0, 0, fw, fh)
        self.ctx.clear(*BACKGROUND)
        if self._shown is not None and fw > 0 and fh > 0:
            tw, th = self._shown.size          # letterboxed: keep the image's aspect
            s = min(fw / tw, fh / th)
            self._prog["scale"].value = (tw * s / fw, th * s / fh)
            self._shown.use(0)
            self._vao.render(5)              # TRIANGLE_STRIP

    def read(self) -> np.ndarray:
        """What the window shows, uint8 [h, w, 3] (for screenshots and tests): painted again
        into the back buffer and read before the swap (after it, the back buffer is undefined)."""
        self._paint()
        fw, fh = self._glfw.get_framebuffer_size(self.window)
        data = self.ctx.screen.read(viewport=(0, 0, fw, fh), components=3)
        image = np.frombuffer(data, np.uint8).reshape(fh, fw, 3)[::-1].copy()
        self._glfw.swap_buffers(self.window)
        return image

    @property
    def size(self) -> tuple[int, int]:
        return self._glfw.get_framebuffer_size(self.window)

    def should_close(self) -> bool:
        return bool(self._glfw.window_should_close(self.window))

    def toggle_fullscreen(self) -> None:
        glfw = self._glfw
        monitor = glfw.get_window_monitor(self.window)
        if monitor:
            x, y, w, h = self._windowed
            glfw.set_window_monitor(self.window, None, x, y, w, h, 0)
            return
        monitor = glfw.get_primary_monitor()
        if not monitor:
            return
        x, y = glfw.get_window_pos(self.window)
        w, h = glfw.get_window_size(self.window)
        self._windowed = (x, y, w, h)
        mode = glfw.get_video_mode(monitor)
        glfw.set_window_monitor(self.window, monitor, 0, 0, mode.size.width, mode.size.height, mode.refresh_rate)

    def close(self) -> None:
        if self.window is not None:
            self._glfw.destroy_window(self.window)
            self.window = None

    # ---- input
    def _mouse_button(self, window, button, action, mods) -> None:
        glfw = self._glfw
        if action == glfw.PRESS:
            pan = button in (glfw.MOUSE_BUTTON_RIGHT, glfw.MOUSE_BUTTON_MIDDLE) or mods & glfw.MOD_SHIFT
            self._drag = "pan" if pan else "orbit"
            self._last = glfw.get_cursor_pos(window)
        elif action == glfw.RELEASE:
            self._drag = None

    def _cursor(self, window, x, y) -> None:
        if self._drag is None or self._on_view is None:
            return
        dx, dy = x - self._last[0], y - self._last[1]
        self._last = (x, y)
        if self._drag == "orbit":
            self._on_view(lambda v: v.orbit(dx, dy))
        else:
            h = max(1, self._glfw.get_window_size(window)[1])
            self._on_view(lambda v: v.pan_by(dx, dy, h))

    def _scroll(self, window, dx, dy) -> None:
        if self._on_view is not None:
            self._on_view(lambda v: v.zoom(dy))

    def _key(self, window, key, scancode, action, mods) -> None:
        glfw = self._glfw
        if action != glfw.PRESS:
            return
        if key == glfw.KEY_F:
            self.toggle_fullscreen()
        elif key == glfw.KEY_ESCAPE and glfw.get_window_monitor(window):
            self.toggle_fullscreen()
        elif key == glfw.KEY_R and self._on_reset is not None:
            self._on_reset()

    def _refresh(self, window) -> None:
        self.needs_draw = True

    def _drop(self, window, paths) -> None:
        if self._on_drop is not None:
            self._on_drop(list(paths))
