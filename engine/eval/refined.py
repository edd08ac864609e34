"""Held-out evaluation of a refined avatar (the paper's per-subject table): render the test
frames of its video with their tracked parameters and compare inside the evaluation matte at
the video's resolution (≤ 512 px)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.headmodel.base import HeadModel
from engine.metrics import mse, psnr, ssim
from engine.refine.data import VideoData
from engine.types import Avatar

EVAL_SIDE = 512


@dataclass
class HeldOut:
    name: str
    mse: float
    psnr: float
    ssim: float
    frames: int


def evaluate(avatar: Avatar, model: HeadModel, data: VideoData, name: str, video_out: Path | None = None,
             fps: float = 30.0) -> HeldOut:
    """Metrics over ``data.test``; optionally an MP4 of ground truth | render | 4x error."""
    from engine.render.select import select

    renderer = select("cpu")
    animated = AnimatedAvatar(avatar, model)
    shape = avatar.shape[None]
    ms, ps, ss, frames = [], [], [], []
    for t in data.test:
        m = torch.from_numpy(data.mattes[t])[..., None]
        gt = torch.from_numpy(data.images[t]).float() / 255 * m
        with torch.no_grad():
            frame = renderer.render(animated.gaussians(dataclasses.replace(data.params.frame(int(t)), shape=shape)),
                                    data.cameras[t])
        pred = frame.rgb.clamp(0, 1) * m
        ms.append(float(mse(pred, gt)))
        ps.append(float(psnr(pred, gt)))
        ss.append(float(ssim(pred, gt)))
        if video_out is not None:
            err = ((pred - gt).abs() * 4).clamp(0, 1)
            frames.append((torch.cat([gt, pred, err], 1).numpy() * 255 + 0.5).astype(np.uint8))
    if video_out is not None:
        from engine.io.media import write_video

        write_video(video_out, frames, fps)
    return HeldOut(name, float(np.mean(ms)), float(np.mean(ps)), float(np.mean(ss)), len(ps))
