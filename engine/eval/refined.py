"""Held-out evaluation of a refined avatar (the paper's per-subject table): render the test
frames of its video with their tracked parameters and compare inside the evaluation matte at
the video's resolution (≤ 512 px): MSE, PSNR, SSIM, MS-SSIM and, given its weights, LPIPS."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.headmodel.base import HeadModel
from engine.metrics import ms_ssim, mse, psnr, ssim
from engine.metrics.image import ms_ssim_min_side
from engine.refine.data import VideoData
from engine.types import Avatar

EVAL_SIDE = 512


@dataclass
class HeldOut:
    """Means over the held-out frames; ``ms_ssim`` is None when the frames are smaller than
    MS-SSIM's minimum side, ``lpips`` when no LPIPS weights were given."""

    name: str
    mse: float
    psnr: float
    ssim: float
    ms_ssim: float | None
    lpips: float | None
    frames: int


def evaluate(avatar: Avatar, model: HeadModel, data: VideoData, name: str, video_out: Path | None = None,
             fps: float = 30.0, lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> HeldOut:
    """Metrics over ``data.test``; LPIPS with ``lpips`` (`engine.metrics.lpips.load_lpips`);
    optionally an MP4 of ground truth | render | 4x error."""
    from engine.render.select import select

    device = model.device
    renderer = select(device)
    animated = AnimatedAvatar(avatar, model)
    params = data.params.to(device)
    shape = avatar.shape[None].to(device)
    ms, ps, ss, mss, lps, frames = [], [], [], [], [], []
    multiscale = min(data.images.shape[1:3]) >= ms_ssim_min_side()
    for t in data.test:
        m = torch.from_numpy(data.mattes[t])[..., None]
        gt = torch.from_numpy(data.images[t]).float() / 255 * m
        with torch.no_grad():
            frame = renderer.render(animated.gaussians(dataclasses.replace(params.frame(int(t)), shape=shape)),
                                    data.cameras[t].to(device))
        pred = frame.rgb.cpu().clamp(0, 1) * m      # scored on the host
        ms.append(float(mse(pred, gt)))
        ps.append(float(psnr(pred, gt)))
        ss.append(float(ssim(pred, gt)))
        if multiscale:
            mss.append(float(ms_ssim(pred, gt)))
        if lpips is not None:
            with torch.no_grad():
                lps.append(float(lpips(pred, gt)))
        if video_out is not None:
            err = ((pred - gt).abs() * 4).clamp(0, 1)
            frames.append((torch.cat([gt, pred, err], 1).numpy() * 255 + 0.5).astype(np.uint8))
    if video_out is not None:
        from engine.io.media import write_video

        write_video(video_out, frames, fps)
    return HeldOut(name, float(np.mean(ms)), float(np.mean(ps)), float(np.mean(ss)),
                   float(np.mean(mss)) if mss else None, float(np.mean(lps)) if lps else None, len(ps))


def write_json(path: Path, rows: Sequence[HeldOut], video: str, matte: str) -> None:
    """The table as a JSON list of rows (null where a metric is unavailable), for scripts that
    aggregate several videos."""
    out = [dict(dataclasses.asdict(r), video=video, matte=matte) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
