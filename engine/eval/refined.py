"""Held-out evaluation of a refined avatar (the paper's per-subject table): render the test
frames of its video with their tracked parameters and compare inside a matte at the video's
resolution (≤ 512 px): MSE, PSNR, SSIM, MS-SSIM and, given its weights, LPIPS. The matte is the
portrait matte (person above a cut below the chin: hair, ears, neck, top of the shoulders; the
headline; the refiner trains on it for avatars with an outer layer) or the head-and-neck matte
(the region scored before)."""
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
from engine.metrics.image import region_mse, region_psnr
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
    matte: str = "head"     # "portrait" or "head", or a face region of REGION_ROWS


MATTES = ("portrait", "head")
REGION_ROWS = ("eyes", "mouth")
"""Face regions scored over their own pixels (`engine.metrics.matte.REGION_DEFINITION`)."""


def held_out_matte(data: VideoData, model: HeadModel, t: int, matte: str) -> np.ndarray:
    """float32 [H, W] matte of test frame ``t``: "head" is the frame's head-and-neck matte,
    "portrait" the portrait matte of its person segmentation and tracking."""
    from engine.metrics.matte import matte_of

    if matte not in MATTES + REGION_ROWS:
        raise ValueError(f"unknown matte {matte!r}; choose from {', '.join(MATTES + REGION_ROWS)}")
    if matte == data.matte:
        return data.mattes[t]
    if data.person is None:
        raise ValueError(f"{data.name}: the {matte} matte needs the video's person segmentation")
    h, w = data.images.shape[1:3]
    return matte_of(matte, model, data.params.frame(int(t)), data.person[t], float(data.cameras[t].K[0, 0]), (h, w))


def evaluate(avatar: Avatar, model: HeadModel, data: VideoData, name: str, video_out: Path | None = None,
             fps: float = 30.0, lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             matte: str = "head") -> HeldOut:
    """Metrics over ``data.test`` inside ``matte``; LPIPS with ``lpips``
    (`engine.metrics.lpips.load_lpips`); optionally an MP4 of ground truth | render | 4x error."""
    return evaluate_mattes(avatar, model, data, name, (matte,), video_out, fps, lpips)[matte]


def evaluate_mattes(avatar: Avatar, model: HeadModel, data: VideoData, name: str, mattes: Sequence[str] = MATTES,
                    video_out: Path | None = None, fps: float = 30.0,
                    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, HeldOut]:
    """`evaluate` in each of ``mattes`` from one render of every held-out frame; the MP4 shows
    the first matte's."""
    from engine.render.select import select

    device = model.device
    renderer = select(device)
    animated = AnimatedAvatar(avatar, model)
    params = data.params.to(device)
    shape = avatar.shape[None].to(device)
    scores = {m: ([], [], [], [], []) for m in mattes}          # mse, psnr, ssim, ms-ssim, lpips
    frames = []
    multiscale = min(data.images.shape[1:3]) >= ms_ssim_min_side()
    for t in data.test:
        with torch.no_grad():
            frame = renderer.render(animated.gaussians(dataclasses.replace(params.frame(int(t)), shape=shape)),
                                    data.cameras[t].to(device))
        rgb = frame.rgb.cpu().clamp(0, 1)           # scored on the host
        image = torch.from_numpy(data.images[t]).float() / 255
        for matte in mattes:
            m = torch.from_numpy(held_out_matte(data, model, int(t), matte))[..., None]
            pred, gt = rgb * m, image * m
            ms, ps, ss, mss, lps = scores[matte]
            if matte in REGION_ROWS:            # over the region's own pixels: a box, cropped
                if m.sum() < 1:
                    continue
                ys, xs = torch.nonzero(m[..., 0], as_tuple=True)
                box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
                ms.append(region_mse(rgb, image, m))
                ps.append(region_psnr(rgb, image, m))
                if min(box[0].stop - box[0].start, box[1].stop - box[1].start) >= 11:
                    ss.append(float(ssim(pred[box], gt[box])))
                continue
            ms.append(float(mse(pred, gt)))
            ps.append(float(psnr(pred, gt)))
            ss.append(float(ssim(pred, gt)))
            if multiscale:
                mss.append(float(ms_ssim(pred, gt)))
            if lpips is not None:
                with torch.no_grad():
                    lps.append(float(lpips(pred, gt)))
            if video_out is not None and matte == mattes[0]:
                err = ((pred - gt).abs() * 4).clamp(0, 1)
                frames.append((torch.cat([gt, pred, err], 1).numpy() * 255 + 0.5).astype(np.uint8))
    if video_out is not None:
        from engine.io.media import write_video

        write_video(video_out, frames, fps)
    return {matte: HeldOut(name, float(np.mean(ms)) if ms else float("nan"), float(np.mean(ps)) if ps else float("nan"),
                           float(np.mean(ss)) if ss else float("nan"), float(np.mean(mss)) if mss else None,
                           float(np.mean(lps)) if lps else None, len(ps), matte)
            for matte, (ms, ps, ss, mss, lps) in scores.items()}


def write_json(path: Path, rows: Sequence[HeldOut], video: str, mattes: dict[str, str]) -> None:
    """The table as a JSON list of rows (null where a metric is unavailable), for scripts that
    aggregate several videos; each row names its matte, ``mattes`` defines them."""
    out = [dict(dataclasses.asdict(r), video=video, matte_definition=mattes[r.matte]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    from engine.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(out, indent=1) + "\n")


@dataclass(frozen=True)
class RefinedScores:
    """`score_refined`'s result: the rows (each matte and region, then each avatar), the held-out
    frames they were scored on and how those frames were tracked."""

    rows: list[HeldOut]
    data: VideoData
    tracking: str           # how the frames were tracked, in words


def score_refined(avatar_path: Path, video: Path, model: HeadModel, tracking: Path | None = None,
                  landmark_tracking: bool = False, align_test: bool = False, side_by_side: Path | None = None,
                  lpips=None, progress: Callable[[str, float], None] | None = None) -> RefinedScores:
    """`eval refine`: the refined avatar at ``avatar_path`` and the feed-forward start of ``video``
    on its held-out frames, in both mattes (portrait first: the headline) and the face regions.

    The frames are tracked as the refine trained (`engine.refine.session.tracking_of`: ``tracking``,
    else the file beside the avatar), else with the landmark tracker as it is
    (``landmark_tracking``), else photometrically as refine's default preset tracks. With
    ``align_test`` both avatars are also scored after aligning each held-out frame's tracking to
    them (`aligned_to`). ``side_by_side``: MP4s of ground truth | render | error (the aligned
    one beside it, ``*_aligned.mp4``). ``progress(stage, fraction)`` follows the slow stages."""
    from engine.io import load_avatar
    from engine.refine.config import load_refine_config
    from engine.refine.session import load_tracking, prepare, tracking_of
    from engine.refine.tracking import track_for_refine

    report = progress or (lambda stage, fraction: None)
    refined = load_avatar(avatar_path)
    start, data = prepare(video, model, EVAL_SIDE)
    path = None if landmark_tracking else tracking_of(avatar_path, tracking)
    if landmark_tracking:
        how = "the landmark tracker's, as they are"
    elif path is not None:
        data, how = load_tracking(path, data, model), str(path)
    else:
        data = track_for_refine(start, model, data, load_refine_config("default"), report)
        how = "landmarks, then photometric tracking as refine's default preset makes it"
    runs = [(start, data, "feed-forward start", None), (refined, data, f"refined ({avatar_path.name})", side_by_side)]
    if align_test:
        aligned_video = None if side_by_side is None else side_by_side.with_name(
            f"{side_by_side.stem}_aligned{side_by_side.suffix}")
        runs += [(start, aligned_to(start, model, data, lambda f: report("aligning (feed-forward start)", f)),
                  "feed-forward start, aligned", None),
                 (refined, aligned_to(refined, model, data, lambda f: report("aligning (refined)", f)),
                  "refined, aligned", aligned_video)]
    # One render per held-out frame and avatar, scored in both mattes and the face regions; the
    # MP4s show the head matte's.
    scored = [evaluate_mattes(a, model, d, name, ("head", "portrait") + REGION_ROWS, video_out, lpips=lpips)
              for a, d, name, video_out in runs]
    return RefinedScores([by[m] for m in MATTES + REGION_ROWS for by in scored], data, how)


def aligned_to(avatar: Avatar, model: HeadModel, data: VideoData,
               progress: Callable[[float], None] | None = None) -> VideoData:
    """``data`` with each held-out frame's tracking aligned to its image with ``avatar`` frozen
    (`engine.refine.align.TEST_TIME`, each frame warm-started from its predecessor's correction):
    IMavatar/PointAvatar's test-time protocol."""
    from engine.refine.align import TEST_TIME, align_frames

    report = progress or (lambda fraction: None)
    params = align_frames(avatar, model, data, data.test, TEST_TIME,
                          lambda done, total: report(done / max(total, 1)), warm_start=True)
    return dataclasses.replace(data, params=params)
