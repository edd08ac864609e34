"""Photometric alignment of tracked frames with an avatar held fixed (analysis by synthesis).

The landmark tracker's per-frame head rotation, translation, neck, jaw, eye and expression
parameters are moved so that the avatar's render (its outer layer included) matches the frame
inside the data's matte (the portrait matte for avatars with an outer layer; L1 on black, as
`engine.eval.refined` scores it), with a weak pull of the expression and the eyes towards the
tracked ones and the mesh's mouth and eye outlines held to the detected ones' shapes (how far
they open, not where they are). The avatar and the identity shape do not change.

Two uses:

- `track_photometric`: the tracker's photometric stages before refining
  (`engine.refine.tracking`). Every frame of the video (training and held-out alike) is aligned
  to the *feed-forward start* avatar, then to a *tracker avatar* refined briefly from it, and the
  refiner trains, and `eval refine` scores, on those parameters: one tracking for the whole
  video, made without the avatar under evaluation, like the photometric trackers behind the
  paper's data (metrical tracker, VHAP, EMICA-style).
- `python main.py eval refine --align-test` on the held-out frames: the test-time protocol of
  IMavatar and PointAvatar, where each test frame's expression and pose are optimised against
  the frame with the *trained* avatar frozen. It measures how much of the held-out error is
  tracking rather than the avatar; the table keeps the tracked rows next to it.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from engine.animate import AnimatedAvatar
from engine.camera import project
from engine.headmodel.base import HeadModel
from engine.jobs import Cancelled
from engine.refine.data import VideoData, shrunk_size
from engine.track.fit import REF_SIZE, FitConfig, huber
from engine.track.lmk_model import LandmarkModel
from engine.types import Avatar, HeadParams

FIELDS = ("rotation", "translation", "neck", "jaw", "eyes", "expr")


@dataclass(frozen=True)
class AlignConfig:
    iterations: int = 30
    """Adam steps per frame."""
    resolution: int = 256
    """Longer side of the renders the alignment compares, pixels."""
    lr_rotation: float = 3e-3
    """Adam learning rate of head, neck and jaw rotations (radians)."""
    lr_translation: float = 5e-4
    """Adam learning rate of the head's translation (head-model units, metres)."""
    lr_eyes: float = 1e-2
    """Adam learning rate of the eye rotations (radians)."""
    lr_expr: float = 2e-2
    """Adam learning rate of the expression coefficients."""
    w_expr: float = 1e-3
    """Weight of the squared distance of the expression from the tracked one."""
    w_eyes: float = 0.1
    """Weight of the squared distance (radians²) of the eye rotations from the tracked ones. The
    landmark tracker reads the gaze from the irises; at the alignment's resolutions an eye is a
    few pixels wide, so its gradient is tiny, and Adam's normalised steps, carried from frame to
    frame, let the eyes wander without bound (docs/refine.md)."""
    w_landmarks: float = 3e-3
    """Weight of the mean Huber distance (the landmark fit's, in pixels of a 512-px frame) between
    the mesh's landmarks and the detected ones, where the data has them, over the mouth's and each
    eye's outline with each outline's centroid taken off both: it holds how far the mouth and the
    lids open and leaves where the head is to the render. An avatar built from one frame matches
    a dark open mouth about as well with its lips closed over it: without this term the aligned
    mesh opened lp_d3's mouth 9 px short; held at the landmarks' absolute positions, the head
    went with them and the render fitted the frames 11 % worse (docs/refine.md)."""

    def lr(self, name: str) -> float:
        return {"rotation": self.lr_rotation, "neck": self.lr_rotation, "jaw": self.lr_rotation,
                "translation": self.lr_translation, "eyes": self.lr_eyes, "expr": self.lr_expr}[name]


TEST_TIME = AlignConfig(iterations=12)
"""`eval refine --align-test`'s alignment (warm-started along the held-out frames; what it changes
in the scores: docs/refine.md)."""


def align_frames(avatar: Avatar, model: HeadModel, data: VideoData, frames: Sequence[int],
                 cfg: AlignConfig = AlignConfig(), progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None, warm_start: bool = False) -> HeadParams:
    """``data.params`` with the FIELDS of ``frames`` aligned to their images; other frames as tracked.
    ``progress(frames done, frames)`` after each frame. ``warm_start``: a frame that follows the
    previous one in the video starts from the tracked values plus that frame's correction (the
    landmark tracker's errors change slowly), so fewer steps reach the same fit."""
    from engine.render.select import select

    device = model.device
    renderer = select(device, need_grad=True)
    animated = AnimatedAvatar(avatar, model)
    params = data.params.to(device)
    shape = avatar.shape[None].to(params.shape)
    out = {k: getattr(params, k).detach().clone() for k in FIELDS}
    landmarks = None
    if data.landmarks is not None and cfg.w_landmarks > 0:
        landmarks = LandmarkModel(model, detected=True)
        ids = torch.as_tensor(model.lmk_ids).cpu().numpy()
        groups = [torch.as_tensor(g, device=device) for g in outline_groups(ids)]
        if not groups:
            landmarks = None
    carry, last = None, None
    for done, t in enumerate(frames):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        tracked = dataclasses.replace(params.frame(int(t)), shape=shape)
        cam, target, m = _target(data, int(t), cfg.resolution, device)
        detected = None
        if landmarks is not None and np.isfinite(data.landmarks[int(t)][ids]).all():
            size = torch.tensor([[cam.height, cam.width]], dtype=torch.float32, device=device)
            detected = torch.from_numpy(data.landmarks[int(t)][ids]).to(device) * size[:, [1, 0]]
            focal, unit = cam.K[0, 0].reshape(1).to(device), max(cam.width, cam.height) / REF_SIZE
        var = {k: getattr(tracked, k).detach().clone() for k in FIELDS}
        if warm_start and carry is not None and int(t) == last + 1:
            var = {k: var[k] + carry[k] for k in FIELDS}
        var = {k: v.requires_grad_(True) for k, v in var.items()}
        opt = torch.optim.Adam([{"params": [var[k]], "lr": cfg.lr(k)} for k in FIELDS])
        for _ in range(cfg.iterations):
            posed = dataclasses.replace(tracked, **var)
            frame = renderer.render(animated.gaussians(posed), cam)
            loss = ((frame.rgb * m - target).abs().mean() + cfg.w_expr * ((var["expr"] - tracked.expr) ** 2).sum()
                    + cfg.w_eyes * ((var["eyes"] - tracked.eyes) ** 2).sum())
            if detected is not None:
                uv, _ = project(landmarks(posed), focal, size)
                loss = loss + cfg.w_landmarks * huber(shape_distance(uv[0], detected, groups) / unit,
                                                      FitConfig.huber_px).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for k in FIELDS:
            out[k][int(t)] = var[k].detach()[0]
        carry, last = {k: var[k].detach() - getattr(tracked, k) for k in FIELDS}, int(t)
        if progress is not None:
            progress(done + 1, len(frames))
    return dataclasses.replace(data.params, **{k: v.cpu() for k, v in out.items()})   # tracking stays on the host


def outline_groups(lmk_ids: np.ndarray) -> list[np.ndarray]:
    """Rows of a model's landmarks (FaceMesh indices ``lmk_ids``) on the mouth's outline (both lip
    contours together) and on each eye's lid margins, a group each; a group the model has fewer
    than three points of is left out."""
    from engine.headmodel import facemesh as fm

    topo = fm.topology()
    groups = [np.flatnonzero(np.isin(lmk_ids, [i for name in names for i in topo[name]]))
              for names in (("lips_outer", "lips_inner"), ("eye_L",), ("eye_R",))]
    return [g for g in groups if len(g) >= 3]


def shape_distance(points: torch.Tensor, detected: torch.Tensor, groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Distance of each point of ``groups`` (rows of ``points`` and ``detected``, [L, 2]) from its
    detected counterpart with each group's centroid taken off both: a group moved whole is at
    distance 0, one opened or closed is not."""
    return torch.cat([((points[g] - points[g].mean(0)) - (detected[g] - detected[g].mean(0))).norm(dim=-1)
                      for g in groups])


def track_photometric(start: Avatar, model: HeadModel, data: VideoData, cfg: AlignConfig,
                      progress: Callable[[int, int], None] | None = None,
                      cancel: threading.Event | None = None) -> VideoData:
    """``data`` with every tracked frame aligned to the ``start`` avatar (warm-started along the
    video) and the training mattes recut around the aligned mesh. Frames without a face keep
    the landmark tracker's smoothed values."""
    frames = np.flatnonzero(data.found)
    params = align_frames(start, model, data, frames, cfg, progress, cancel, warm_start=True)
    return data.with_params(params, model)


def photometric_error(avatar: Avatar, model: HeadModel, data: VideoData, params: HeadParams,
                      frames: Sequence[int], resolution: int) -> float:
    """Mean L1 inside the matte, over ``frames``, of the avatar's render at ``params`` (one
    tracking of the whole video) against the frames at ``resolution``: what the alignment
    minimises, without its priors."""
    from engine.render.select import select

    device = model.device
    renderer, animated = select(device, need_grad=False), AnimatedAvatar(avatar, model)
    shape = avatar.shape[None].to(device)
    errors = []
    with torch.no_grad():
        for t in frames:
            cam, target, m = _target(data, int(t), resolution, device)
            posed = dataclasses.replace(params.frame(int(t)).to(device), shape=shape)
            rgb = renderer.render(animated.gaussians(posed), cam).rgb
            errors.append(float((rgb * m - target).abs().mean()))
    return float(np.mean(errors))


def _target(data: VideoData, t: int, longer_side: int, device):
    """Camera, matted image [H, W, 3] in [0, 1] and matte [H, W, 1] of frame ``t`` at the
    alignment's resolution, on ``device``."""
    cam, image, matte = _at_resolution(data, t, longer_side)
    m = torch.from_numpy(matte)[..., None].to(device)
    return cam.to(device), torch.from_numpy(image).to(device).float() / 255 * m, m


def _at_resolution(data: VideoData, t: int, longer_side: int):
    """Camera, image and matte of frame ``t`` with the longer side at most ``longer_side``."""
    cam, image, matte = data.cameras[t], data.images[t], data.mattes[t]
    size = shrunk_size(cam.width, cam.height, longer_side)
    if size is None:
        return cam, image, matte
    return (cam.resized(*size), cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(matte, size, interpolation=cv2.INTER_AREA))
