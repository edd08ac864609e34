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
def page(default):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 512, "height": 512})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(default[1].as_uri())
        pg.wait_for_function("window.avatar !== undefined", timeout=60_000)
        pg.evaluate("window.avatar.bare(true).size(256, 256)")
        yield pg
        assert errors == []
        browser.close()


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
    smile = json.loads(page.evaluate("JSON.stringify(Object.keys(window.avatar.info))"))
    assert "gaussians" in smile
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
