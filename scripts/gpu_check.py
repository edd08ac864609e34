"""The GPU check's measurements (run by scripts/gpu_check.sh): the CUDA path end to end on a
clip this script renders itself with known parameters, so it needs neither mediapipe nor data.

Steps, each a row of one table (name, result, seconds, what was measured):
  resolve  `engine.device.resolve("cuda")`: gsplat's first CUDA build (timed) and a test frame;
  render   the plain avatar through gsplat against the native renderer at 256² (mean abs difference);
  refine   300 refiner steps with gsplat on the clip (it/s) and the held-out PSNR before and after;
  drive    the clip's known parameters through the drive pipeline (transfer, smoothing) and
           gsplat, frames per second of posed + rendered + host-copied frames.

``--device cpu`` runs the same steps on the native renderer (to check this script without a GPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS: list[tuple[str, str, float, str]] = []


def step(name: str):
    """Run the decorated function now as a row of the table; a failure is a FAIL row."""
    def run(fn):
        t0 = time.perf_counter()
        try:
            what = fn()
            ROWS.append((name, "ok", time.perf_counter() - t0, what))
        except Exception as e:  # noqa: BLE001 - every failure becomes a row, the check goes on
            traceback.print_exc()
            ROWS.append((name, "FAIL", time.perf_counter() - t0, f"{type(e).__name__}: {e}".splitlines()[0][:160]))
        return fn
    return run


def clip(model, animated, renderer, size: int, n: int):
    """``n`` frames at ``size``² of ``animated`` opening its jaw and turning, with the parameters
    and cameras that made them: a `VideoData` whose last eighth is held out."""
    from engine.expressions import apply_expressions
    from engine.refine.data import VideoData, tracker_camera
    from engine.track.fit import intrinsics
    from engine.types import HeadParams

    cam = tracker_camera(intrinsics(np.array([3.0 * size]), np.array([[size, size]]))[0], (size, size), size)
    frames = []
    for i in range(n):
        t = i / n
        p = apply_expressions(animated.neutral(), model, {"jawOpen": 0.5 * (1 - math.cos(2 * math.pi * t)) / 2})
        p = dataclasses.replace(p, neck=torch.tensor([[0.0, 0.3 * math.sin(2 * math.pi * t), 0.0]], device=p.neck.device),
                                translation=torch.tensor([[0.0, 0.0, -0.75]], device=p.neck.device))
        frames.append(p.cpu())
    params = HeadParams(*(torch.cat([getattr(f, k) for f in frames]) for k in
                          ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    with torch.no_grad():
        rendered = [renderer.render(animated.gaussians(params.frame(i)), cam) for i in range(n)]
    images = np.stack([f.to_uint8() for f in rendered])
    mattes = np.stack([f.alpha.cpu().numpy() for f in rendered]).astype(np.float32)
    return VideoData("gpu_check_clip", images, mattes, params, [cam] * n, np.ones(n, bool), first_test=n - n // 8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    from engine.device import decide

    state: dict = {}

    @step("resolve")
    def _resolve():
        t0 = time.perf_counter()
        r = decide(args.device)
        state["seconds"] = time.perf_counter() - t0
        if args.device.startswith("cuda") and not r.cuda:
            raise RuntimeError(r.line)
        state["device"] = r.device
        return f"{r.line}; first call (gsplat's CUDA build when not cached) {state['seconds']:.1f} s"

    if "device" not in state:
        return report()
    device = state["device"]
    from engine.animate import AnimatedAvatar
    from engine.generator.plain import plain_avatar
    from engine.headmodel.openhead import load_head_model
    from engine.render.select import select

    model = load_head_model(device=device)
    animated = AnimatedAvatar(plain_avatar(model), model)
    renderer = select(device, need_grad=True)
    state["renderer"] = renderer.name

    @step("render")
    def _render():
        from engine.camera import orbit_camera

        native = select(model.host().device, prefer="native")
        host = AnimatedAvatar(plain_avatar(model), model.host())
        cam = orbit_camera(20.0, 5.0, size=256)
        with torch.no_grad():
            a = renderer.render(animated.gaussians(animated.neutral()), cam)
            b = native.render(host.gaussians(host.neutral()), cam)
        diff = float((a.rgb.cpu() - b.rgb).abs().mean() * 255)
        if diff > 2.0:
            raise AssertionError(f"{renderer.name} vs native mean abs {diff:.2f}/255 > 2/255")
        return f"{renderer.name} vs native at 256²: mean abs {diff:.3f}/255 (≤ 2)"

    @step("clip")
    def _clip():
        state["data"] = clip(model, animated, renderer, args.size, 48)
        return f"48 frames at {args.size}² rendered with known parameters (last 6 held out)"

    @step("refine")
    def _refine():
        from engine.eval.refined import evaluate
        from engine.refine.config import RefineConfig
        from engine.refine.refiner import refine

        data = state["data"]
        # The start: the plain avatar with its colours washed out, so there is something to learn.
        start = plain_avatar(model)
        maps = start.gaussians.maps()
        faded = dataclasses.replace(start.gaussians, color=maps["color"] * 0.5)
        start = dataclasses.replace(start, gaussians=faded)
        cfg = dataclasses.replace(RefineConfig(), iterations=args.steps, resolution=args.size, checkpoint_every=0,
                                  preview_every=0, photometric_tracking=False)
        before = evaluate(start, model, data, "start").psnr
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        refined = refine(start, model, data, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = args.steps / (time.perf_counter() - t0)
        after = evaluate(refined, model, data, "refined").psnr
        if not after > before:
            raise AssertionError(f"held-out PSNR did not improve: {before:.2f} -> {after:.2f} dB")
        return f"{args.steps} steps at {args.size}²: {rate:.1f} it/s; held out {before:.2f} -> {after:.2f} dB"

    @step("drive")
    def _drive():
        from engine.camera import orbit_camera
        from engine.drive.pipeline import DrivePipeline
        from engine.drive.transfer import TransferConfig

        data = state["data"]
        pipe = DrivePipeline(model.expr_names, animated.neutral(), TransferConfig(relative=False), smoothing=0.5)
        cam = orbit_camera(size=512)
        n = len(data.found)
        t0 = time.perf_counter()
        for i in range(n):
            p = pipe(i / 25.0, data.params.frame(i), True)
            with torch.no_grad():
                img = renderer.render(animated.gaussians(p), cam).to_uint8()
        fps = n / (time.perf_counter() - t0)
        if img.shape != (512, 512, 3):
            raise AssertionError(f"driven frame {img.shape}")
        return f"{n} frames driven by the clip's parameters, 512² to host uint8: {fps:.1f} FPS (no tracker: no mediapipe)"

    return report()


def report() -> int:
    print(f"\n{'step':<8} {'result':<6} {'seconds':>8}  measured")
    for name, result, seconds, what in ROWS:
        print(f"{name:<8} {result:<6} {seconds:>8.1f}  {what}")
    return 1 if any(r[1] != "ok" for r in ROWS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
