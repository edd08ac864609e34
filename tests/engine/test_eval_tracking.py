"""`eval tracking`'s clip and scores against their formulas, and the trackers on a short rendered clip."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.eval import tracking as T
from engine.headmodel.base import HeadModel


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def test_the_schedule_spans_its_ranges():
    s = T.schedule(200)
    assert s["jaw"].min() == pytest.approx(0, abs=1e-9) and s["jaw"].max() == pytest.approx(T.JAW_MAX, rel=1e-3)
    assert s["blink"].min() == 0 and s["blink"].max() == pytest.approx(1, abs=1e-3)
    assert 0.15 < (s["blink"] > 0).mean() < 0.5                              # the eyes are mostly open
    assert np.abs(s["gaze_yaw"]).max() == pytest.approx(T.GAZE_YAW, rel=1e-2)
    assert np.abs(s["gaze_pitch"]).max() == pytest.approx(T.GAZE_PITCH, rel=1e-2)


def test_gaze_directions_turn_by_the_scheduled_yaw_and_pitch():
    yaw, pitch = torch.deg2rad(torch.tensor([0.0, 20.0, -25.0])), torch.deg2rad(torch.tensor([0.0, 10.0, -5.0]))
    rv = T._rotvec_yaw_pitch(yaw, pitch)
    neutral = T.HeadParams.neutral(3, 3, 3)
    d = T.gaze_directions(dataclasses.replace(neutral, eyes=torch.cat([rv, rv], 1)))
    np.testing.assert_allclose(np.degrees(np.arctan2(d[:, 0, 0], d[:, 0, 2])), np.degrees(yaw.numpy()), atol=1e-4)
    np.testing.assert_allclose(np.degrees(np.arcsin(d[:, 1, 1])), np.degrees(pitch.numpy()), atol=1e-4)


def test_closure_is_zero_at_rest_and_near_one_at_a_full_blink(model):
    p = T.known_params(model, model.neutral(), 60)
    c = T.closure(model, p)
    blink = T.schedule(60)["blink"]
    rest = dataclasses.replace(p, expr=torch.zeros_like(p.expr), jaw=torch.zeros_like(p.jaw), eyes=torch.zeros_like(p.eyes))
    np.testing.assert_allclose(T.closure(model, rest), 0, atol=1e-5)      # head pose is removed
    assert c[blink == blink.max()].min() > 0.8
    assert np.abs(c[blink == 0]).max() < 0.2                               # gaze moves the lids only a little


def test_score_is_zero_for_the_truth_and_reads_a_bias(model):
    truth = T.known_params(model, model.neutral(), 30)
    found = np.ones(30, bool)
    s = T.score("x", model, truth, truth, found, 0.3)
    assert s.frames == 30 and s.ms_per_frame == pytest.approx(10)
    assert s.jaw_error == 0 and s.lid_error < 1e-6 and s.gaze_error < 0.01
    off = dataclasses.replace(truth, jaw=truth.jaw + torch.tensor([[0.05, 0.0, 0.0]]))
    s = T.score("x", model, truth, off, found, 0.3)
    assert s.jaw_error == pytest.approx(0.05, abs=1e-6) and s.jaw_bias == pytest.approx(0.05, abs=1e-6)
    found[:10] = False
    assert T.score("x", model, truth, off, found, 0.3).frames == 20


def test_gaze_gains_are_the_slopes_of_tracked_against_true(model):
    truth = T.known_params(model, model.neutral(), 30)
    found = np.ones(30, bool)
    s = T.score("x", model, truth, truth, found, 0.3)
    assert s.gaze_yaw_gain == pytest.approx(1, abs=1e-4) and s.gaze_pitch_gain == pytest.approx(1, abs=1e-4)
    sched = T.schedule(30)          # a tracker that reads 60 % of the yaw and none of the pitch
    half = T._rotvec_yaw_pitch(torch.deg2rad(torch.as_tensor(0.6 * sched["gaze_yaw"], dtype=torch.float32)),
                               torch.zeros(30))
    s = T.score("x", model, truth, dataclasses.replace(truth, eyes=torch.cat([half, half], 1)), found, 0.3)
    assert s.gaze_yaw_gain == pytest.approx(0.6, abs=0.01) and s.gaze_pitch_gain == pytest.approx(0, abs=0.01)


def test_the_trackers_read_a_rendered_clip(model):
    """Four frames of the default avatar; loose bounds (the table of `eval tracking` is the measure):
    each tracker finds the face in every frame, and its jaw and gaze errors are of the right size."""
    from engine.animate import AnimatedAvatar
    from engine.service import default_avatar

    animated = AnimatedAvatar(default_avatar(model), model)
    clip = T.known_clip(animated, model, n=4, size=256)
    assert clip.frames.shape == (4, 256, 256, 3) and clip.frames.std() > 20
    rows = T.evaluate_tracking(clip, model, ("portrait", "real-time"), log=lambda s: None)
    for r in rows:
        assert r.frames == 4, r
        assert r.jaw_error < 0.15 and r.gaze_error < 25, r
    assert T.format_table(rows).splitlines()[2].startswith("portrait")
