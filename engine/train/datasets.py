"""Training-data readers (CelebV-HQ, NeRSemble) and the pair samplers of the two training
phases (paper §2.4, §3).

Phase 1 trains on monocular clips (CelebV-HQ videos, our own videos and portrait groups):
`celebvhq_clips` tracks the videos into ``.clip.npz`` files (`engine.train.clips`) and
`Phase1Sampler` draws a held-out target frame and K ~ U{1..4} other frames of the same clip
as sources, the first of them biased towards frames unlike the target. Phase 2 adds
NeRSemble's multi-view captures: `nersemble_clip` reads a sequence as one `Clip` whose frames
are (timestep, camera) views, and `Phase2Sampler` takes sources from the target's other
cameras at the same time, or with probability ``cross_time`` (paper: 25 %) from another time.

Every clip uses the tracker's camera convention: the camera sits at the origin looking down
-z (OpenGL axes: x right, y up), the head parameters place the head in front of it, and the
principal point is at the image centre (`engine.track.fit.project`). A multi-view reader
therefore moves the head into each camera's frame (`head_in_camera`) instead of keeping one
head and many cameras.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from engine.headmodel.base import HeadModel
from engine.rotations import axis_angle_to_rotmat
from engine.train.clips import LONGER_SIDE, Clip, prepare_video
from engine.types import HeadParams

CELEBVHQ_INFO = "celebvhq_info.json"
CELEBVHQ_VIDEOS = "35666"    # the folder of processed clips in the CelebV-HQ release
_FIELDS = ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")


# --- CelebV-HQ -------------------------------------------------------------------------------

def celebvhq_videos(root: Path) -> list[Path]:
    """The CelebV-HQ videos under ``root`` in training order (see `celebvhq_clips`)."""
    root = Path(root)
    videos = root / CELEBVHQ_VIDEOS if (root / CELEBVHQ_VIDEOS).is_dir() else root
    files = {p.stem: p for p in videos.glob("*.mp4")}
    info = next((p for p in (root / CELEBVHQ_INFO, videos / CELEBVHQ_INFO) if p.is_file()), None)
    if info is None:
        return [files[k] for k in sorted(files)]
    clips = json.loads(info.read_text())["clips"]
    return [files[k] for k in clips if k in files]


def celebvhq_clips(root: Path, model: HeadModel, out_dir: Path, limit: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Track CelebV-HQ videos into ``out_dir/<clip id>.clip.npz`` files; returns their paths.

    Layout of ``root`` (the CelebV-HQ release after its download script)::

        root/
          celebvhq_info.json      optional; {"meta_info": ..., "clips": {"<clip id>": {...}}}
          35666/                  the processed clips; or the .mp4s directly in root
            <clip id>.mp4

    With ``celebvhq_info.json`` the clips are taken in the order of its ``clips`` dict and
    videos it does not list are ignored; without it, every ``*.mp4`` in name order. ``limit``
    keeps the first ``limit`` videos of that order. A clip already in ``out_dir`` is reused.
    A video that cannot be tracked (no usable face: `TrackError`; unreadable or damaged:
    `MediaError`) is skipped with a warning naming it, and the run goes on. ``progress`` is
    called with (videos done, videos in total) after each one.

    Example:
        >>> paths = celebvhq_clips("CelebV-HQ", load_head_model(), "clips/celebvhq", limit=100)
    """
    from engine.io.media import MediaError    # TrackError is a MediaError

    videos = celebvhq_videos(root)[:limit]
    out: list[Path] = []
    for i, video in enumerate(videos):
        try:
            out.append(prepare_video(video, model, out_dir))
        except MediaError as e:
            warnings.warn(f"CelebV-HQ clip skipped: {e}", stacklevel=2)
        if progress is not None:
            progress(i + 1, len(videos))
    return out


# --- NeRSemble -------------------------------------------------------------------------------

def root_joint(model: HeadModel, params: HeadParams) -> Tensor:
    """Rest position [B, 3] of the root joint, about which ``params.rotation`` turns the head.

    LBS regresses joints from the shaped and expressed rest mesh (smplx's ``v_shaped``), so
    the root depends on the expression too, not only on the identity (`HeadModel.joints_rest`).
    """
    betas = torch.cat([params.shape, params.expr], dim=1).to(model.dirs)            # [B, S+E]
    w = model.J_regressor[0]                                                         # [V]
    return w @ model.v_template + torch.einsum("v,vcs,bs->bc", w, model.dirs, betas)


def head_in_camera(params: HeadParams, c2w: np.ndarray | Tensor, model: HeadModel) -> HeadParams:
    """The head of world-space ``params`` expressed in a camera's frame, so that the tracker's
    camera (origin, looking down -z, `engine.track.fit.project`) sees what this camera sees.

    ``c2w`` [4, 4] or [B, 4, 4] is camera-to-world in the OpenGL/Blender convention (x right,
    y up, z backwards), which is the tracker's head space. LBS poses the head as
    ``x = R (y - J) + J + t`` with R the root rotation and J the root joint (`root_joint`), so
    the camera-frame head ``Rc^T (x - Tc)`` is the same model posed with

        rotation'    = Rc^T R
        translation' = Rc^T (J + t - Tc) - J

    exactly, whatever the neck, jaw, eyes and expression. Only the rigid part of ``c2w`` is
    used; a ``c2w`` with scale or a reflection is refused (ValueError).

    Example:
        >>> cam = head_in_camera(model.neutral(), np.eye(4), model)   # the same head
    """
    b = params.batch_size
    c2w = torch.as_tensor(np.asarray(c2w) if not isinstance(c2w, Tensor) else c2w).double().cpu()
    if c2w.shape == (4, 4):
        c2w = c2w.expand(b, 4, 4)
    if c2w.shape != (b, 4, 4):
        raise ValueError(f"c2w must have shape [4, 4] or [{b}, 4, 4], got {list(c2w.shape)}")
    sv = torch.linalg.svdvals(c2w[:, :3, :3])
    if (sv - 1).abs().max() > 1e-3 or (torch.linalg.det(c2w[:, :3, :3]) < 0).any():
        raise ValueError("c2w must be a rigid camera-to-world transform (rotation + translation)")
    u, _, vt = torch.linalg.svd(c2w[:, :3, :3])
    Rc, Tc = u @ vt, c2w[:, :3, 3]                                   # exactly orthonormal
    R = Rc.transpose(1, 2) @ axis_angle_to_rotmat(params.rotation.double().cpu())
    J = root_joint(model, params).double().cpu()
    t = torch.einsum("bji,bj->bi", Rc, J + params.translation.double().cpu() - Tc) - J
    dev, dt = params.rotation.device, params.rotation.dtype
    return replace(params, rotation=_rotvec(R).to(dev, dt), translation=t.to(dev, dt))


def _rotvec(R: Tensor) -> Tensor:
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.from_matrix(R.numpy()).as_rotvec())


@dataclass(frozen=True)
class _View:
    """One (timestep, camera) frame of a NeRSemble sequence as stored."""

    timestep: int
    camera: int
    image: Path
    mask: Path | None
    params: Path
    c2w: np.ndarray       # [4, 4] OpenGL camera-to-world
    fx: float
    fy: float
    cx: float
    cy: float
    width: int            # the declared image size the intrinsics refer to
    height: int


def _views(seq_dir: Path, meta: dict) -> list[_View]:
    """The frames of a transforms_*.json; intrinsics per frame or else shared at the top."""
    from engine.io.media import read_image

    views = []
    for f in meta["frames"]:
        get = lambda k, default=None: f.get(k, meta.get(k, default))  # noqa: E731
        image = seq_dir / f["file_path"]
        if not image.suffix:          # GaussianAvatars allows file paths without extension
            image = image.with_suffix(".png")
        w, h = get("w"), get("h")
        if w is None or h is None:        # the intrinsics then refer to the file as it is
            h, w = read_image(image, max_side=1 << 30).shape[:2]
        fx = get("fl_x")
        if fx is None:
            fx = 0.5 * w / math.tan(0.5 * get("camera_angle_x"))
        fy = get("fl_y")
        if fy is None:
            fy = 0.5 * h / math.tan(0.5 * get("camera_angle_y")) if get("camera_angle_y") else fx
        mask = f.get("fg_mask_path")
        views.append(_View(int(f["timestep_index"]), int(f["camera_index"]), image,
                           seq_dir / mask if mask else None, seq_dir / f["flame_param_path"],
                           np.asarray(f["transform_matrix"], np.float64), float(fx), float(fy),
                           float(get("cx", w / 2)), float(get("cy", h / 2)), int(w), int(h)))
    return sorted(views, key=lambda v: (v.timestep, v.camera))


def _centred(img: np.ndarray, v: _View, out_wh: tuple[int, int], s: float) -> np.ndarray:
    """``img`` resampled onto an ``out_wh`` canvas: scale ``s``, the principal point moved to
    the centre and pixels made square (y scaled by fx / fy). Pixel coordinates have their
    origin at the image corner (pixel i spans [i, i+1]), as `engine.types.Camera` has."""
    h, w = img.shape[:2]
    kx, ky = w / v.width, h / v.height                    # the file may be smaller than declared
    ax, ay = s / kx, s * v.fx / v.fy / ky                 # file pixels -> output pixels
    bx, by = out_wh[0] / 2 - s * v.cx, out_wh[1] / 2 - s * v.fx / v.fy * v.cy
    if max(ax, ay) < 0.75:                                # area-average first against aliasing
        w0, h0 = max(1, round(w * ax)), max(1, round(h * ay))
        img = cv2.resize(img, (w0, h0), interpolation=cv2.INTER_AREA)
        ax, ay = ax * w / w0, ay * h / h0
    # corner coordinates x' = a x + b become pixel-centre ones x'_i = a x_i + a/2 + b - 1/2
    M = np.array([[ax, 0, ax / 2 + bx - 0.5], [0, ay, ay / 2 + by - 0.5]], np.float64)
    return cv2.warpAffine(img, M, out_wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def nersemble_clip(seq_dir: Path, model: HeadModel, longer_side: int = LONGER_SIDE, split: str | None = "train",
                   max_timesteps: int | None = None) -> Clip:
    """One NeRSemble sequence as a multi-view `Clip`: every (timestep, camera) view, in
    (timestep, camera) order, with ``time`` = timestep_index and ``camera`` = camera_index.

    Layout (NeRSemble as exported by VHAP for GaussianAvatars)::

        seq_dir/
          transforms_train.json, transforms_val.json, transforms_test.json
              (``split``; None reads transforms.json)
          images/00000_00.png ...         frame["file_path"]
          fg_masks/00000_00.png ...       frame["fg_mask_path"], optional (else matte = 255)
          flame_param/00000.npz ...       frame["flame_param_path"], one per timestep

    Each frame also holds ``timestep_index``, ``camera_index``, ``transform_matrix`` (camera-
    to-world, OpenGL/Blender axes) and the intrinsics ``fl_x, fl_y, cx, cy, w, h`` (per frame
    or at the top level; ``camera_angle_x`` stands in for a missing ``fl_x``). The FLAME
    parameter files use VHAP's keys (`engine.io.params.load_params`); their world is the
    cameras' world. Each view's head is moved into its camera (`head_in_camera`), the image
    resampled so the principal point is at the centre and the pixels square (fy := fx), and
    scaled so the longer side is ``longer_side`` (never enlarged); K follows. ``boxes`` is the
    box of the projected landmarks (all vertices if the model has none); a view whose box
    misses the image is not ``usable``. ``max_timesteps`` keeps the first timesteps only.

    The NeRSemble parameters are FLAME's (VHAP: 300 shape, 100 expression coefficients) and
    only mean something with the FLAME head model (``--head-model`` pointing at the user's
    FLAME). VHAP's per-vertex ``static_offset`` is not applied. With OpenHead, whose bases
    differ, the views must be re-tracked with our tracker instead (per camera, as videos);
    parameters whose coefficient counts do not fit ``model`` raise ValueError.

    Example:
        >>> clip = nersemble_clip("nersemble/074_EMO-1", load_head_model("~/FLAME2023"), split="train")
        >>> clip.save(Path("clips/nersemble") / f"074_EMO-1{CLIP_SUFFIX}")
    """
    from engine.io.media import read_image
    from engine.io.params import load_params
    from engine.track.fit import project

    seq_dir = Path(seq_dir)
    meta_path = seq_dir / (f"transforms_{split}.json" if split else "transforms.json")
    views = _views(seq_dir, json.loads(meta_path.read_text()))
    if max_timesteps is not None:
        keep = set(sorted({v.timestep for v in views})[:max_timesteps])
        views = [v for v in views if v.timestep in keep]
    if not views:
        raise ValueError(f"{meta_path}: no frames")

    cache: dict[Path, HeadParams] = {}
    for v in views:
        if v.params not in cache:
            p, _ = load_params(v.params)
            if p.expr.shape[1] != model.n_expr or p.shape.shape[1] != model.n_shape:
                raise ValueError(
                    f"{v.params}: shape[{p.shape.shape[1]}] and expr[{p.expr.shape[1]}] do not fit head model "
                    f"{model.name!r} (shape[{model.n_shape}], expr[{model.n_expr}]); NeRSemble's FLAME parameters "
                    "need the FLAME head model (--head-model), with OpenHead re-track the views")
            if p.batch_size != 1:
                raise ValueError(f"{v.params}: expected the parameters of one timestep, got {p.batch_size}")
            cache[v.params] = p
    world = HeadParams(*(torch.cat([getattr(cache[v.params], f) for v in views]) for f in _FIELDS))
    params = head_in_camera(world, np.stack([v.c2w for v in views]), model)

    s = min(1.0, longer_side / max(max(v.width, v.height) for v in views))
    w_out = round(max(v.width for v in views) * s)
    h_out = round(max(v.height for v in views) * s)
    n = len(views)
    images, mattes = np.zeros((n, h_out, w_out, 3), np.uint8), np.zeros((n, h_out, w_out), np.uint8)
    K = np.zeros((n, 3, 3), np.float32)
    for i, v in enumerate(views):
        rgb = read_image(v.image, max_side=1 << 30)
        matte = read_image(v.mask, max_side=1 << 30)[..., 0] if v.mask else np.full(rgb.shape[:2], 255, np.uint8)
        images[i] = _centred(rgb, v, (w_out, h_out), s)
        mattes[i] = _centred(matte, v, (w_out, h_out), s)
        K[i] = [[s * v.fx, 0, w_out / 2], [0, s * v.fx, h_out / 2], [0, 0, 1]]

    boxes = np.zeros((n, 4), np.float32)
    size = torch.tensor([[h_out, w_out]], dtype=torch.float32)
    with torch.no_grad():
        for i in range(0, n, 64):
            chunk = HeadParams(*(getattr(params, f)[i:i + 64] for f in _FIELDS))
            verts = model.vertices(chunk.to(model.v_template.device))
            pts = model.landmarks(verts) if len(model.lmk_faces) else verts
            uv, _ = project(pts.cpu(), torch.from_numpy(K[i:i + 64, 0, 0]), size.expand(len(pts), 2))
            boxes[i:i + 64] = torch.cat([uv.amin(1), uv.amax(1)], 1).numpy()
    usable = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w_out) & (boxes[:, 1] < h_out)
    return Clip(seq_dir.name, images, mattes, params, K, boxes, np.array([v.timestep for v in views]),
                np.array([v.camera for v in views]), usable)


# --- samplers --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """One training example: source frames and a target frame of clip ``clip``."""

    clip: int
    sources: list[int]   # [K] frame indices, distinct; == [target] only for a one-frame clip
    target: int


def dissimilarity(facing: np.ndarray, code: np.ndarray, target: int, candidates: np.ndarray) -> np.ndarray:
    """How unlike frame ``target`` each candidate frame is: [C], mean about 1.

        d_j = 1/2 (a_j / mean(a) + e_j / mean(e))

    with a_j the angle between the directions the head faces (``facing`` [N, 3], the root and
    neck rotations applied to +z: the camera direction in head space, up to roll) and e_j the
    Euclidean distance of the expression codes (``code`` [N, E+3], expression and jaw). Each
    term is divided by its mean over the candidates so neither unit dominates; a term that is
    the same for every candidate (e.g. expression across the cameras of one timestep) is 0.
    """
    cos = np.clip(facing[candidates] @ facing[target], -1.0, 1.0)
    terms = [np.arccos(cos), np.linalg.norm(code[candidates] - code[target], axis=1)]
    d = np.zeros(len(candidates))
    for t in terms:
        m = t.mean()
        if m > 1e-9:
            d += t / m
    return d / 2


class _ClipIndex:
    """What a sampler needs of one clip: usable frames, time and camera, pose and expression."""

    def __init__(self, clip: Clip) -> None:
        p = clip.params
        with torch.no_grad():
            R = axis_angle_to_rotmat(p.rotation.double().cpu()) @ axis_angle_to_rotmat(p.neck.double().cpu())
        self.facing = R[:, :, 2].numpy()                                      # [N, 3] = R e_z
        self.code = torch.cat([p.expr, p.jaw], 1).double().cpu().numpy()       # [N, E+3]
        self.usable = np.flatnonzero(clip.usable)
        self.time, self.camera = np.asarray(clip.time), np.asarray(clip.camera)
        self.multiview = len(np.unique(self.camera[self.usable])) > 1


class _Sampler:
    def __init__(self, clips: Sequence[Clip], k_max: int, temperature: float | None, source_stride: int = 1) -> None:
        if k_max < 1:
            raise ValueError(f"k_max must be at least 1, got {k_max}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be positive (or None for no bias), got {temperature}")
        self.k_max, self.temperature, self.source_stride = k_max, temperature, max(1, source_stride)
        self._clips = [_ClipIndex(c) for c in clips]
        counts = np.array([len(c.usable) for c in self._clips], np.float64)
        if counts.sum() == 0:
            raise ValueError("no usable frame in any clip")
        self._clip_p = counts / counts.sum()

    def _target(self, rng: np.random.Generator) -> tuple[int, _ClipIndex, int]:
        c = int(rng.choice(len(self._clips), p=self._clip_p))
        idx = self._clips[c]
        return c, idx, int(rng.choice(idx.usable))

    def _sources(self, rng: np.random.Generator, idx: _ClipIndex, target: int, pool: np.ndarray) -> list[int]:
        """K ~ U{1..min(k_max, |pool|)} distinct frames of ``pool``, the first drawn with weight
        exp(d / temperature) (`dissimilarity`), the rest uniformly; [target] if pool is empty."""
        if self.source_stride > 1:    # only every n-th time may be a source (a CPU run caches their warps)
            thin = pool[idx.time[pool] % self.source_stride == 0]
            pool = thin if len(thin) else pool
        if len(pool) == 0:
            return [target]
        k = int(rng.integers(1, min(self.k_max, len(pool)) + 1))
        if self.temperature is None:
            p = None
        else:
            logits = dissimilarity(idx.facing, idx.code, target, pool) / self.temperature
            p = np.exp(logits - logits.max())
            p /= p.sum()
        first = int(rng.choice(len(pool), p=p))
        rest = np.delete(pool, first)
        return [int(pool[first])] + [int(j) for j in rng.choice(rest, size=k - 1, replace=False)]


class Phase1Sampler(_Sampler):
    """Monocular-temporal pairs (paper §2.4, Phase 1).

    A clip is drawn with probability proportional to its usable frames, then a usable target
    frame, then K ~ U{1..min(k_max, usable frames - 1)} distinct other usable frames as sources.
    The first source is biased towards frames unlike the target in head direction and
    expression: weight ∝ exp(d / temperature), d from `dissimilarity` (about 1 on average);
    ``temperature=None`` draws it uniformly. A one-frame clip (a single portrait) gives
    sources == [target]. Deterministic given the generator.

    Example:
        >>> pair = Phase1Sampler(clips).sample(np.random.default_rng(0))
    """

    def __init__(self, clips: Sequence[Clip], k_max: int = 4, temperature: float | None = 0.5,
                 source_stride: int = 1) -> None:
        super().__init__(clips, k_max, temperature, source_stride)

    def sample(self, rng: np.random.Generator) -> Pair:
        c, idx, target = self._target(rng)
        return Pair(c, self._sources(rng, idx, target, idx.usable[idx.usable != target]), target)


class Phase2Sampler(_Sampler):
    """Multi-view pairs (paper §2.4, Phase 2).

    Clip and target (time t, camera c) are drawn as in `Phase1Sampler`. With probability
    1 - ``cross_time`` the sources are other cameras at time t (cross-camera: multi-view
    geometry), else frames of other times from any camera (cross-time: keeps the model used
    to expression changes; paper: 25 %). If the drawn kind has no frame the other is used.
    K ~ U{1..min(k_max, frames available)}; the first source is hard-biased as in Phase 1.
    Clips with a single camera get Phase-1 pairs.
    """

    def __init__(self, clips: Sequence[Clip], cross_time: float = 0.25, k_max: int = 4,
                 temperature: float | None = 0.5, source_stride: int = 1) -> None:
        if not 0.0 <= cross_time <= 1.0:
            raise ValueError(f"cross_time must be in [0, 1], got {cross_time}")
        super().__init__(clips, k_max, temperature, source_stride)
        self.cross_time = cross_time

    def sample(self, rng: np.random.Generator) -> Pair:
        c, idx, target = self._target(rng)
        others = idx.usable[idx.usable != target]
        if idx.multiview:
            t = idx.time[others] == idx.time[target]
            same = others[t & (idx.camera[others] != idx.camera[target])]
            cross = others[~t]
            pools = (cross, same) if rng.random() < self.cross_time else (same, cross)
            others = pools[0] if len(pools[0]) else pools[1]
        return Pair(c, self._sources(rng, idx, target, others), target)
