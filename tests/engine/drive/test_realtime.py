"""The real-time tracker on OpenHead's own landmarks under known parameters (no camera, no mediapipe)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from engine.drive.realtime import RealtimeConfig, RealtimeTracker
from engine.headmodel.base import HeadModel
from engine.track.fit import project
from engine.track.lmk_model import LandmarkModel
from engine.types import HeadParams

SIZE = 256
FOCAL = 500.0


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def truth(model: HeadModel, i: int) -> HeadParams:
    """Frame i of a person talking and turning their head."""
    g = torch.Generator().manual_seed(0)
    p = model.neutral()
    return dataclasses.replace(p, shape=torch.rand(1, model.n_shape, generator=g) - 0.5,
                               rotation=torch.tensor([[0.1, 0.0, 0.0]]),
                               neck=torch.tensor([[0.0, 0.3 * math.sin(i / 5), 0.0]]),
                               jaw=torch.tensor([[0.1 * (1 + math.sin(i / 3)), 0.0, 0.0]]),
                               translation=torch.tensor([[0.0, 0.0, -0.7]]))


def facemesh(lm: LandmarkModel, p: HeadParams) -> np.ndarray:
    """What FaceMesh would report: [478, 3] pixels and relative depth in pixels."""
    with torch.no_grad():
        uv, z = project(lm(p), torch.tensor([FOCAL]), torch.tensor([[SIZE, SIZE]], dtype=torch.float32))
    rel = (z - z.mean(1, keepdim=True)) * FOCAL / z.mean(1, keepdim=True)
    return np.concatenate([uv[0].numpy(), rel[0].numpy()[:, None]], 1)


def test_tracks_jaw_and_head_turn_warm_started_and_holds_when_lost(model):
    lm = LandmarkModel(model)
    tr = RealtimeTracker(model, RealtimeConfig(iters=3, budget_ms=1e6), focal=FOCAL)   # accuracy, not speed
    lost = {8, 9}
    for i in range(14):
        p = truth(model, i)
        out = tr.track_landmarks(None if i in lost else facemesh(lm, p), (SIZE, SIZE))
        if i == 0:
            assert out.initialised and out.found and tr.focal == pytest.approx(FOCAL)
            shape = tr.shape.clone()
        elif i in lost:
            assert not out.found and math.isnan(out.error_px)
            assert torch.equal(out.params.jaw, held.jaw) and torch.equal(out.params.neck, held.neck)
            continue
        assert out.found and not (i and out.initialised)
        assert out.error_px < 0.5                                    # 512-px units, noise-free landmarks
        assert abs(float(out.params.jaw[0, 0] - p.jaw[0, 0])) < 0.02   # radians
        assert abs(float(out.params.neck[0, 1] - p.neck[0, 1])) < 0.02
        assert torch.equal(out.params.shape, shape) and out.solve_ms > 0
        held = out.params


def test_the_time_budget_bounds_the_solve(model):
    lm = LandmarkModel(model)
    tr = RealtimeTracker(model, RealtimeConfig(iters=50, budget_ms=1.0), focal=FOCAL)
    tr.track_landmarks(facemesh(lm, truth(model, 0)), (SIZE, SIZE))
    one_step = tr.track_landmarks(facemesh(lm, truth(model, 1)), (SIZE, SIZE))
    tr50 = RealtimeTracker(model, RealtimeConfig(iters=50, budget_ms=1e6), focal=FOCAL)
    tr50.track_landmarks(facemesh(lm, truth(model, 0)), (SIZE, SIZE))
    fifty = tr50.track_landmarks(facemesh(lm, truth(model, 1)), (SIZE, SIZE))
    assert one_step.solve_ms * 5 < fifty.solve_ms                    # stopped after the first step


def test_no_face_before_the_first_is_neutral_and_small_faces_are_lost(model):
    lm = LandmarkModel(model)
    tr = RealtimeTracker(model)
    out = tr.track_landmarks(None, (SIZE, SIZE))
    assert not out.found and not tr.initialised
    assert torch.equal(out.params.jaw, model.neutral().jaw)
    pts = facemesh(lm, truth(model, 0))
    tiny = (pts - pts.mean(0)) * 0.2 + pts.mean(0)                   # ~20 px wide
    assert not tr.track_landmarks(tiny, (SIZE, SIZE)).found
    tr.reset()
    assert tr.track_landmarks(pts, (SIZE, SIZE)).initialised


def test_non_finite_landmarks_are_a_lost_frame_and_never_the_warm_start(model):
    """A NaN landmark frame is lost (the last good fit is held) and the next good frame tracks."""
    lm = LandmarkModel(model)
    tr = RealtimeTracker(model, RealtimeConfig(iters=3, budget_ms=1e6), focal=FOCAL)
    first = tr.track_landmarks(facemesh(lm, truth(model, 0)), (SIZE, SIZE))
    pts = facemesh(lm, truth(model, 1))
    pts[10, 0] = np.nan
    out = tr.track_landmarks(pts, (SIZE, SIZE))
    assert not out.found and out.params.is_finite() and torch.equal(out.params.jaw, first.params.jaw)
    p = truth(model, 2)
    out = tr.track_landmarks(facemesh(lm, p), (SIZE, SIZE))
    assert out.found and out.params.is_finite() and abs(float(out.params.jaw[0, 0] - p.jaw[0, 0])) < 0.02
