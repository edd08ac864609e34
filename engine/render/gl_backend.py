"""OpenGL splat renderer (moderngl): the display path for any OpenGL 3.3 GPU, headless through EGL.

One instanced quad per Gaussian; ``shaders/splat.vert`` does the EWA projection of
``engine/render/projection.py`` (eps2d, Jacobian clamp, the same conics), ``shaders/splat.frag``
the per-pixel alpha of ``engine/render/reference.py`` (clamp to alpha_max, discard below
alpha_min). Gaussians are sorted back to front on the CPU each frame and blended
premultiplied (ONE, ONE_MINUS_SRC_ALPHA) into two RGBA32F attachments: colour + alpha and
alpha-weighted depth, so the `Frame` holds the same quantities as the reference's.

Differences from the reference, all within the issue's tolerance (see tests):
- no early stop at ``transmittance_min``: blending back to front cannot know the
  transmittance in front, so Gaussians behind a saturated pixel still add their
  (at most ~1e-2, usually < 1e-4) share;
- sorting is per Gaussian (by camera z), as the reference does, not per pixel.

Not differentiable: ``select`` only picks it when no gradient is needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.render.base import RenderOptions, RendererUnavailable
from engine.types import Camera, Frame, Gaussians

SHADER_DIR = Path(__file__).resolve().parents[2] / "shaders"
_FLOATS = 14  # per instance: mean 3, quat 4, scale 3, opacity 1, colour 3
_LAYOUT = ("3f 4f 3f 1f 3f/i", "in_mean", "in_quat", "in_scale", "in_opacity", "in_color")


class GLUnavailable(RendererUnavailable):
    """No usable OpenGL 3.3 context (moderngl missing, no EGL/driver, ...)."""


class GLContext:
    """A moderngl context, either created here (headless) or borrowed from the caller.

    ``GLContext()`` creates a standalone context, trying EGL first (headless, works with
    Mesa's llvmpipe and GPU drivers on Linux) and then the platform default (CGL, WGL,
    GLX). ``GLContext(ctx)`` wraps an existing context, e.g. the app's GLFW window; it is
    then never released here. Every call must come from the thread that made it current.
    """

    def __init__(self, ctx=None) -> None:
        self.owned = ctx is None
        self.ctx = self._standalone() if ctx is None else ctx

    @staticmethod
    def _standalone():
        try:
            import moderngl
        except ImportError as e:
            raise GLUnavailable(f"moderngl is not installed: {e}") from e
        errors = []
        for kwargs in ({"backend": "egl"}, {}):
            try:
                return moderngl.create_standalone_context(require=330, **kwargs)
            except Exception as e:  # noqa: BLE001 - moderngl raises plain Exception
                errors.append(f"{kwargs.get('backend', 'default')}: {e}")
        raise GLUnavailable("no OpenGL 3.3 context could be created (" + "; ".join(errors) + ")")

    def release(self) -> None:
        if self.owned and self.ctx is not None:
            self.ctx.release()
        self.ctx = None


class GLRenderer:
    """Renders `Gaussians` with OpenGL; see the module docstring.

    ``ctx``: an existing moderngl context to draw with (default: a headless one of its
    own). `render` reads the image back into a `Frame`; `draw` only renders into the
    float framebuffer, whose textures (`color_texture`, `depth_texture`) a display can
    sample directly. Image row 0 is framebuffer row 0 (GL's bottom row), so a display
    that shows the texture must flip it vertically.
    """

    name = "gl"
    differentiable = False

    def __init__(self, ctx=None) -> None:
        self._gl = GLContext(ctx)
        self.ctx = self._gl.ctx
        try:
            self.program = self.ctx.program(vertex_shader=_read_shader("splat.vert"),
                                            fragment_shader=_read_shader("splat.frag"))
        except Exception:
            self._gl.release()
            raise
        self._buffer = self.ctx.buffer(reserve=_FLOATS * 4 * 1024)
        self._vao = self.ctx.vertex_array(self.program, [(self._buffer, *_LAYOUT)])
        self.fbo = None
        self.color_texture = None
        self.depth_texture = None

    # -- public -------------------------------------------------------------------------

    def render(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
        """See `engine.render.base.Renderer`; the frame has the Gaussians' device and dtype."""
        self.draw(gaussians, camera, options)
        return self.read(gaussians.means.device, gaussians.means.dtype)

    def read(self, device=None, dtype: torch.dtype = torch.float32) -> Frame:
        """The `Frame` of the last `draw`, read back from the framebuffer (on the host unless
        ``device`` says otherwise)."""
        W, H = self.fbo.size
        color = np.empty((H, W, 4), dtype=np.float32)
        depth = np.empty((H, W), dtype=np.float32)
        self.fbo.read_into(color, components=4, attachment=0, dtype="f4")
        self.fbo.read_into(depth, components=1, attachment=1, dtype="f4")
        color_t = torch.from_numpy(color)
        out = dict(device=device, dtype=dtype) if device is not None else dict(dtype=dtype)
        return Frame(rgb=color_t[..., :3].contiguous().to(**out), alpha=color_t[..., 3].contiguous().to(**out),
                     depth=torch.from_numpy(depth).to(**out))

    def draw(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> int:
        """Render into `fbo` (no readback); returns the number of Gaussians drawn."""
        import moderngl

        data = _pack_back_to_front(gaussians, camera, options)
        n = data.shape[0]
        if n:
            if data.nbytes > self._buffer.size:
                self._buffer.orphan(max(data.nbytes, 2 * self._buffer.size))
            self._buffer.write(data)
        self._set_uniforms(camera, options)
        self._ensure_fbo(camera.width, camera.height)
        # The scope restores the caller's framebuffer (and viewport) and enable flags on exit;
        # it is released right away, as moderngl leaks scopes when the context has no gc_mode.
        scope = self.ctx.scope(framebuffer=self.fbo, enable=moderngl.BLEND)
        try:
            with scope:
                self.fbo.clear(0.0, 0.0, 0.0, 0.0)
                self.ctx.blend_equation = moderngl.FUNC_ADD
                self.ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
                if n:
                    self._vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=n)
        finally:
            scope.release()
        return n

    def release(self) -> None:
        """Free the GL objects (and the context, when it was created here)."""
        if self.ctx is None:
            return
        for obj in (self._vao, self._buffer, self.program, self.fbo, self.color_texture, self.depth_texture):
            if obj is not None:
                obj.release()
        self.fbo = self.color_texture = self.depth_texture = None
        self._gl.release()
        self.ctx = None

    def __enter__(self) -> "GLRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals ----------------------------------------------------------------------

    def _ensure_fbo(self, width: int, height: int) -> None:
        if self.fbo is not None and self.fbo.size == (width, height):
            return
        for obj in (self.fbo, self.color_texture, self.depth_texture):
            if obj is not None:
                obj.release()
        self.color_texture = self.ctx.texture((width, height), 4, dtype="f4")
        self.depth_texture = self.ctx.texture((width, height), 4, dtype="f4")
        self.fbo = self.ctx.framebuffer(color_attachments=[self.color_texture, self.depth_texture])

    def _set_uniforms(self, camera: Camera, options: RenderOptions) -> None:
        view = camera.world_to_cam.detach().to("cpu", torch.float64).numpy()
        K = camera.K.detach().to("cpu", torch.float64).numpy()
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        w, h = camera.width, camera.height
        tan_x, tan_y = 0.5 * w / fx, 0.5 * h / fy
        p = self.program
        p["u_view"].write(view.T.astype(np.float32).tobytes())  # GLSL matrices are column-major
        p["u_K"].write(K.T.astype(np.float32).tobytes())
        p["u_size"].value = (float(w), float(h))
        p["u_uv_limits"].value = (-(cx / fx + 0.3 * tan_x), (w - cx) / fx + 0.3 * tan_x,
                                  -(cy / fy + 0.3 * tan_y), (h - cy) / fy + 0.3 * tan_y)
        p["u_eps2d"].value = options.eps2d
        p["u_near"].value = options.near
        p["u_far"].value = options.far
        p["u_alpha_min"].value = options.alpha_min
        p["u_alpha_max"].value = options.alpha_max


def _read_shader(name: str) -> str:
    path = SHADER_DIR / name
    if not path.is_file():
        raise GLUnavailable(f"shader {path} not found (the gl renderer runs from a source checkout)")
    return path.read_text()


def _pack_back_to_front(gaussians: Gaussians, camera: Camera, options: RenderOptions) -> np.ndarray:
    """The drawable Gaussians as one float32 [M, 14] array, farthest first.

    Drops what the reference culls or cannot see (centre not strictly between near and
    far, opacity below alpha_min) and non-finite Gaussians. Ties keep the reverse of the
    reference's stable front-to-back order, so equal depths composite identically.
    """
    with torch.no_grad():
        packed = torch.cat([gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities[:, None],
                            gaussians.colors], dim=1).detach().to("cpu", torch.float32)
        view = camera.world_to_cam.detach().to("cpu", torch.float32)
        z = packed[:, :3] @ view[2, :3] + view[2, 3]
        keep = (z > options.near) & (z < options.far) & (packed[:, 10] >= options.alpha_min)
        keep &= torch.isfinite(packed).all(dim=1)
        ids = keep.nonzero().squeeze(1)
        order = ids[torch.argsort(z[ids], stable=True)].flip(0)
        return packed.index_select(0, order).numpy()


def upload_frame(ctx, frame: Frame, texture=None):
    """Put any renderer's `Frame` (CPU or CUDA tensors) into an RGBA32F texture laid out like
    `GLRenderer.color_texture` (premultiplied rgb + alpha, image row 0 in GL's bottom row), so
    the display path shows native, reference and gsplat frames exactly as it shows its own.
    Reuses ``texture`` when its size matches; returns the texture written.

    The copy goes through host memory; CUDA–OpenGL interop (mapping the texture as a CUDA
    graphics resource) would avoid it and is left for a machine with a GPU to measure."""
    import numpy as np

    h, w = frame.alpha.shape
    rgba = torch.cat([frame.rgb, frame.alpha[..., None]], -1).detach().to("cpu", torch.float32)
    if texture is None or texture.size != (w, h):
        if texture is not None:
            texture.release()
        texture = ctx.texture((w, h), 4, dtype="f4")
    texture.write(np.ascontiguousarray(rgba.numpy()).tobytes())
    return texture


def make(device: torch.device, need_grad: bool) -> GLRenderer:
    """The gl renderer (`engine.render.select`'s registry entry): any device's Gaussians, drawn
    by OpenGL; no backward pass."""
    if need_grad:       # checked before an instance holds a GL context
        raise RendererUnavailable("the gl renderer has no backward pass, and gradients are needed")
    return GLRenderer()
