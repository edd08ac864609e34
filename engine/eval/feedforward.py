"""Feed-forward self-reenactment (issue: avatar from portraits): on a talking-head video, build
the avatar from K source frames of its first half (K = 1: frame 0; K = 4: frames 0, ¼, ½, ¾
of the first half) and render 50 frames of its last third with their tracked parameters;
PSNR and SSIM inside the evaluation matte (`engine.metrics.matte`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.generator.projective import Source, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.io.media import VideoReader
from engine.metrics import psnr, ssim
from engine.metrics.matte import eval_matte, mesh_silhouette
from engine.refine.data import tracker_camera
from engine.types import Avatar, Camera

MAX_SIDE = 512
DILATE_PX = 15


@dataclass
class FFResult:
    video: str
    k: int
    psnr: float
    ssim: float
    n_targets: int


def source_frames(n: int, k: int) -> list[int]:
    """Frame indices of the K sources: 0, then evenly through the first half."""
    return [round(i * (n / 2) / k) for i in range(k)]


def target_frames(n: int, count: int = 50) -> list[int]:
    """``count`` frames evenly through the last third."""
    return sorted(set(np.linspace(2 * n // 3, n - 1, count).round().astype(int).tolist()))


def _fit(img: np.ndarray, cam: Camera) -> np.ndarray:
    import cv2

    return img if img.shape[:2] == (cam.height, cam.width) else cv2.resize(img, (cam.width, cam.height),
                                                                          interpolation=cv2.INTER_AREA)


def evaluate_video(path: Path, model: HeadModel, ks=(1, 4), n_targets: int = 50, renderer=None) -> list[FFResult]:
    from engine.render.select import select
    from engine.track.tracker import track_video

    renderer = renderer or select("cpu")
    tracked = track_video(path, model)
    n = len(tracked.found)
    wanted = {i for k in ks for i in source_frames(n, k)} | set(target_frames(n, n_targets))
    frames = {}
    with VideoReader(path) as video:
        for i, rgb in enumerate(video):
            if i in wanted:
                frames[i] = rgb
            if i >= max(wanted):
                break
    shape = tracked.params.shape[0]
    results = []
    for k in ks:
        sources = [Source(frames[i], tracked.mattes[i], tracked.params.frame(i), tracked.K[i]) for i in source_frames(n, k)]
        uvg, _ = projective_gaussians(model, sources, shape)
        animated = AnimatedAvatar(Avatar(uvg, model.name, shape, {}), model)
        ps, ss = [], []
        for t in target_frames(n, n_targets):
            if not tracked.found[t]:
                continue
            size = tuple(int(x) for x in tracked.image_size[t])
            cam = tracker_camera(tracked.K[t], size, MAX_SIDE)
            sil = mesh_silhouette(model, tracked.params.frame(t), float(cam.K[0, 0]), (cam.height, cam.width))
            m = torch.from_numpy(eval_matte(_fit(tracked.mattes[t], cam), sil, DILATE_PX))[..., None]
            gt = torch.from_numpy(_fit(frames[t], cam)).float() / 255 * m
            with torch.no_grad():
                frame = renderer.render(animated.gaussians(tracked.params.frame(t)), cam)
            pred = frame.rgb.clamp(0, 1) * m                     # premultiplied = composited on black
            ps.append(float(psnr(pred, gt)))
            ss.append(float(ssim(pred, gt)))
        results.append(FFResult(Path(path).name, k, float(np.mean(ps)), float(np.mean(ss)), len(ps)))
    return results
