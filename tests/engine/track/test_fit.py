"""The landmark fit on synthetic data: OpenHead's own landmarks under known parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.expressions import apply_expressions
from engine.headmodel.base import HeadModel
from engine.track.fit import FitConfig, Observations, fit_landmarks, project
from engine.track.frames_lm import fit_video
from engine.track.lmk_model import LandmarkModel
from engine.types import HeadParams

SIZE = (512, 512)
FOCAL = 1400.0


@pytest.fixture(scope="module")
def lm(openhead) -> LandmarkModel:
    return LandmarkModel(HeadModel(openhead))


def truth(model: HeadModel, n: int, seed: int) -> HeadParams:
    """n frames of one person: a random shape, turning and nodding, speaking and smiling."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n)[:, None]
    p = model.neutral(n)
    shape = (torch.rand(1, model.n_shape, generator=g) - 0.5).expand(n, -1) * 1.5
    p = apply_expressions(HeadParams(shape, p.expr, p.rotation, p.neck, p.jaw, p.eyes, p.translation), model,
                          {"mouthSmile_L": 0.5, "browInnerUp": 0.4})
    rot = torch.cat([0.25 * torch.sin(6 * t), 0.4 * torch.sin(4 * t), 0.05 * t], 1)
    jaw = torch.cat([0.25 * (1 + torch.sin(9 * t)) / 2, torch.zeros(n, 2)], 1)
    trans = torch.cat([0.02 * torch.sin(3 * t), 0.01 * t, -0.6 - 0.1 * t], 1)
    return HeadParams(p.shape, p.expr, rot, p.neck, jaw, p.eyes, trans)


def observe(lm: LandmarkModel, p: HeadParams, noise_px: float, seed: int) -> Observations:
    """What FaceMesh would report: pixels (+ noise) and relative depth in pixels."""
    size = torch.tensor([SIZE] * p.batch_size, dtype=torch.float32)
    with torch.no_grad():
        uv, z = project(lm(p), torch.full((p.batch_size,), FOCAL), size)
    rel = (z - z.mean(1, keepdim=True)) * FOCAL / z.mean(1, keepdim=True)
    g = np.random.default_rng(seed)
    pts = uv.numpy() + g.normal(0, noise_px, uv.shape)
    return Observations(pts, rel.numpy(), np.ones(p.batch_size, bool), np.array([SIZE] * p.batch_size))


def canonical_landmarks(lm: LandmarkModel, p: HeadParams) -> np.ndarray:
    """Landmarks with shape, expression and jaw but no head pose or translation: [N, L, 3]."""
    z = torch.zeros_like(p.rotation)
    with torch.no_grad():
        return lm(HeadParams(p.shape, p.expr, z, z, p.jaw, p.eyes, z)).numpy()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.rad2deg((Rotation.from_rotvec(a.numpy()).inv() * Rotation.from_rotvec(b.numpy())).magnitude())


def test_portraits_recover_pose_face_and_focal(lm):
    """Three portraits of one person, 0.5 px noise: rotation within 2°, the face's landmarks (shape
    + expression + jaw, pose removed) within 3 mm mean. (Three near-frontal views at one distance
    hardly constrain the focal length; the video test checks it.)"""
    p = truth(lm.model, 3, seed=1)
    fit = fit_landmarks(lm, observe(lm, p, 0.5, seed=2), FitConfig(), shared_focal=True)
    assert np.nanmean(fit.error_px) < 1.0                       # reprojection close to the noise level
    assert angle_deg(fit.params.rotation, p.rotation).max() < 2.0
    face = np.linalg.norm(canonical_landmarks(lm, fit.params) - canonical_landmarks(lm, p), axis=-1)
    assert face.mean() < 0.003                                 # size trades against distance a little
    assert abs(float(fit.params.jaw[0, 0] - p.jaw[0, 0])) < 0.05


def test_the_portrait_fit_recovers_single_portraits(lm):
    """The portraits' shorter fit (`PORTRAIT_FIT`, 120 iterations) on single portraits of four
    subjects, 0.5 px noise: the jaw within 0.01 rad, the face's landmarks within 3 mm mean
    (200 iterations recover them no better: 0.003 rad, 2.3 mm)."""
    from engine.track.tracker import PORTRAIT_FIT

    p = truth(lm.model, 4, seed=5)
    for i in range(4):
        frame = p.frame(i)
        fit = fit_landmarks(lm, observe(lm, frame, 0.5, seed=10 + i), PORTRAIT_FIT)
        face = np.linalg.norm(canonical_landmarks(lm, fit.params) - canonical_landmarks(lm, frame), axis=-1)
        assert face.mean() < 0.003, i
        assert abs(float(fit.params.jaw[0, 0] - frame.jaw[0, 0])) < 0.01, i


def test_video_recovers_every_frame_and_fills_lost_ones(lm):
    p = truth(lm.model, 40, seed=3)
    obs = observe(lm, p, 0.5, seed=4)
    lost = [12, 13, 27]
    obs.found[lost] = False
    obs.points[lost] = 0.0
    fit = fit_video(lm, obs, FitConfig())
    assert np.isnan(fit.error_px[lost]).all()
    assert np.nanmean(fit.error_px) < 1.2
    # the head's actual orientation (root then neck) matches the truth, lost frames included
    from scipy.spatial.transform import Rotation

    def head_rot(q: HeadParams) -> Rotation:
        return Rotation.from_rotvec(q.rotation.numpy()) * Rotation.from_rotvec(q.neck.numpy())

    err = np.rad2deg((head_rot(fit.params).inv() * head_rot(p)).magnitude())
    assert err.max() < 3.0
    jaw_err = np.abs(fit.params.jaw[:, 0] - p.jaw[:, 0]).numpy()
    assert jaw_err.mean() < 0.03
    print("focal", fit.K[0, 0, 0])
    assert abs(fit.K[0, 0, 0] / FOCAL - 1) < 0.15        # the head moves 10 cm in depth and turns ±23°


def test_one_eyes_misread_iris_does_not_turn_it_alone(lm):
    """Both eyes look 15° aside; FaceMesh misreads one iris by 3 px. Without the vergence
    prior the fit turns that eye on its own; with it the two eyes are pulled together and their
    mean gaze is no further from the truth, in the portrait fit (L-BFGS) and the video fit
    (Levenberg-Marquardt) alike (the prior is soft: a person may cross their eyes)."""
    from engine.headmodel import facemesh as fm

    n = 12
    p = truth(lm.model, n, seed=5)
    gaze = torch.tensor([[0.0, 0.26, 0.0] * 2]).expand(n, -1).clone()
    p = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, gaze, p.translation)
    obs = observe(lm, p, 0.3, seed=6)
    ids = [int(i) for i in lm.model.lmk_ids]
    obs.points[:, [ids.index(i) for i in fm.IRIS_R], 0] += 3.0
    for fit in (lambda cfg: fit_landmarks(lm, Observations(obs.points[:2], obs.depth[:2], obs.found[:2],
                                                           obs.image_size[:2]), cfg),
                lambda cfg: fit_video(lm, obs, cfg)):
        free, coupled = fit(FitConfig(w_vergence=0.0)).params.eyes, fit(FitConfig()).params.eyes
        apart = lambda e: float((e[:, :3] - e[:, 3:]).norm(dim=1).mean())  # noqa: E731
        assert apart(free) > 0.05 and apart(coupled) < 0.75 * apart(free)
        off = lambda e: float((e[:, [1, 4]].mean(1) - 0.26).abs().mean())  # noqa: E731
        assert off(coupled) < 0.08 and off(coupled) <= off(free) + 0.01    # the mean gaze no worse for it
