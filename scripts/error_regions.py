"""Where a refined avatar's held-out error lies inside the portrait matte: the share of the
squared error and the PSNR of each region, over the held-out frames `eval refine` scores.

    python scripts/error_regions.py AVATAR VIDEO [--tracking FILE] [--maps DIR]

Regions (per frame, at the evaluation's 512 px), of the portrait matte: above the fitted chin,
inside the head-and-neck matte (the face and the skull) and outside it (hair beyond the head);
below the chin (neck and shoulders); a 3-pixel band inside the matte's edge, and the matte's
pixels the avatar leaves uncovered (alpha < 0.5), which overlap the first three. ``--maps`` writes every 20th
frame as ground truth | render | 4x error, both through the matte.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.animate import AnimatedAvatar  # noqa: E402
from engine.device import resolve  # noqa: E402
from engine.eval.refined import EVAL_SIDE, held_out_matte  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.metrics.matte import chin_row  # noqa: E402
from engine.io import load_avatar  # noqa: E402
from engine.refine.session import load_tracking, prepare, tracking_path  # noqa: E402
from engine.render.select import select  # noqa: E402

REGIONS = ("face and skull", "hair beyond the head", "neck and shoulders", "edge band (3 px)",
           "left uncovered (alpha < 0.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("avatar", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--tracking", type=Path, help="default: the one beside the avatar, else the landmark tracker's")
    ap.add_argument("--maps", type=Path)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = ap.parse_args()
    model = load_head_model(device=resolve(args.device))
    avatar = load_avatar(args.avatar)
    _, data = prepare(args.video, model, EVAL_SIDE)
    tracking = args.tracking or tracking_path(args.avatar)
    if tracking.exists():
        data = load_tracking(tracking, data, model)
    device = model.device
    renderer, animated, shape = select(device), AnimatedAvatar(avatar, model), avatar.shape[None].to(device)
    params = data.params.to(device)
    sse, pixels, psnrs = np.zeros(len(REGIONS)), np.zeros(len(REGIONS)), []
    for j, t in enumerate(data.test):
        with torch.no_grad():
            f = renderer.render(animated.gaussians(dataclasses.replace(params.frame(int(t)), shape=shape)),
                                data.cameras[t].to(device))
        rgb, alpha = f.rgb.clamp(0, 1).cpu().numpy(), f.alpha.cpu().numpy()
        image = data.images[t].astype(np.float32) / 255
        portrait = held_out_matte(data, model, int(t), "portrait")
        head = held_out_matte(data, model, int(t), "head")
        err = (((rgb - image) * portrait[..., None]) ** 2).mean(-1)
        psnrs.append(10 * np.log10(1 / err.mean()))
        chin, _ = chin_row(model, data.params.frame(int(t)), float(data.cameras[t].K[0, 0]), portrait.shape)
        below = np.zeros_like(portrait)
        below[max(0, int(round(chin))):] = 1
        inner = cv2.erode((portrait > 0.5).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(np.float32)
        for i, r in enumerate((portrait * head * (1 - below), portrait * (1 - head) * (1 - below), portrait * below,
                               portrait * (1 - inner), portrait * (alpha < 0.5))):
            sse[i] += (err * r).sum()
            pixels[i] += r.sum()
        if args.maps is not None and j % 20 == 0:
            args.maps.mkdir(parents=True, exist_ok=True)
            m = portrait[..., None]
            strip = np.concatenate([image * m, rgb * m, np.clip(np.abs(rgb - image) * m * 4, 0, 1)], 1)
            cv2.imwrite(str(args.maps / f"frame{int(t):04d}.png"), (strip[..., ::-1] * 255 + 0.5).astype(np.uint8))
    n = len(data.test)
    total = sse[:3].sum()
    print(f"{args.avatar.name} on {args.video.name}: {n} held-out frames, portrait-matte PSNR {np.mean(psnrs):.2f} dB")
    print(f"{'region':<30} {'share of error':>14} {'pixels/frame':>12} {'PSNR':>7}")
    for name, s, c in zip(REGIONS, sse, pixels):
        print(f"{name:<30} {s / total:>14.1%} {c / n:>12.0f} {10 * np.log10(c / max(s, 1e-12)):>7.2f}")


if __name__ == "__main__":
    main()
