"""Portraits and videos to head parameters, camera and matte (DESIGN §8).

    detect (FaceMesh, 478 points) + matte (selfie segmentation) per frame
    -> fit: portraits jointly (shared shape; engine.track.fit), videos in two stages: shape
       and focal on up to 20 keyframes, then every frame by Levenberg-Marquardt and temporal
       smoothing (engine.track.frames_lm)
    -> a `Tracked` sequence, saved as an .npz with VHAP-style keys plus the mattes.

Frames where no face is found are kept, filled by the smoothness prior and flagged; so are
frames whose fitted landmarks miss the detected ones by more than FLAG_PX.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.io.media import MediaError, VideoReader, read_image
from engine.track.fit import FitConfig, Observations, fit_landmarks
from engine.track.frames_lm import fit_video
from engine.track.landmarks import N_LANDMARKS, FaceMeshDetector
from engine.track.lmk_model import LandmarkModel
from engine.types import HeadParams

MIN_FACE_PX = 40        # narrower faces (landmark box width) are refused as too small
FLAG_PX = 10.0          # frames fitted worse than this (512-px units) are flagged
MAX_PORTRAITS = 4
N_KEYFRAMES = 20
VIDEO_MATTE_SIDE = 512  # a video's person mattes are kept at most this many pixels a side
# Portraits stop the joint fit after 120 L-BFGS iterations instead of the default 200: on the 16
# shared portraits the mean landmark error is the same (0.896 px at 512 px either way), on
# synthetic portraits with known parameters the jaw (0.003 rad) and the face's shape (~2 mm) are
# recovered as well, and the fit takes 0.55 s instead of 0.95 s of a ~2 s build
# (`python main.py bench build`). Videos keep the default: their keyframes are fitted once.
PORTRAIT_FIT = FitConfig(iters_all=120)

Progress = Callable[[int, int], None]   # (done, total)


class TrackError(MediaError):
    """An input holds no usable face (none, too small); the message names the file."""


@dataclass
class Tracked:
    """One tracked sequence of N frames (a video, or portraits of one person)."""

    name: str
    sources: list[str]            # the input files
    params: HeadParams            # [N, ...]
    K: np.ndarray                 # [N, 3, 3]
    image_size: np.ndarray        # [N, 2] (height, width)
    found: np.ndarray             # [N] bool: the face was detected
    error_px: np.ndarray          # [N] mean landmark error, 512-px units (nan if not found)
    landmarks: np.ndarray         # [N, 478, 2] detected (nan if not found)
    fitted: np.ndarray            # [N, 478, 2] the fitted model's landmarks
    mattes: list[np.ndarray]      # N x uint8 person mattes (255 = person): a portrait's at its size,
                                  # a video's at most VIDEO_MATTE_SIDE a side (`person_matte`)
    fps: float | None = None      # the video's frame rate
    seconds: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def source(self, i: int, rgb: np.ndarray):
        """Frame ``i`` (its image ``rgb``, uint8 [H, W, 3]) as a generator's `Source`: the
        person matte, fitted parameters, intrinsics and detected landmarks."""
        from engine.generator.projective import Source

        lmk = self.landmarks[i] if self.landmarks is not None and np.isfinite(self.landmarks[i]).all() else None
        return Source(rgb, self.person_matte(i), self.params.frame(i), self.K[i], lmk)

    def person_matte(self, i: int) -> np.ndarray:
        """Frame ``i``'s person matte at the frame's own size (uint8 [H, W])."""
        import cv2

        m = self.mattes[i]
        h, w = (int(x) for x in self.image_size[i])
        return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)

    @property
    def flagged(self) -> np.ndarray:
        return ~self.found | ~(np.nan_to_num(self.error_px, nan=np.inf) <= FLAG_PX)

    @property
    def bbox(self) -> np.ndarray:
        """[N, 4] x0, y0, x1, y1 of the fitted landmarks."""
        return np.concatenate([np.nanmin(self.fitted, 1), np.nanmax(self.fitted, 1)], 1)

    def save(self, out_dir: Path) -> Path:
        """Write ``<name>.npz`` (VHAP keys + K, image_size, bbox, timestep_id, found, flagged,
        error_px, landmarks) and ``<name>_mattes.npz`` into ``out_dir``; returns the first."""
        from engine.io.params import save_params

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.npz"
        save_params(self.params, path, K=self.K.astype(np.float32), image_size=self.image_size.astype(np.int32),
                    bbox=self.bbox.astype(np.float32), timestep_id=np.arange(len(self.found), dtype=np.int32),
                    found=self.found, flagged=self.flagged, error_px=self.error_px.astype(np.float32),
                    landmarks=self.landmarks.astype(np.float32))
        from engine.atomic import atomic_path

        with atomic_path(out_dir / f"{self.name}_mattes.npz") as tmp:
            if len({m.shape for m in self.mattes}) == 1:
                np.savez_compressed(tmp, mattes=np.stack(self.mattes))
            else:
                np.savez_compressed(tmp, **{f"matte_{i}": m for i, m in enumerate(self.mattes)})
        return path


def pick_face(faces: list[np.ndarray], path, notes: list[str]) -> np.ndarray:
    """The largest face [478, 3]; raises TrackError if there is none or it is too small."""
    if not faces:
        raise TrackError(path, "no face found")
    if len(faces) > 1:
        msg = f"{path}: found {len(faces)} faces; using the largest"
        warnings.warn(msg)
        notes.append(msg)
    width = np.ptp(faces[0][:, 0])
    if width < MIN_FACE_PX:
        raise TrackError(path, f"the face is too small to track ({width:.0f} px wide; needs {MIN_FACE_PX})")
    return faces[0]


def _model_points(obs: Observations, model: HeadModel) -> Observations:
    """The observations of the model's own landmarks (FaceMesh points ``model.lmk_ids``)."""
    ids = model.lmk_ids.numpy()
    return Observations(obs.points[:, ids], obs.depth[:, ids], obs.found, obs.image_size)


def _facemesh_order(fitted: np.ndarray, model: HeadModel) -> np.ndarray:
    """Fitted model landmarks [N, L, 2] as FaceMesh's [N, 478, 2], nan where the model has none."""
    out = np.full((len(fitted), N_LANDMARKS, 2), np.nan, dtype=np.float32)
    out[:, model.lmk_ids.numpy()] = fitted
    return out


def _observations(lmks: list[np.ndarray | None], sizes: list[tuple]) -> Observations:
    n = len(lmks)
    pts = np.full((n, N_LANDMARKS, 3), np.nan)
    for i, p in enumerate(lmks):
        if p is not None:
            pts[i] = p
    found = np.array([p is not None for p in lmks])
    filled = np.where(found[:, None, None], pts, 0.0)
    return Observations(filled[..., :2], filled[..., 2], found, np.array(sizes))


def track_portraits(paths: Sequence[Path], model: HeadModel, cfg: FitConfig = PORTRAIT_FIT,
                    progress: Progress | None = None, name: str | None = None) -> Tracked:
    """Fit 1–4 portraits of one person: shared shape, per-image pose, expression and focal."""
    if not 1 <= len(paths) <= MAX_PORTRAITS:
        raise ValueError(f"give 1 to {MAX_PORTRAITS} portraits of one person, not {len(paths)}")
    return track_images([read_image(p) for p in paths], [str(p) for p in paths], model, cfg, progress, name)


def track_images(images: Sequence[np.ndarray], sources: Sequence[str], model: HeadModel,
                 cfg: FitConfig = PORTRAIT_FIT, progress: Progress | None = None, name: str | None = None) -> Tracked:
    """`track_portraits` of images already read (uint8 [H, W, 3] RGB); ``sources`` names them."""
    from engine.track.matte import Matter

    notes: list[str] = []
    t0 = time.perf_counter()
    det, matter = FaceMeshDetector(static_image=True), Matter()
    lmks, sizes, mattes = [], [], []
    try:
        for i, (rgb, source) in enumerate(zip(images, sources)):
            lmks.append(pick_face(det.detect(rgb), source, notes))
            sizes.append(rgb.shape[:2])
            mattes.append((matter.matte(rgb) * 255 + 0.5).astype(np.uint8))
            if progress:
                progress(i + 1, len(images) + 1)
    finally:
        det.close()
        matter.close()
    t1 = time.perf_counter()
    obs = _observations(lmks, sizes)
    model = model.host()        # landmark fitting: small least-squares problems, numpy on the host
    fit = fit_landmarks(LandmarkModel(model, detected=True), _model_points(obs, model), cfg)
    if progress:
        progress(len(images) + 1, len(images) + 1)
    return Tracked(name or Path(sources[0]).stem, list(sources), fit.params, fit.K, obs.image_size, obs.found,
                   fit.error_px, np.where(obs.found[:, None, None], obs.points, np.nan),
                   _facemesh_order(fit.projected, model), mattes,
                   seconds={"detect": t1 - t0, "fit": time.perf_counter() - t1}, warnings=notes)


def _shrunk(matte: np.ndarray, side: int) -> np.ndarray:
    """``matte`` at most ``side`` pixels a side (area-averaged), or as it is."""
    import cv2

    from engine.camera import shrunk_size

    small = shrunk_size(matte.shape[1], matte.shape[0], side)
    return cv2.resize(matte, small, interpolation=cv2.INTER_AREA) if small else matte


def track_video(path: Path, model: HeadModel, cfg: FitConfig = FitConfig(), progress: Progress | None = None,
                max_frames: int | None = None, with_mattes: bool = True) -> Tracked:
    """Track every frame of a video (FaceMesh in tracking mode), then fit in two stages."""
    from engine.track.matte import Matter

    notes: list[str] = []
    t0 = time.perf_counter()
    det = FaceMeshDetector(static_image=False, max_faces=1)
    matter = Matter() if with_mattes else None
    lmks, sizes, mattes = [], [], []
    try:
        with VideoReader(path) as video:
            total = min(video.n_frames or 0, max_frames or 10**9)
            fps = video.fps
            for i, rgb in enumerate(video):
                if max_frames is not None and i >= max_frames:
                    break
                faces = det.detect(rgb)
                ok = bool(faces) and np.ptp(faces[0][:, 0]) >= MIN_FACE_PX
                lmks.append(faces[0] if ok else None)
                sizes.append(rgb.shape[:2])
                if matter is not None:      # kept small: at full size a long 1080p video's filled the memory
                    mattes.append(_shrunk((matter.matte(rgb) * 255 + 0.5).astype(np.uint8), VIDEO_MATTE_SIDE))
                if progress:
                    progress(i + 1, max(total, i + 1))
    finally:
        det.close()
        if matter is not None:
            matter.close()
    if not any(p is not None for p in lmks):
        raise TrackError(path, "no face found in any frame")
    lost = sum(p is None for p in lmks)
    if lost:
        notes.append(f"{path}: no face in {lost} of {len(lmks)} frames (filled by smoothing, flagged)")
    t1 = time.perf_counter()
    obs = _observations(lmks, sizes)
    model = model.host()        # landmark fitting: small least-squares problems, numpy on the host
    fit = fit_video(LandmarkModel(model, detected=True), _model_points(obs, model), cfg, N_KEYFRAMES)
    return Tracked(Path(path).stem, [str(path)], fit.params, fit.K, obs.image_size, obs.found, fit.error_px,
                   np.where(obs.found[:, None, None], obs.points, np.nan), _facemesh_order(fit.projected, model),
                   mattes, fps=fps,
                   seconds={"detect": t1 - t0, "fit": time.perf_counter() - t1}, warnings=notes)
