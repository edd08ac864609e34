"""A real-time head tracker for a stream of frames (a webcam, or a video standing in for one).

Per frame: FaceMesh landmarks (tracking mode), then a bounded, warm-started solve — a few
Levenberg–Marquardt steps (`engine.track.frames_lm.solve_frames`, the video tracker's solver)
from the previous frame's solution, stopped early when a time budget runs out. Identity
``shape``, focal length and root rotation come from one full fit (`fit_landmarks`) on the
first frame with a face and stay fixed; the head turns through the neck joint, as in the
offline video tracker.

When the face is lost the tracker reports ``found=False`` and holds the last parameters (the
caller eases to neutral). When it comes back, or the solve fits badly, the pose is re-seeded
by a similarity fit to FaceMesh's 3D points before the solve.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.track.fit import REF_SIZE, FitConfig, Observations, fit_landmarks, initial_pose, project
from engine.track.frames_lm import solve_frames
from engine.track.lmk_model import LandmarkModel
from engine.track.tracker import MIN_FACE_PX
from engine.types import HeadParams


@dataclass(frozen=True)
class RealtimeConfig:
    """Settings of the real-time tracker."""

    iters: int = 3
    """Levenberg–Marquardt steps per frame at most."""
    budget_ms: float = 30.0
    """Solve time per frame: no further step starts once this has passed (one always runs)."""
    init_iters: int = 100
    """L-BFGS iterations of the initial full fit (shape, focal, pose, expression) on the first
    frame with a face (the offline tracker uses 200; 100 fits within ~0.2 px of it)."""
    reseed_iters: int = 8
    """Steps at most on a frame whose pose was re-seeded (the face found again, or the last fit
    was bad): its warm start is poor (still within ``budget_ms``)."""
    reseed_px: float = 12.0
    """A frame fitted worse than this (mean landmark error, 512-px units) re-seeds the next
    frame's pose instead of warm-starting from it."""
    min_face_px: float = MIN_FACE_PX
    """Faces narrower than this (landmark box width, pixels) count as lost."""
    fit: FitConfig = FitConfig()
    """Priors and robust loss of the fit (shared with the offline tracker)."""
    threads: int | None = 1
    """torch intra-op threads while fitting (restored after; None leaves them). The tensors are
    tiny, so more threads only add synchronisation: on a busy 2-core machine 2 threads made the
    per-frame solve 8x and the initial fit 5x slower than 1. The setting is process-wide: a
    tracker on a worker thread beside a render thread should use None (set threads once)."""


@dataclass(frozen=True)
class TrackedFrame:
    """The tracker's result for one frame."""

    params: HeadParams          # [1, ...]; the last good params when found is False
    found: bool                 # a face was found and fitted
    landmarks: np.ndarray | None  # [478, 3] FaceMesh landmarks in pixels (None if none were detected)
    error_px: float             # mean landmark error of the fit, 512-px units (nan if not found)
    landmarks_ms: float         # FaceMesh
    solve_ms: float             # the fit (on the first face: the full initial fit)
    initialised: bool = False   # this frame ran the initial full fit


class RealtimeTracker:
    """FaceMesh + a bounded per-frame fit. Not thread-safe; one stream at a time.

    ``focal`` (pixels) fixes the focal length instead of fitting it on the first frame."""

    def __init__(self, model: HeadModel, cfg: RealtimeConfig = RealtimeConfig(), focal: float | None = None) -> None:
        model = model.host()        # per-frame landmark fitting in numpy, on the host
        self.model = model
        self.cfg = cfg
        self.lm = LandmarkModel(model, detected=True)
        self._ids = np.asarray(model.lmk_ids)
        self._given_focal = focal
        self._detector = None
        self.reset()

    def reset(self) -> None:
        """Forget the person: the next frame with a face runs the initial full fit again."""
        self.focal: float | None = None
        self.shape: torch.Tensor | None = None          # [1, S]
        self._params: HeadParams | None = None
        self._size: tuple[int, int] | None = None
        self._reseed = True

    @property
    def initialised(self) -> bool:
        return self._params is not None

    @property
    def params(self) -> HeadParams:
        """The last good parameters (neutral before the first face)."""
        return self._params if self._params is not None else self.model.neutral()

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:
        if self._detector is None:
            from engine.track.landmarks import FaceMeshDetector

            self._detector = FaceMeshDetector(static_image=False, max_faces=1)
        faces = self._detector.detect(rgb)
        return faces[0] if faces else None

    def track(self, rgb: np.ndarray) -> TrackedFrame:
        """Track one uint8 [H, W, 3] RGB frame of the stream."""
        t0 = time.perf_counter()
        points = self._detect(rgb)
        t1 = time.perf_counter()
        out = self.track_landmarks(points, rgb.shape[:2])
        return dataclasses.replace(out, landmarks_ms=1000 * (t1 - t0))

    def track_landmarks(self, points: np.ndarray | None, image_size: tuple[int, int]) -> TrackedFrame:
        """Fit one frame's FaceMesh landmarks [478, 3] (pixels; None = no face) in an image of
        ``image_size`` (height, width). `track` without the detector. A change of image size
        runs the initial full fit again (the focal length is in pixels)."""
        with torch_threads(self.cfg.threads):
            return self._track_landmarks(points, image_size)

    def _track_landmarks(self, points: np.ndarray | None, image_size: tuple[int, int]) -> TrackedFrame:
        t0 = time.perf_counter()
        size = (int(image_size[0]), int(image_size[1]))
        if points is None or not np.isfinite(points).all() or np.ptp(points[:, 0]) < self.cfg.min_face_px:
            self._reseed = True
            return TrackedFrame(self.params, False, points, math.nan, 0.0, 0.0)
        pts = np.asarray(points, dtype=np.float64)[self._ids]
        obs = Observations(pts[None, :, :2], pts[None, :, 2], np.ones(1, bool), np.array([size]))
        initialised = False
        if self._params is None or size != self._size:
            self._initial_fit(obs)
            self._size, initialised = size, True
            p = self._params
        else:
            p, iters = self._params, self.cfg.iters
            if self._reseed:
                p, iters = self._seed_pose(p, obs), max(iters, self.cfg.reseed_iters)
            deadline = t0 + self.cfg.budget_ms / 1000
            with torch.no_grad():
                p = solve_frames(self.lm, p, torch.as_tensor(obs.points, dtype=torch.float32), torch.ones(1),
                                 torch.tensor([size], dtype=torch.float32), self.focal, self.cfg.fit,
                                 iters, deadline)
        if not p.is_finite():           # a diverged solve: keep the last good fit, reseed on the next frame
            self._reseed = True
            if initialised:
                self._params = None
            return TrackedFrame(self.params, False, points, math.nan, 0.0, 1000 * (time.perf_counter() - t0))
        err = self._error(p, obs)
        self._params, self._reseed = p, not err <= self.cfg.reseed_px
        return TrackedFrame(p, True, points, err, 0.0, 1000 * (time.perf_counter() - t0), initialised)

    def _initial_fit(self, obs: Observations) -> None:
        cfg = dataclasses.replace(self.cfg.fit, iters_all=self.cfg.init_iters)
        fit = fit_landmarks(self.lm, obs, cfg, focal=self._given_focal)
        self.focal = float(fit.K[0, 0, 0])
        self.shape = fit.params.shape.clone()
        self._params = fit.params

    def _seed_pose(self, p: HeadParams, obs: Observations) -> HeadParams:
        """``p`` with neck and translation from a similarity fit of the neutral face (root fixed)."""
        from scipy.spatial.transform import Rotation

        rot, trans = initial_pose(self.lm, obs, np.array([self.focal]))
        neck = (Rotation.from_rotvec(p.rotation[0].double().numpy()).inv() * Rotation.from_rotvec(rot)).as_rotvec()
        return dataclasses.replace(p, neck=torch.as_tensor(neck, dtype=torch.float32),
                                   translation=torch.as_tensor(trans, dtype=torch.float32))

    def _error(self, p: HeadParams, obs: Observations) -> float:
        size = torch.as_tensor(obs.image_size, dtype=torch.float32)
        with torch.no_grad():
            uv, _ = project(self.lm(p), torch.tensor([self.focal]), size)
        scale = float(size.max()) / REF_SIZE
        return float((uv[0] - torch.as_tensor(obs.points[0], dtype=torch.float32)).norm(dim=-1).mean()) / scale

    def close(self) -> None:
        """Release the detector."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> "RealtimeTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` within the block (process-wide while it runs)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
