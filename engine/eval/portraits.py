"""`eval portraits`: how much of the person a portrait's own avatar covers and how it looks there.

Each portrait is tracked, its K = 1 avatar built by the projective stage, and the avatar
rendered back at the portrait's tracked camera (the longer side scaled to ``side`` px). Scored
against the portrait inside the *portrait matte* (`engine.metrics.matte.portrait_matte`: the
person segmentation above a cut 0.6 face heights below the chin, so hair, ears, neck and the top
of the shoulders count):

- silhouette IoU of the avatar (alpha > 0.5) against the portrait matte, both above the
  matte's cut (below it the torso is neither scored nor penalised);
- PSNR and SSIM of the render and the portrait, both composited on black through the matte;
- the same PSNR inside the head-and-neck matte (`head_matte`), the region scored before.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.metrics import psnr, ssim
from engine.metrics.matte import head_matte, portrait_cut_row, portrait_matte

SIDE = 512
"""Portraits are scored with their longer side at this many pixels."""


@dataclass(frozen=True)
class PortraitScore:
    name: str
    iou: float          # avatar alpha > 0.5 against the portrait matte, above its cut
    psnr: float         # inside the portrait matte, dB
    ssim: float
    psnr_head: float    # inside the head-and-neck matte, dB
    width: int
    height: int


def evaluate_portrait(path: Path, model: HeadModel, renderer=None, side: int = SIDE, outer: bool = True
                      ) -> PortraitScore:
    """Score one portrait's own K = 1 avatar at its tracked camera (see the module docstring);
    ``outer``: with its hair shell and bust, else the head page alone."""
    from engine.generator.api import PROJECTIVE, generate
    from engine.io.media import read_image
    from engine.refine.data import tracker_camera
    from engine.render.select import select
    from engine.track.tracker import track_portraits

    path = Path(path)
    renderer = renderer or select(model.device)
    tracked = track_portraits([path], model)
    image = read_image(path)
    params = tracked.params.frame(0)
    animated = generate(PROJECTIVE, model, [tracked.source(0, image)],
                        tracked.params.shape[0], outer=outer)
    cam = tracker_camera(tracked.K[0], tuple(int(x) for x in image.shape[:2]), side)
    small = cv2.resize(image, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    person = cv2.resize(tracked.mattes[0], (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    focal, size = float(cam.K[0, 0]), (cam.height, cam.width)
    with torch.no_grad():
        frame = renderer.render(animated.gaussians(params), cam.to(model.device))
    rgb, alpha = frame.rgb.cpu().clamp(0, 1), frame.alpha.cpu()
    gt = torch.from_numpy(small).float() / 255
    scores = {}
    for name, matte in (("portrait", portrait_matte(model, params, person, focal, size)),
                        ("head", head_matte(model, params, person, focal, size))):
        m = torch.from_numpy(matte)[..., None]
        scores[name] = (float(psnr(rgb * m, gt * m)), float(ssim(rgb * m, gt * m)), matte)
    above = (np.arange(cam.height)[:, None] + 0.5) <= portrait_cut_row(model, params, focal, size)
    inside, covered = scores["portrait"][2] > 0.5, (alpha.numpy() > 0.5) & above
    iou = float((inside & covered).sum() / max(1, (inside | covered).sum()))
    return PortraitScore(path.name, iou, scores["portrait"][0], scores["portrait"][1], scores["head"][0],
                         cam.width, cam.height)


def evaluate_portraits(paths: Sequence[Path], model: HeadModel, side: int = SIDE) -> list[PortraitScore]:
    from engine.render.select import select

    renderer = select(model.device)
    return [evaluate_portrait(p, model, renderer, side) for p in paths]


def format_table(rows: Sequence[PortraitScore]) -> str:
    lines = [f"{'portrait':<28} {'size':>9} {'IoU':>6} {'PSNR':>7} {'SSIM':>7} {'head PSNR':>10}"]
    for r in rows:
        lines.append(f"{r.name[:28]:<28} {f'{r.width}x{r.height}':>9} {r.iou:>6.3f} {r.psnr:>7.2f} {r.ssim:>7.4f} "
                     f"{r.psnr_head:>10.2f}")
    if rows:
        mean = {k: float(np.mean([getattr(r, k) for r in rows])) for k in ("iou", "psnr", "ssim", "psnr_head")}
        lines.append(f"{f'mean of {len(rows)}':<28} {'':>9} {mean['iou']:>6.3f} {mean['psnr']:>7.2f} "
                     f"{mean['ssim']:>7.4f} {mean['psnr_head']:>10.2f}")
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[PortraitScore], matte: str) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    from engine.atomic import write_text_atomic

    write_text_atomic(path, json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "matte": matte}, indent=1) + "\n")
