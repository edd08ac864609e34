"""The gl backend drawing the splats straight into the stage window's own OpenGL context: no
second (headless EGL) context, no CPU rasterisation and no texture upload per frame. The stage
samples the float framebuffer's colour texture directly.

`use_stage_gl` decides: on when asked (``--renderer gl``), else automatically when the
compute device is the CPU and the stage's ``GL_RENDERER`` is a hardware one; Mesa's software
rasterisers (llvmpipe, softpipe, swrast) draw splats at 4-7 FPS at 512², slower than the
native CPU renderer, so there the native one stays.
"""
from __future__ import annotations

import re

SOFTWARE_GL = re.compile(r"llvmpipe|softpipe|swrast|software|lavapipe", re.IGNORECASE)


def is_hardware(gl_renderer: str) -> bool:
    """Whether an OpenGL ``GL_RENDERER`` string names a GPU, not a software rasteriser."""
    return bool(gl_renderer.strip()) and not SOFTWARE_GL.search(gl_renderer)


def use_stage_gl(requested: str | None, gl_renderer: str, compute_device) -> bool:
    """``requested``: the ``--renderer`` the user gave (None: automatic)."""
    if requested is not None:
        return requested == "gl"
    return compute_device.type == "cpu" and is_hardware(gl_renderer)


class StageSplats:
    """A `GLRenderer` on the stage's context; call everything from the UI thread."""

    def __init__(self, stage) -> None:
        from engine.render.gl_backend import GLRenderer

        self.stage = stage
        stage.make_current()
        self.renderer = GLRenderer(stage.ctx)

    def draw(self, gaussians, camera):
        """Draw into the renderer's framebuffer; returns its colour texture (premultiplied
        RGBA32F, image row 0 in GL's bottom row: the stage's layout)."""
        self.stage.make_current()
        self.renderer.draw(gaussians, camera)
        return self.renderer.color_texture

    def read(self):
        """The last drawing as a host `Frame` (screenshots, recordings, tests)."""
        self.stage.make_current()
        return self.renderer.read()

    def release(self) -> None:
        self.stage.make_current()
        self.renderer.release()
