"""Tracked clips: the training data every dataset reader produces.

A clip is one subject seen by one or more cameras over time: frames at a small working
size (longer side ``longer_side``), person mattes, head parameters and the camera of each
frame. Our own videos and portrait groups are tracked with our tracker and stored as one
``<name>.clip.npz`` each, so training never tracks; CelebV-HQ clips are videos and go the
same way; NeRSemble's multi-view captures are read by `engine.train.datasets`.

Cameras follow the tracker's convention (`engine.refine.data.tracker_camera`): the head
parameters place the head in front of a camera at the origin looking down -z, so every
view carries only its intrinsics; a multi-view reader moves the head into each camera's
frame instead of moving the camera (`engine.train.datasets.head_in_camera`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from engine.headmodel.base import HeadModel
from engine.types import HeadParams

LONGER_SIDE = 256
CLIP_SUFFIX = ".clip.npz"


@dataclass
class Clip:
    """N frames of one subject. ``time[i]`` and ``camera[i]`` say when and from where frame i
    was taken (a monocular video has one camera; a portrait group has one time per photo)."""

    name: str
    images: np.ndarray      # [N, h, w, 3] uint8
    mattes: np.ndarray      # [N, h, w] uint8, 255 = person
    params: HeadParams      # [N, ...]
    K: np.ndarray           # [N, 3, 3] at the stored size
    boxes: np.ndarray       # [N, 4] face box x0, y0, x1, y1 at the stored size
    time: np.ndarray        # [N] int
    camera: np.ndarray      # [N] int
    usable: np.ndarray      # [N] bool: tracked well enough to train on

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> Path:
        from engine.io.params import save_params

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.npz")
        save_params(self.params, tmp, images=self.images, mattes=self.mattes, K=self.K.astype(np.float32),
                    boxes=self.boxes.astype(np.float32), time=self.time.astype(np.int32),
                    camera=self.camera.astype(np.int32), usable=self.usable, name=np.array(self.name))
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: Path) -> "Clip":
        from engine.io.params import load_params

        params, a = load_params(path)
        return Clip(str(a["name"]), a["images"], a["mattes"], params, a["K"], a["boxes"], a["time"], a["camera"],
                    a["usable"].astype(bool))


def _scaled(img: np.ndarray, s: float) -> np.ndarray:
    if s == 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def clip_from_tracked(tracked, images: Sequence[np.ndarray], longer_side: int = LONGER_SIDE) -> Clip:
    """A clip from a `Tracked` result and its frames (full size or already scaled to
    ``longer_side``), one per tracked frame. Frames of different sizes (a portrait group) are
    centred on a canvas of the largest stored size, so the principal point stays at the
    centre (the tracker's camera); the canvas outside a photo has matte 0."""
    n = len(images)
    sizes = [(int(h), int(w)) for h, w in tracked.image_size]
    scales = [min(1.0, longer_side / max(hw)) for hw in sizes]
    small = [im if max(im.shape[:2]) <= longer_side else _scaled(im, s) for im, s in zip(images, scales)]
    mats = [cv2.resize(m, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_AREA) if m.shape[:2] != im.shape[:2]
            else m for m, im in zip(tracked.mattes, small)]
    h = max(im.shape[0] for im in small)
    w = max(im.shape[1] for im in small)
    imgs, mattes = np.zeros((n, h, w, 3), np.uint8), np.zeros((n, h, w), np.uint8)
    K = tracked.K.astype(np.float32).copy()
    boxes = np.nan_to_num(tracked.bbox.astype(np.float32))
    for i, (im, m) in enumerate(zip(small, mats)):
        ih, iw = im.shape[:2]
        oy, ox = (h - ih) // 2, (w - iw) // 2
        imgs[i, oy:oy + ih, ox:ox + iw] = im
        mattes[i, oy:oy + ih, ox:ox + iw] = m
        sy, sx = ih / sizes[i][0], iw / sizes[i][1]
        K[i, 0] *= sx
        K[i, 1] *= sy
        K[i, 0, 2] += ox
        K[i, 1, 2] += oy
        boxes[i] = boxes[i] * np.array([sx, sy, sx, sy], np.float32) + np.array([ox, oy, ox, oy], np.float32)
    usable = tracked.found & ~tracked.flagged
    return Clip(tracked.name, imgs, mattes, tracked.params, K, boxes, np.arange(n), np.zeros(n, int), usable)


def prepare_video(path: Path, model: HeadModel, out_dir: Path, longer_side: int = LONGER_SIDE,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Track a video and store it as ``out_dir/<stem>.clip.npz`` (kept if it exists)."""
    from engine.io.media import VideoReader
    from engine.track.tracker import track_video

    out = Path(out_dir) / f"{Path(path).stem}{CLIP_SUFFIX}"
    if out.exists():
        return out
    tracked = track_video(path, model, progress=progress)
    frames = []
    with VideoReader(path) as video:
        for i, rgb in enumerate(video):
            if i >= len(tracked.found):
                break
            frames.append(_scaled(rgb, min(1.0, longer_side / max(rgb.shape[:2]))))
    return clip_from_tracked(tracked, frames, longer_side).save(out)


def prepare_portraits(paths: Sequence[Path], model: HeadModel, out_dir: Path, name: str,
                      longer_side: int = LONGER_SIDE) -> Path:
    """Track 1–4 portraits of one person (shared shape) and store them as one clip whose
    frames are different times of one camera."""
    from engine.io.media import read_image
    from engine.track.tracker import track_portraits

    out = Path(out_dir) / f"{name}{CLIP_SUFFIX}"
    if out.exists():
        return out
    tracked = track_portraits(list(paths), model, name=name)
    images = [read_image(p) for p in paths]
    return clip_from_tracked(tracked, images, longer_side).save(out)


def load_clips(root: Path, names: Sequence[str] | None = None) -> list[Clip]:
    """Every ``*.clip.npz`` under ``root`` (or those named)."""
    paths = sorted(Path(root).glob(f"*{CLIP_SUFFIX}"))
    if names is not None:
        wanted = set(names)
        paths = [p for p in paths if p.name[: -len(CLIP_SUFFIX)] in wanted]
    if not paths:
        raise ValueError(f"{root}: no {CLIP_SUFFIX} files (make them with `python main.py train prepare`)")
    return [Clip.load(p) for p in paths]
