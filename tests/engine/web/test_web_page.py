"""The exported web page in a real browser (headless Chromium, software WebGL2): it draws what the
native renderer draws for the same view and expression, its JS API changes the picture as the
native render changes, and an ARKit track plays. Skipped where Chromium or Playwright is missing
(scripts/setup.sh --test installs both when run as root)."""
from __future__ import annotations

import base64
import json
import math
import shutil

import numpy as np
import pytest
import torch

from engine.camera import orbit_camera
from engine.expressions import Pose, posed
from engine.render.select import select

TOLERANCE = 1.0 / 255
"""Mean absolute difference allowed inside the native render's alpha (> 0.5), per channel of the
premultiplied colour. Measured on the default avatar: about 0.1/255 (8-bit colour and opacity,
float16 positions, the GL pipeline's back-to-front blending against the native front-to-back)."""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh --test installs "
                                                          "Debian's chromium when run as root)")
ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """(AnimatedAvatar, path of its exported page) for the default avatar."""
    from engine.animate import AnimatedAvatar
    from engine.headmodel.openhead import load_head_model
    from engine.service import default_avatar, export_web

    model = load_head_model()
    animated = AnimatedAvatar(default_avatar(model), model)
    path = tmp_path_factory.mktemp("web") / "avatar.html"
    export_web(animated, path)
    return animated, path


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, path, size: int = 256):
    pg = browser.new_page(viewport={"width": size, "height": size})
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_function("window.avatar !== undefined", timeout=60_000)
    pg.evaluate(f"window.avatar.bare(true).size({size}, {size})")
    return pg


@pytest.fixture(scope="module")
def page(default, browser):
    pg = open_page(browser, default[1])
    yield pg
    assert pg.errors == []


def page_pixels(pg, js: str = "") -> np.ndarray:
    """[H, W, 4] premultiplied float RGBA the page renders after running ``js``."""
    px = pg.evaluate(f"(() => {{ {js}; window.avatar.render(); return window.avatar.pixels(); }})()")
    return np.frombuffer(base64.b64decode(px["base64"]), np.float32).reshape(px["height"], px["width"], 4)


def native(animated, weights=None, pose=Pose(), yaw=0.0, size=256):
    params = posed(animated.neutral(), animated.model, weights or {}, pose)
    with torch.no_grad():
        f = select(animated.model.device).render(animated.gaussians(params), orbit_camera(yaw, size=size))
    return np.concatenate([f.rgb.numpy(), f.alpha.numpy()[..., None]], -1)


def inside_error(page_rgba: np.ndarray, native_rgba: np.ndarray) -> float:
    inside = native_rgba[..., 3] > 0.5
    assert inside.mean() > 0.2                                   # the avatar fills the view
    return float(np.abs(page_rgba[..., :3] - native_rgba[..., :3])[inside].mean())


def test_the_page_draws_the_native_renderers_picture(default, page):
    animated, _ = default
    front = page_pixels(page, "window.avatar.reset().view({yaw: 0, pitch: 0})")
    assert inside_error(front, native(animated)) < TOLERANCE
    assert page.evaluate("window.avatar.info.gaussians") == len(animated.slots.face) + len(animated.outer_layer[0].slots.face)
    turned = page_pixels(page, "window.avatar.preset('smile').pose({head: [20, 0, 0], gaze: [15, 5]})"
                               ".view({yaw: 35, pitch: 0})")
    from engine.io.presets import load_expression_preset

    want = native(animated, load_expression_preset("smile"), Pose(head=(20.0, 0.0, 0.0), gaze=(15.0, 5.0)), yaw=35.0)
    assert inside_error(turned, want) < TOLERANCE
    assert np.abs(turned - front).mean() > 10 * TOLERANCE          # and it is another picture


def test_the_js_api_changes_the_picture_as_the_native_render_changes(default, page):
    animated, _ = default
    neutral = page_pixels(page, "window.avatar.reset().view({yaw: 0, pitch: 0})")
    opened = page_pixels(page, "window.avatar.set({jawOpen: 0.6})")
    want = native(animated, {"jawOpen": 0.6})
    assert inside_error(opened, want) < TOLERANCE
    changed = np.abs(opened - neutral)[..., :3].max(-1) > 0.1
    expected = np.abs(want - native(animated))[..., :3].max(-1) > 0.1
    assert expected.sum() > 300                                  # the mouth and chin move
    assert (changed & expected).sum() / (changed | expected).sum() > 0.9


def test_an_arkit_track_plays_its_frames_and_names_what_the_model_lacks(default, page):
    animated, _ = default
    fps, n = 30, 60                                              # two seconds
    frames = [{"jawOpen": 0.3 * (1 - math.cos(2 * math.pi * t / n)), "eyeBlinkLeft": 1.0 if 20 <= t < 26 else 0.0,
               "tongueOut": 0.5} for t in range(n)]
    got = page.evaluate(f"window.avatar.reset().loadTrack({json.dumps({'fps': fps, 'frames': frames})})")
    assert got == {"frames": n, "ignored": ["tongueOut"]}
    drawn = page.evaluate("window.avatar.play().drawn")
    seen = [page.evaluate("window.avatar.frame")]
    for _ in range(3):          # software WebGL draws a few frames a second here: wait for each new one
        page.wait_for_function(f"window.avatar.frame !== {seen[-1]}", timeout=30_000)
        seen.append(page.evaluate("window.avatar.frame"))
    assert page.evaluate("window.avatar.playing") and page.evaluate("window.avatar.drawn") > drawn
    assert len(set(seen)) == 4 and all(0 <= f < n for f in seen)
    page.evaluate("window.avatar.pause().seek(15)")
    at15 = page_pixels(page)
    assert inside_error(at15, native(animated, {"jawOpen": frames[15]["jawOpen"], "eyeBlink_L": 0.0})) < TOLERANCE
    page.evaluate("window.avatar.seek(22)")
    blink = page_pixels(page)
    assert inside_error(blink, native(animated, {"jawOpen": frames[22]["jawOpen"], "eyeBlink_L": 1.0})) < TOLERANCE


def test_a_flame_layout_model_with_pose_correctives_plays_the_same(tmp_path, browser):
    """What a FLAME avatar brings that OpenHead's does not: pose correctives (posedirs), unnamed
    expression components and a UV atlas without OpenHead's charts. A head model with all three
    (OpenHead's mesh with random correctives, renamed, read back through --head-model's .npz
    reader) posed by its jaw, neck and an expression component draws as the native renderer draws it."""
    import dataclasses

    from engine.animate import AnimatedAvatar
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model, load_openhead
    from engine.service import export_web
    from engine.types import HeadParams

    data = load_openhead()
    rng = np.random.default_rng(0)
    flame_like = dataclasses.replace(data, name="flame-like", charts="", expr_names=("",) * data.n_expr,
                                     posedirs=(rng.normal(size=data.posedirs.shape) * 2e-3).astype(np.float32))
    flame_like.save(tmp_path / "flame_like.npz")
    model = load_head_model(tmp_path / "flame_like.npz")
    animated = AnimatedAvatar(plain_avatar(model), model)
    n = 6
    track = HeadParams.neutral(model.n_shape, model.n_expr, n)
    track = dataclasses.replace(track, shape=animated.neutral().shape.expand(n, -1),
                                expr=torch.zeros(n, model.n_expr).index_fill_(1, torch.tensor([3]), 1.5),
                                jaw=torch.tensor([[0.25, 0.0, 0.0]]).expand(n, -1),
                                neck=torch.tensor([[0.1, 0.3, 0.0]]).expand(n, -1))
    path = tmp_path / "flame.html"
    export_web(animated, path, track)
    with torch.no_grad():
        f = select(model.device).render(animated.gaussians(track.frame(2)), orbit_camera(size=256))
    want = np.concatenate([f.rgb.numpy(), f.alpha.numpy()[..., None]], -1)
    pg = open_page(browser, path)
    assert pg.evaluate("window.avatar.frames") == n
    got = page_pixels(pg, "window.avatar.seek(2)")
    rest = page_pixels(pg, "window.avatar.seek(0)")
    assert pg.errors == []
    pg.close()
    assert inside_error(got, want) < TOLERANCE
    assert inside_error(rest, want) < TOLERANCE        # every frame of this track is the same pose
