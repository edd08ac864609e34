"""The projective stage on synthetic portraits: renders of the plain avatar under known parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.expressions import apply_expressions
from engine.generator.plain import inner_parts
from engine.generator.projective import ProjectiveConfig, Source, expression_confidence, pool, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.render import select
from engine.track.fit import intrinsics
from engine.types import Camera, HeadParams

SIZE, FOCAL = 384, 1600.0


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


@pytest.fixture(scope="module")
def plain(model):
    """The plain avatar without baked light: symmetric colours, so a mirror fill can be exact."""
    from engine.binding import surface_init
    from engine.generator.plain import plain_colors
    from engine.types import Avatar

    slots = model.uv_slots(256)
    uvg = surface_init(slots, model.v_template, model.faces, plain_colors(model, slots, shaded=False))
    return AnimatedAvatar(Avatar(uvg, model.name, torch.zeros(model.n_shape), {}), model)


def portrait(plain: AnimatedAvatar, params: HeadParams) -> Source:
    """A synthetic portrait: the plain avatar rendered by the tracker's fixed camera (origin, looking
    down -z), on white, with a perfect matte."""
    K = intrinsics(np.array([FOCAL]), np.array([[SIZE, SIZE]]))[0]
    cam = Camera(torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])), torch.tensor(K, dtype=torch.float32), SIZE, SIZE)
    with torch.no_grad():
        frame = select("cpu").render(plain.gaussians(params), cam)
    return Source(frame.to_uint8(), (frame.alpha.numpy() * 255).astype(np.uint8), params, K)


def posed(model: HeadModel, yaw: float = 0.0, **expr) -> HeadParams:
    p = apply_expressions(model.neutral(), model, expr)
    return HeadParams(p.shape, p.expr, torch.tensor([[0.0, yaw, 0.0]]), p.neck, p.jaw, p.eyes, torch.tensor([[0.0, 0.0, -0.8]]))


def face_texels(model: HeadModel, slots) -> torch.Tensor:
    """Slots on the front of the face (the landmark region), where a frontal portrait sees everything."""
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    surface = ~torch.as_tensor(inner_parts(model, slots))         # not the eyeballs, teeth or mouth cavity
    return surface & (pts[:, 2] > 0.0) & (pts[:, 1].abs() < 0.06) & (pts[:, 0].abs() < 0.05)


def test_frontal_portrait_round_trips_the_face_colours(model, plain):
    slots = model.uv_slots(256)
    color, opacity, conf = pool(model, slots, [portrait(plain, posed(model))])
    truth = plain.avatar.gaussians.color.reshape(3, -1)[:, slots.texel].T
    face = face_texels(model, slots)
    err = (color[face] - truth[face]).abs().mean()
    assert err < 0.03, err                           # the texture that was rendered comes back
    assert (conf[face] > 0.05).float().mean() > 0.9           # seen; the rest: nostrils, lid folds, lip slit
    assert (opacity[face] > 0.9).float().mean() > 0.95


def test_two_views_pool_and_the_hidden_side_is_filled_by_its_mirror(model, plain):
    slots = model.uv_slots(256)
    left_only = [portrait(plain, posed(model, yaw=0.9))]          # turned: one cheek is hidden
    color, _, conf = pool(model, slots, left_only)
    truth = plain.avatar.gaussians.color.reshape(3, -1)[:, slots.texel].T
    face = face_texels(model, slots)
    hidden = face & (conf < 1e-3)
    assert hidden.sum() > 200                               # the turn hides part of the face
    assert (color[hidden] - truth[hidden]).abs().mean() < 0.08
    both = left_only + [portrait(plain, posed(model, yaw=-0.9))]
    color2, _, conf2 = pool(model, slots, both)
    assert (conf2[face] > 0.05).float().mean() > (conf[face] > 0.05).float().mean()
    assert (color2[face] - truth[face]).abs().mean() < 0.04


def test_open_mouth_lowers_confidence_inside_the_mouth_only(model):
    slots = model.uv_slots(256)
    cfg = ProjectiveConfig()
    neutral = expression_confidence(model, slots, model.neutral(), cfg)
    assert torch.allclose(neutral, torch.ones_like(neutral))
    open_mouth = expression_confidence(model, slots, apply_expressions(model.neutral(), model, {"jawOpen": 0.8}), cfg)
    inner = torch.as_tensor(inner_parts(model, slots))
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    forehead = (pts[:, 1] > 0.06) & (pts[:, 2] > 0)
    lower_inner = inner & (pts[:, 1] < -0.035) & (pts[:, 2] > -0.04)   # lower teeth and the cavity's floor
    assert open_mouth[lower_inner].mean() < 0.3               # they move with the jaw
    assert open_mouth[forehead].min() > 0.99


def test_projective_gaussians_sit_on_the_subjects_surface(model, plain):
    uvg, conf = projective_gaussians(model, [portrait(plain, posed(model))], torch.zeros(model.n_shape))
    assert uvg.valid.sum() == len(model.uv_slots(256)) and conf.shape == (256, 256)
    animated = AnimatedAvatar(plain.avatar.__class__(uvg, model.name, torch.zeros(model.n_shape), {}), model)
    g = animated.gaussians(animated.neutral())
    torch.testing.assert_close(g.means, plain.gaussians(plain.neutral()).means, atol=1e-6, rtol=0)
