"""Eyes as eyes: the lids' Gaussians stop at the lid margin, so the opening shows the eyeball and
the iris seen turns with the gaze."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolyPath

from engine.animate import AnimatedAvatar
from engine.binding import surface_init, texel_footprint, triangle_frames
from engine.camera import orbit_camera
from engine.eval.tracking import _rotvec_yaw_pitch, gaze_directions
from engine.generator.eyes import eyeball_angles
from engine.generator.lids import (LASH_OVERHANG, MIN_RIM_WIDTH, RIM_SIGMAS, eyeball_slots, lid_margins, lid_width_caps,
                                   lidded_surface)
from engine.generator.plain import plain_colors
from engine.headmodel.base import HeadModel
from engine.headmodel.build import IRIS_RIM_DEG
from engine.render.select import select
from engine.types import Avatar

SIZE = 512


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


@pytest.fixture(scope="module")
def slots(model):
    return model.uv_slots(256)


def _slot_points(model: HeadModel, slots) -> torch.Tensor:
    return torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])


def test_lid_caps_are_the_distance_to_the_margins_over_rim_sigmas(model, slots):
    caps = lid_width_caps(model, slots, model.v_template)
    eyeball = eyeball_slots(model, slots)
    assert eyeball.sum() > 500 and torch.isinf(caps[eyeball]).all()          # the eyeballs are not capped
    margins = lid_margins(model, model.v_template)
    assert len(margins) == 2
    for upper, lower in margins:                                             # corner to corner, upper above
        assert len(upper) + len(lower) == 18
        torch.testing.assert_close(upper[[0, -1]], lower[[0, -1]])
        assert upper[1:-1, 1].mean() > lower[1:-1, 1].mean()
    # The distances measured independently: each margin sampled densely.
    t = torch.linspace(0, 1, 200)[:, None, None]
    dense = lambda paths: torch.cat([(m[:-1] + t * (m[1:] - m[:-1])).reshape(-1, 3) for m in paths])  # noqa: E731
    pts = _slot_points(model, slots)
    d_up = torch.cdist(pts, dense([u for u, _ in margins])).min(1).values
    d_low = torch.cdist(pts, dense([lo for _, lo in margins])).min(1).values
    near = (~eyeball) & (torch.minimum(d_up, d_low) < 0.006)
    assert near.sum() > 200
    reach = torch.minimum(d_up + LASH_OVERHANG, d_low)[near]
    torch.testing.assert_close(caps[near], (reach / RIM_SIGMAS).clamp_min(MIN_RIM_WIDTH), rtol=0.02, atol=2e-5)


def test_surface_init_takes_the_smaller_of_footprint_and_cap(model, slots):
    caps = lid_width_caps(model, slots, model.v_template)
    uvg = surface_init(slots, model.v_template, model.faces, torch.zeros(len(slots), 3), max_width=caps)
    tri_scale = triangle_frames(model.v_template, model.faces).scale[slots.face]
    width = torch.exp(slots.gather(uvg.log_scale)) * tri_scale[:, None]       # [N, 3] metres
    footprint = texel_footprint(slots, _slot_points(model, slots))
    torch.testing.assert_close(width[:, 0], torch.minimum(footprint, caps))
    torch.testing.assert_close(width[:, 2], width[:, 0])
    assert (footprint > caps).sum() > 50                                     # the lids' margin rows were narrowed


def _avatar(model: HeadModel, slots, capped: bool, iris_rgb=(0.0, 0.0, 1.0)) -> AnimatedAvatar:
    """The plain avatar (no baked light) with its irises pure blue, lids capped or not."""
    color = plain_colors(model, slots, shaded=False)
    for mask, angle in eyeball_angles(model, slots).values():
        color[torch.as_tensor(mask & (angle < IRIS_RIM_DEG))] = torch.tensor(iris_rgb)
    caps = lid_width_caps(model, slots, model.v_template) if capped else None
    uvg = surface_init(slots, model.v_template, model.faces, color, max_width=caps)
    return AnimatedAvatar(Avatar(uvg, model.name, torch.zeros(model.n_shape), {}), model)


def _look(model: HeadModel, yaw_deg: float):
    p = model.neutral()
    eyes = _rotvec_yaw_pitch(torch.tensor([np.radians(yaw_deg)]), torch.tensor([0.0]))
    return dataclasses.replace(p, eyes=torch.cat([eyes, eyes], 1))


def _iris_offsets(model: HeadModel, avatar: AnimatedAvatar, yaw_deg: float) -> list[float]:
    """Per eye, the horizontal distance in pixels between the centroid of the blue iris pixels
    seen inside the lid outline and the projected pole of the eyeball, both eyes turned ``yaw_deg``."""
    cam = orbit_camera(size=SIZE)
    p = _look(model, yaw_deg)
    with torch.no_grad():
        rgb = select("cpu").render(avatar.gaussians(p), cam).rgb.clamp(0, 1).numpy()
        verts = model.vertices(p)[0]
    blue = (rgb[..., 2] > 0.5) & (rgb[..., 0] < 0.3) & (rgb[..., 1] < 0.3)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pixels = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    on_eye = model.weights[:, 3:] > 0.5                                     # [V, 2] eyeball vertices
    gaze = torch.as_tensor(gaze_directions(p)[0], dtype=torch.float32)     # [2, 3]
    out = []
    for upper, lower in lid_margins(model, verts):
        margin = torch.cat([upper, lower.flip(0)[1:-1]])
        k = int(torch.argmin(torch.stack([(verts[on_eye[:, j]].mean(0) - margin.mean(0)).norm() for j in range(2)])))
        ball = verts[on_eye[:, k]]
        pole = cam.pixels(ball[torch.argmax(ball @ gaze[k])][None])[0].numpy()    # the vertex furthest along the gaze
        inside = PolyPath(cam.pixels(margin).numpy()).contains_points(pixels).reshape(SIZE, SIZE)
        iris = blue & inside
        assert iris.sum() > 100
        out.append(float(xx[iris].mean() + 0.5 - pole[0]))
    return out


@pytest.mark.parametrize(("yaw", "tolerance"), [(0.0, 1.0), (-10.0, 2.0), (10.0, 2.0)])
def test_the_iris_seen_follows_the_eyeballs_pole(model, slots, yaw, tolerance):
    """The seen iris's centroid lies near the image of the eyeball's pole (lids cropping a turned
    iris pull it back a little, as they do a real one's). With the lids' Gaussians hanging over
    the opening (no caps) it lies 1.2 px off at rest and 2.6 px at 10°."""
    offsets = _iris_offsets(model, _avatar(model, slots, capped=True), yaw)
    assert max(abs(o) for o in offsets) < tolerance, offsets


def test_a_closed_eye_hides_the_eyeball_better_than_full_footprints(model, slots):
    """At the eyeBlink weight where the model's lid margins meet, with the eyeballs painted pure
    green, wherever the eyes look: the green seen (summed over red, 512²) is 25–28, where the
    lids' full footprints showed 33–35. Every lid Gaussian ending at its margin, without the
    upper lid's overhang, shows 52–56; with the overhang but the blink that went through the
    eyeball, 39."""
    from engine.eval.tracking import _closing_blink

    color = plain_colors(model, slots, shaded=False)
    color[eyeball_slots(model, slots)] = torch.tensor([0.0, 1.0, 0.0])
    uvg = lidded_surface(model, slots, model.v_template, color)
    avatar = AnimatedAvatar(Avatar(uvg, model.name, torch.zeros(model.n_shape), {}), model)
    names = list(model.expr_names)
    closed = model.neutral()
    closed = dataclasses.replace(closed, expr=closed.expr.clone())
    for name in ("eyeBlink_L", "eyeBlink_R"):
        closed.expr[0, names.index(name)] = _closing_blink(model, model.neutral())
    for yaw, pitch in ((0.0, 0.0), (20.0, -12.0), (-20.0, 12.0)):
        eyes = _rotvec_yaw_pitch(torch.tensor([np.radians(yaw)]), torch.tensor([np.radians(pitch)]))
        with torch.no_grad():
            rgb = select("cpu").render(avatar.gaussians(dataclasses.replace(closed, eyes=torch.cat([eyes, eyes], 1))),
                                       orbit_camera(size=SIZE)).rgb.clamp(0, 1).numpy()
        assert (rgb[..., 1] - rgb[..., 0]).clip(0, 1).sum() < 31.0
