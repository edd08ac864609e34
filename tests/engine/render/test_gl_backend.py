"""GLRenderer (moderngl, headless EGL) against the reference renderer.

Skipped, with the reason, where no OpenGL 3.3 context can be created; on Mesa's llvmpipe
(software GL, no GPU) they run. Every test leaves the context with GL_NO_ERROR.
"""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from engine.camera import orbit_camera
from engine.render.reference import ReferenceRenderer
from engine.render.base import Renderer, RenderOptions
from engine.render.select import select
from engine.render.select import RendererUnavailable
from engine.types import Camera, Frame, Gaussians

gl_backend = pytest.importorskip("engine.render.gl_backend")
GLRenderer, GLUnavailable = gl_backend.GLRenderer, gl_backend.GLUnavailable


@pytest.fixture(scope="module")
def renderer():
    try:
        r = GLRenderer()
    except GLUnavailable as e:
        pytest.skip(f"no OpenGL 3.3 context here: {e}")
    yield r
    r.release()


@pytest.fixture(autouse=True)
def _no_gl_error(request):
    """After each test that used the module's renderer, the context reports no GL error."""
    yield
    if "renderer" in request.fixturenames:
        r = request.getfixturevalue("renderer")
        if r.ctx is not None:
            assert r.ctx.error == "GL_NO_ERROR"


def _reference(gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
    with torch.no_grad():
        return ReferenceRenderer().render(gaussians, camera, options)


def _on_white(frame: Frame) -> torch.Tensor:
    return frame.rgb + (1 - frame.alpha[..., None])


def _camera(width: int = 37, height: int = 29, f: float = 30.0) -> Camera:
    K = torch.tensor([[f, 0.0, width / 2 + 0.3], [0.0, f, height / 2 - 0.2], [0.0, 0.0, 1.0]])
    return Camera(torch.eye(4), K, width, height)


def _gaussians(means, quats, scales, opacities, colors) -> Gaussians:
    return Gaussians(*(torch.as_tensor(t, dtype=torch.float32) for t in (means, quats, scales, opacities, colors)))


def _random_scene(seed: int, n: int = 60) -> Gaussians:
    """Random Gaussians 2-4 m in front of `_camera`, plus hard cases: behind the camera,
    inside the near plane, far off-screen (the Jacobian clamp), huge, tiny (eps2d), opacity
    below alpha_min and clamped by alpha_max."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 + 2.0 * torch.rand(n, 1, generator=g)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([2.6, 2.0]) * z, z], dim=1)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.02 + 0.15 * torch.rand(n, 3, generator=g)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g) * 1.2 - 0.1  # clamped to [0, 1] by both renderers
    means[0:4, 2] *= -1
    means[4, 2] = 0.005
    means[5:10, :2] *= 6.0
    scales[10] = torch.tensor([1.5, 0.8, 1.2])
    scales[11:16] = 1e-4
    opacities[16:19] = torch.tensor([1e-3, 3.9e-3, 0.0])
    opacities[19:24] = 0.999
    return Gaussians(means, quats, scales, opacities, colors)


def test_is_a_renderer(renderer) -> None:
    assert isinstance(renderer, Renderer)
    assert (renderer.name, renderer.differentiable) == ("gl", False)


@pytest.fixture(scope="module")
def default_avatar():
    """The default avatar (62K Gaussians) at 256x256 and its reference frame."""
    from engine.animate import AnimatedAvatar
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model

    model = load_head_model()
    avatar = AnimatedAvatar(plain_avatar(model), model)
    with torch.no_grad():
        gaussians = avatar.gaussians(avatar.neutral())
    camera = orbit_camera(size=256)
    want = _reference(gaussians, camera)
    assert float(want.alpha.mean()) > 0.2  # the head fills the view
    return gaussians, camera, want


def test_default_avatar_matches_reference(renderer, default_avatar) -> None:
    """The issue's bar: mean abs difference <= 2/255 on white. Measured here (llvmpipe,
    256x256, 62K Gaussians): 0.02/255 mean, 2/255 max (a few pixels where the reference
    stops at transmittance_min and gl, blending back to front, cannot)."""
    gaussians, camera, want = default_avatar
    got = renderer.render(gaussians, camera)
    diff = (_on_white(got) - _on_white(want)).abs()
    print(f"gl vs reference, default avatar 256x256: mean abs {float(diff.mean()) * 255:.4f}/255, "
          f"max {float(diff.max()) * 255:.3f}/255")
    assert float(diff.mean()) <= 2 / 255
    assert float((got.alpha - want.alpha).abs().mean()) <= 2 / 255
    # depth is unnormalised (sum of w z); compare it relative to z where the head is opaque
    opaque = want.alpha > 0.5
    rel = ((got.depth - want.depth).abs()[opaque] / want.depth[opaque]).mean()
    assert float(rel) < 1e-3


def test_hand_made_scene_matches_reference(renderer) -> None:
    """Three overlapping Gaussians (one rotated and elongated, one partly off-screen, one
    saturating at alpha_max): per pixel within 1e-4 (measured ~2e-6, float32 rounding)."""
    s = math.sqrt(0.5)
    gaussians = _gaussians(
        means=[[0.0, 0.0, 3.0], [0.3, 0.1, 2.5], [-1.9, -1.2, 3.5]],
        quats=[[1.0, 0.0, 0.0, 0.0], [s, 0.0, 0.3, s], [0.9, 0.1, -0.2, 0.3]],
        scales=[[0.3, 0.2, 0.1], [0.5, 0.05, 0.1], [0.4, 0.4, 0.4]],
        opacities=[0.8, 0.6, 1.0],
        colors=[[1.0, 0.2, 0.1], [0.1, 0.9, 0.3], [0.2, 0.3, 1.0]])
    camera = _camera()
    want, got = _reference(gaussians, camera), renderer.render(gaussians, camera)
    assert float(want.alpha.max()) > 0.9 and float((want.alpha > 0).float().mean()) > 0.3
    for name in ("rgb", "alpha", "depth"):
        assert torch.allclose(getattr(got, name), getattr(want, name), atol=1e-4, rtol=0), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_cases_match_reference(renderer, seed: int) -> None:
    """Behind the camera, near plane, off-screen, huge, tiny, opacity at the thresholds:
    the culling and clamps agree with the reference to float precision."""
    gaussians, camera = _random_scene(seed), _camera()
    want, got = _reference(gaussians, camera), renderer.render(gaussians, camera)
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(got, name) - getattr(want, name)).abs()
        assert float(diff.mean()) < 1e-5 and float(diff.max()) < 1e-3, name


def test_options_are_honoured(renderer) -> None:
    """eps2d, alpha_min and alpha_max reach the shaders."""
    gaussians, camera = _random_scene(4), _camera()
    options = RenderOptions(eps2d=1.0, alpha_min=0.02, alpha_max=0.9)
    want, got = _reference(gaussians, camera, options), renderer.render(gaussians, camera, options)
    assert float((want.alpha - _reference(gaussians, camera).alpha).abs().max()) > 1e-2  # options matter
    for name in ("rgb", "alpha", "depth"):
        assert torch.allclose(getattr(got, name), getattr(want, name), atol=1e-4, rtol=0), name


def test_empty_scene_is_transparent(renderer) -> None:
    camera = _camera()
    empty = _gaussians(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))
    frame = renderer.render(empty, camera)
    assert frame.rgb.shape == (29, 37, 3) and frame.alpha.shape == frame.depth.shape == (29, 37)
    assert float(frame.alpha.abs().max()) == 0 and float(frame.rgb.abs().max()) == 0
    # everything culled (behind the camera) is empty as well, after a non-empty frame
    renderer.render(_random_scene(0), camera)
    behind = _random_scene(0)
    means = behind.means.clone()
    means[:, 2] = -means[:, 2].abs()
    behind = Gaussians(means, behind.quats, behind.scales, behind.opacities, behind.colors)
    assert float(renderer.render(behind, camera).alpha.max()) == 0


def test_non_finite_gaussians_are_dropped(renderer) -> None:
    gaussians, camera = _random_scene(1), _camera()
    bad = gaussians.means.clone()
    bad[30, 0], bad[31, 2], bad[32, 1] = float("nan"), float("inf"), float("-inf")
    keep = torch.ones(len(gaussians), dtype=torch.bool)
    keep[30:33] = False
    got = renderer.render(Gaussians(bad, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors),
                          camera)
    want = _reference(Gaussians(*(getattr(gaussians, f)[keep] for f in
                                  ("means", "quats", "scales", "opacities", "colors"))), camera)
    assert torch.isfinite(got.rgb).all()
    assert torch.allclose(got.rgb, want.rgb, atol=1e-4, rtol=0)


def test_sizes_dtype_and_device(renderer) -> None:
    """Changing the image size rebuilds the framebuffer; the frame has the input's dtype."""
    gaussians = _random_scene(2)
    for w, h in ((37, 29), (64, 16), (37, 29)):
        cam = _camera(w, h)
        frame = renderer.render(Gaussians(*(t.double() for t in (gaussians.means, gaussians.quats, gaussians.scales,
                                                                    gaussians.opacities, gaussians.colors))), cam)
        assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == torch.float64
        assert torch.allclose(frame.alpha.float(), _reference(gaussians, cam).alpha, atol=1e-4, rtol=0)


def test_frames_do_not_alias(renderer) -> None:
    camera = _camera()
    first = renderer.render(_random_scene(0), camera)
    kept = first.rgb.clone()
    renderer.render(_random_scene(1), camera)
    assert torch.equal(first.rgb, kept)


def test_borrowed_context(renderer) -> None:
    """A caller's context (the app's window) is used, not released, and the caller's
    framebuffer is bound again after each frame."""
    ctx = renderer.ctx
    window = ctx.simple_framebuffer((8, 8))
    window.use()
    try:
        with GLRenderer(ctx=ctx) as borrowed:
            assert borrowed.ctx is ctx
            frame = borrowed.render(_random_scene(0), _camera())
            assert float(frame.alpha.max()) > 0.5
            assert borrowed.color_texture.dtype == "f4" and borrowed.color_texture.size == (37, 29)
            assert ctx.detect_framebuffer().glo == window.glo  # what GL has bound, not moderngl's record
        assert ctx.error == "GL_NO_ERROR"
        # the borrowed context survives its renderer
        assert float(renderer.render(_random_scene(0), _camera()).alpha.max()) > 0.5
    finally:
        window.release()


def test_select_gl(renderer) -> None:
    chosen = select("cpu", prefer="gl")
    try:
        assert isinstance(chosen, GLRenderer)
    finally:
        chosen.release()
    with pytest.raises(RendererUnavailable, match="gradients"):
        select("cpu", need_grad=True, prefer="gl")


WINDOW_SCRIPT = """
import json, sys
import glfw, moderngl, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from engine.render.gl_backend import GLRenderer, upload_frame
from engine.render.reference import ReferenceRenderer
from engine.types import Camera, Gaussians
torch.manual_seed(0)
n = 40
g = Gaussians(torch.cat([torch.rand(n, 2) - 0.5, 2 + torch.rand(n, 1)], 1), torch.randn(n, 4),
              0.05 + 0.1 * torch.rand(n, 3), 0.1 + 0.8 * torch.rand(n), torch.rand(n, 3))
cam = Camera(torch.eye(4), torch.tensor([[30.0, 0, 18.5], [0, 30.0, 14.5], [0, 0, 1]]), 37, 29)
assert glfw.init(), "glfw.init failed"
glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
win = glfw.create_window(64, 64, "test", None, None)
assert win, "no OpenGL 3.3 window"
glfw.make_context_current(win)
ctx = moderngl.create_context()
gl = GLRenderer(ctx)
windowed = gl.render(g, cam)
with torch.no_grad():
    ref = ReferenceRenderer().render(g, cam)
gl.draw(g, cam)
own = np.frombuffer(gl.color_texture.read(), np.float32).reshape(29, 37, 4)
tex = upload_frame(ctx, ref)
up = np.frombuffer(tex.read(), np.float32).reshape(29, 37, 4)
print(json.dumps({"window_vs_ref": float((windowed.rgb - ref.rgb).abs().max()),
                  "upload_vs_own": float(np.abs(up - own).max()), "tex_size": list(tex.size), "error": ctx.error}))
glfw.terminate()
"""


def test_windowed_context_and_frame_upload():
    """The app's path: a GLFW window's OpenGL 3.3 context on Xvfb draws what the reference
    draws, and any backend's frame uploaded with `upload_frame` equals gl's own texture.
    Runs in a child process: Mesa crashed when a GLX window followed this module's EGL
    context in one process (the app must likewise keep to one of the two)."""
    import json
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/setup.sh --test installs it)")
    display = ":93"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        root = str(Path(__file__).resolve().parents[3])
        env = {**__import__("os").environ, "DISPLAY": display, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, root], env=env, capture_output=True, text=True,
                             timeout=120)
    finally:
        xvfb.terminate()
        xvfb.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["error"] == "GL_NO_ERROR" and r["tex_size"] == [37, 29]
    assert r["window_vs_ref"] < 1e-4
    assert r["upload_vs_own"] < 1e-4
