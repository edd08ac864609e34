"""The refiner's photometric tracking: what turns the landmark tracker's parameters into the
tracking the refiner trains on and `eval refine` scores with.

1. Every frame (training and held-out) is aligned to the feed-forward *start* avatar
   (`track_photometric` at ``cfg.track_resolution``).
2. A *tracker avatar*: the start, refined for ``cfg.tracker_iterations`` steps on the training
   frames with that tracking. It knows the subject's appearance better than the start, which
   is built from a single frame.
3. Every frame is aligned again, to the tracker avatar, at ``cfg.tracker_resolution``.

The avatar under evaluation is then refined afresh from the start on the result; it never takes
part in the tracking. This is the role of the per-subject texture of the metrical tracker behind
the paper's INSTA data: a personal appearance model that makes the tracking photometrically
precise. The tracker avatar sees only training frames, like the avatar it serves.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable

from engine.headmodel.base import HeadModel
from engine.refine.align import track_photometric
from engine.refine.config import RefineConfig, training_side
from engine.refine.data import VideoData
from engine.types import Avatar

STAGES = ("tracking (photometric)", "tracker avatar", "tracking (tracker avatar)")
"""The stages ``progress`` names, in order (the last two only with ``cfg.tracker_iterations``)."""


def data_side(cfg: RefineConfig) -> int:
    """The longer side, pixels, of the frames `track_for_refine` and the refiner need: the
    tracking's largest renders, or the largest training resolution of ``cfg``'s `stages` (the
    refiner downscales larger frames itself)."""
    train = training_side(cfg)
    if not cfg.photometric_tracking:
        return train
    return max(train, cfg.track_resolution, cfg.tracker_resolution if cfg.tracker_iterations > 0 else 0)


def track_for_refine(start: Avatar, model: HeadModel, data: VideoData, cfg: RefineConfig,
                     progress: Callable[[str, float], None] | None = None,
                     cancel: threading.Event | None = None) -> VideoData:
    """``data`` on the refiner's tracking (the module's stages 1–3), at its own resolution (load it
    at `data_side`; each stage renders at most at its own); its mattes follow the aligned mesh.
    ``progress(stage, fraction)`` names one of STAGES; a cancel raises `engine.jobs.Cancelled`."""
    from engine.refine.refiner import refine

    report = progress or (lambda stage, fraction: None)

    def follow(stage: str):
        return lambda done, total: report(stage, done / max(total, 1))

    data = track_photometric(start, model, data, cfg.track_config(), follow(STAGES[0]), cancel)
    if cfg.tracker_iterations <= 0:
        return data
    # Static: the tracker is a texture to align to, and a residual would follow the expressions it is aligning.
    short = dataclasses.replace(cfg, iterations=cfg.tracker_iterations, checkpoint_every=0, preview_every=0,
                                residual_features=0)
    tracker = refine(start, model, data, short, lambda p: report(STAGES[1], p.iteration / p.total), cancel)
    return track_photometric(tracker, model, data, cfg.track_config(tracker=True), follow(STAGES[2]),
                             cancel)
