"""The projective stage on synthetic portraits: renders of the plain avatar under known parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.animate import AnimatedAvatar
from engine.expressions import apply_expressions
from engine.generator.plain import inner_parts
from engine.generator.projective import ProjectiveConfig, Source, expression_confidence, pool, projective_gaussians
from engine.headmodel import facemesh as fm
from engine.headmodel.base import HeadModel
from engine.render.select import select
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


def recoloured(plain: AnimatedAvatar, model: HeadModel, where: np.ndarray, rgb: tuple) -> AnimatedAvatar:
    """``plain`` with the slots of ``where`` [N] painted ``rgb``."""
    import dataclasses

    slots = model.uv_slots(256)
    color = plain.avatar.gaussians.color.clone().reshape(3, -1)
    color[:, slots.texel[torch.as_tensor(where)]] = torch.tensor(rgb)[:, None]
    uvg = dataclasses.replace(plain.avatar.gaussians, color=color.reshape(plain.avatar.gaussians.color.shape))
    return AnimatedAvatar(dataclasses.replace(plain.avatar, gaussians=uvg), model)


def test_only_an_open_mouth_source_paints_the_teeth(model, plain):
    from engine.generator.plain import mouth_interior
    from engine.generator.projective import mouth_gap, project_slots

    slots = model.uv_slots(256)
    mouth = mouth_interior(model, slots)
    assert mouth.sum() > 500 and not (mouth & ~inner_parts(model, slots)).any()
    closed, wide = posed(model), posed(model, jawOpen=0.8)
    assert abs(mouth_gap(model, closed)) < 1e-6
    assert mouth_gap(model, wide) > ProjectiveConfig().mouth_open
    _, w_closed = project_slots(model, slots, portrait(plain, closed), ProjectiveConfig())
    assert w_closed[torch.as_tensor(mouth)].max() == 0                  # the rest mouth's gap shows lips only
    # Two sources, a closed mouth and an open one: the mouth's inside is the open one's alone.
    both, _, conf = pool(model, slots, [portrait(plain, closed), portrait(plain, wide)])
    alone, _, _ = pool(model, slots, [portrait(plain, wide)])
    seen = torch.as_tensor(mouth) & (conf > 0.05)
    assert seen.sum() > 100
    torch.testing.assert_close(both[seen], alone[seen])


def test_a_sideways_gaze_in_the_portrait_still_gives_a_centred_iris(model, plain):
    from engine.generator.eyes import eye_colors, eyeball_angles, paint_eyes
    from engine.headmodel.build import IRIS_RIM_DEG

    slots = model.uv_slots(256)
    eyes = eyeball_angles(model, slots)
    iris_slots = np.zeros(len(slots), bool)
    for mask, angle in eyes.values():
        iris_slots |= mask & (angle < IRIS_RIM_DEG)
    blue = recoloured(plain, model, iris_slots, (0.15, 0.35, 0.75))
    painted = []
    for yaw in (0.0, 0.35):                                        # the person looks ahead, then 20° aside
        p = posed(model)
        p = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, torch.tensor([[0.0, yaw, 0.0] * 2]), p.translation)
        src = portrait(blue, p)
        color, _, _ = pool(model, slots, [src])
        painted.append(paint_eyes(model, slots, [eye_colors(model, src)], color))
    for mask, angle in eyes.values():
        m = torch.as_tensor(mask)
        # the same eye whatever the photo's gaze: the texture is a function of the angle to the pole
        assert (painted[0][m] - painted[1][m]).abs().max() < 0.1          # the sclera read shifts a little
        iris = torch.as_tensor(mask & (angle > 13) & (angle < IRIS_RIM_DEG - 7))
        torch.testing.assert_close(painted[1][iris].mean(0), torch.tensor([0.15, 0.35, 0.75]), atol=0.08, rtol=0)
        assert painted[1][torch.as_tensor(mask & (angle < 8))].max() < 0.1                     # the pupil
        assert painted[1][torch.as_tensor(mask & (angle > IRIS_RIM_DEG + 5))].mean() > 0.7      # the sclera


def test_the_plain_mouth_has_shaded_teeth_with_gaps_and_a_cavity_darkening_inwards(model):
    from engine.generator.plain import CAVITY, MOUTH_SHADE, TEETH, _chart_coords, plain_colors, slot_uv
    from engine.headmodel import parts

    slots = model.uv_slots(256)
    color, uv = plain_colors(model, slots, shaded=False).numpy(), slot_uv(slots)
    for rect in (parts.TEETH_UPPER, parts.TEETH_LOWER):
        m = (uv[:, 0] > rect[0]) & (uv[:, 0] < rect[2]) & (uv[:, 1] > rect[1]) & (uv[:, 1] < rect[3])
        lum = color[m].mean(1)
        assert lum.max() <= MOUTH_SHADE * max(TEETH) + 1e-6               # in the mouth's shade, never a white slab
        a, _ = _chart_coords(uv[m], rect)
        mid = np.abs(a - 0.5) < 0.25                                     # the front teeth: a gap every column
        cols = np.round(a[mid] * parts.TEETH_COLS * 4).astype(int)       # four bins a tooth
        per_bin = np.array([lum[mid][cols == c].mean() for c in np.unique(cols)])
        assert per_bin.max() - per_bin.min() > 0.05
    m = (uv[:, 0] > parts.CAVITY_UPPER[0]) & (uv[:, 0] < parts.CAVITY_UPPER[2]) & \
        (uv[:, 1] > parts.CAVITY_UPPER[1]) & (uv[:, 1] < parts.CAVITY_UPPER[3])
    _, depth = _chart_coords(uv[m], parts.CAVITY_UPPER)
    lum = color[m].mean(1)
    assert lum[depth < 0.2].mean() > 1.5 * lum[depth > 0.8].mean() and lum.max() <= max(CAVITY)


def test_surface_texels_inside_a_detected_opening_take_nothing_from_the_source(model, plain):
    """The fit says the mouth is closed, FaceMesh says it is open: the lip and skin texels that
    fall inside the detected opening get no weight, the teeth and cavity and everything outside
    keep theirs."""
    import cv2

    from engine.generator.projective import project_slots

    slots = model.uv_slots(256)
    src = portrait(plain, posed(model))
    uv, w = project_slots(model, slots, src, ProjectiveConfig())
    lmk = np.full((478, 2), np.nan)
    inner = fm.topology()["lips_inner"]
    centre = uv[torch.as_tensor(face_texels(model, slots))].mean(0).numpy() + np.array([0.0, 40.0])  # about the mouth
    angle = np.linspace(0, 2 * np.pi, len(inner), endpoint=False)
    lmk[inner] = centre + np.stack([30 * np.cos(angle), 12 * np.sin(angle)], 1)   # a wide-open mouth, detected
    _, w2 = project_slots(model, slots, Source(src.rgb, src.matte, src.params, src.K, lmk), ProjectiveConfig())
    mask = np.zeros(src.rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lmk[inner]).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    ij = uv.floor().long().clamp(0, SIZE - 1)
    surface = ~torch.as_tensor(inner_parts(model, slots))
    inside = torch.from_numpy(mask[ij[:, 1].numpy(), ij[:, 0].numpy()] > 0) & surface
    assert (inside & (w > 0)).sum() > 50
    assert w2[inside].max() == 0
    near = cv2.dilate(mask, np.ones((5, 5), np.uint8))                  # the polygon's edge pixels may go either way
    outside = torch.from_numpy(near[ij[:, 1].numpy(), ij[:, 0].numpy()] == 0) | ~surface
    torch.testing.assert_close(w2[outside], w[outside])


def test_the_inside_of_the_neck_seen_through_its_cut_takes_what_the_photo_shows_there(model, plain):
    """OpenHead's neck cut is lower at the back than at the front, so from the front the inside of
    the back wall shows below the front rim. Painted green in the rendered portrait, those slots
    come back green from the pool; without the inside view they were unseen and inpainted from
    the skin around them."""
    from engine.generator.projective import neck_inside, project_slots

    slots = model.uv_slots(256)
    inside = neck_inside(model, slots)
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    assert inside.sum() > 300
    assert float(pts[torch.as_tensor(inside), 2].max()) < float(pts[~torch.as_tensor(inside), 2].max()) - 0.05  # not the front
    green = recoloured(plain, model, inside, (0.1, 0.8, 0.2))
    p = posed(model)
    low = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, p.eyes, torch.tensor([[0.0, 0.08, -1.2]]))  # the cut in view
    src = portrait(green, low)
    _, w = project_slots(model, slots, src, ProjectiveConfig())
    seen = torch.as_tensor(inside) & (w > 0.05)
    assert seen.sum() > 100
    color, _, _ = pool(model, slots, [src])
    near = (color[seen] - torch.tensor([0.1, 0.8, 0.2])).abs().max(1).values < 0.1
    assert float(near.float().mean()) > 0.7, float(near.float().mean())    # the rest: its rim, blended with skin
    outside = ~torch.as_tensor(inside)
    assert float((color[outside] - torch.tensor([0.1, 0.8, 0.2])).abs().sum(1).lt(0.2).float().mean()) < 0.01


def test_what_a_source_sees_only_at_a_grazing_angle_takes_the_photos_colour(model, plain):
    """Slots a frontal source sees at a grazing angle (the sides of the head and the jaw's
    underside), painted green in the rendered portrait, take what the photo shows at their
    projection: green-tinted, since seen edge-on they cover few pixels. Weighted by cos² alone
    they fell below the pool's threshold and were inpainted from their skin-coloured UV
    neighbours, which drew a pale band along every jaw."""
    import dataclasses

    from engine.generator.projective import sample_warp, slot_points

    slots = model.uv_slots(256)
    p = posed(model)
    pts, nrm = slot_points(model, slots, p)
    cos = (nrm * F.normalize(-pts, dim=-1)).sum(-1)                 # the camera sits at the origin
    grazing = ((cos > 0.02) & (cos < 0.15) & ~torch.as_tensor(inner_parts(model, slots))).numpy()
    src = portrait(recoloured(plain, model, grazing, (0.1, 0.8, 0.2)), p)
    uv, w = project_slots_of(model, slots, src)
    seen = torch.as_tensor(grazing) & (w > 0)
    assert seen.sum() > 1000
    photo = sample_warp(src, uv, w)[0]
    green = lambda c: float((c[:, 1] - c[:, 0]).mean())               # noqa: E731
    assert green(photo[seen]) > 0.1                  # the photo shows them green, thin as they are
    color, _, conf = pool(model, slots, [src])
    assert bool((conf[seen] > ProjectiveConfig().min_confidence).all())
    torch.testing.assert_close(color[seen], photo[seen].clamp(0, 1), atol=1e-5, rtol=0)
    by_cos_alone = dataclasses.replace(ProjectiveConfig(), min_cos=0.1, grazing_weight=0.0)
    old, _, _ = pool(model, slots, [src], by_cos_alone)
    assert green(old[seen]) < 0.5 * green(photo[seen])              # the fill this replaces


def test_the_fill_beside_a_large_unseen_area_takes_the_seen_colour_not_black(model):
    """A head seen all in one colour but for one side, which only its mirror can fill: every
    surface slot comes back that colour. The small holes at the unseen side's edge were
    inpainted with the still-black unseen slots beside them counted as known: a dotted dark line
    along the edge of what the source saw."""
    slots = model.uv_slots(256)
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    surface = ~torch.as_tensor(inner_parts(model, slots))
    skin = torch.tensor([0.8, 0.6, 0.5])
    color = skin.expand(len(slots), 3).contiguous()
    weight = (pts[:, 0] > -0.02).float()              # the head's right side unseen
    out, _, conf = pool(model, slots, [], warps=[(color, torch.ones(len(slots)), weight)])
    edge = surface & (conf == 0) & (pts[:, 0] > -0.025)
    assert edge.sum() > 100
    assert float((out[surface] - skin).abs().max()) < 0.01, float((out[surface] - skin).abs().max())


def test_lips_no_source_showed_at_rest_take_the_seen_lips_colour(model):
    """A wide-open mouth moves the lower lip far from its rest place, so the pool counts it unseen;
    inpainted from the skin around it, it came out skin-coloured. It takes the seen lips' colour,
    with the inpainting's shading."""
    from engine.generator.plain import lip_slots

    slots = model.uv_slots(256)
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    lips = torch.as_tensor(lip_slots(model, slots))
    lower = lips & (pts[:, 1] < pts[lips, 1].mean())
    skin, blue = torch.tensor([0.8, 0.6, 0.5]), torch.tensor([0.2, 0.3, 0.7])
    color = torch.where(lips[:, None], blue, skin).expand(len(slots), 3).contiguous()
    weight = (~lower).float()                      # everything seen but the lower lip
    out, _, conf = pool(model, slots, [], warps=[(color, torch.ones(len(slots)), weight)])
    assert lower.sum() > 60 and bool((conf[lower] == 0).all())
    torch.testing.assert_close(out[lower].mean(0), blue, atol=0.03, rtol=0)
    near_lip = (out[lower] - blue).norm(dim=1) < (out[lower] - skin).norm(dim=1)
    assert bool(near_lip.all())                          # shaded, but no slot skin-coloured
    torch.testing.assert_close(out[~lower & ~lips], skin.expand(int((~lower & ~lips).sum()), 3))


def test_what_the_fit_puts_over_another_feature_is_not_the_photos_to_paint(model, plain):
    """`untrusted` and the pool's weights: FaceMesh says the mouth is open and the lips lie lower
    than the fit puts them. Lip slots over the detected opening and skin slots over the detected
    lips take nothing from the photo; lip slots over the detected lips and skin outside them do.
    A source whose fit opens the mouth vouches for nothing its jaw moved."""
    from engine.generator.plain import lip_slots
    from engine.generator.projective import untrusted

    slots = model.uv_slots(256)
    src = portrait(plain, posed(model))
    assert not untrusted(model, slots, src).any()                     # no landmarks: nothing to go by
    uv, w = project_slots_of(model, slots, src)
    lips = torch.as_tensor(lip_slots(model, slots))
    inner = torch.as_tensor(inner_parts(model, slots))
    lmk = np.full((478, 2), np.nan)
    topo = fm.topology()
    width, height = (uv[lips].max(0).values - uv[lips].min(0).values).tolist()
    centre = uv[lips].mean(0).numpy() + np.array([0.0, 0.6 * height])    # the detected mouth: lower, and open
    radii = {"lips_inner": (width / 3, height / 3), "lips_outer": (width / 2, height)}
    for name, (rx, ry) in radii.items():
        angle = np.linspace(0, 2 * np.pi, len(topo[name]), endpoint=False)
        lmk[topo[name]] = centre + np.stack([rx * np.cos(angle), ry * np.sin(angle)], 1)
    marked = Source(src.rgb, src.matte, src.params, src.K, lmk)
    bad = untrusted(model, slots, marked)
    _, w2 = project_slots_of(model, slots, marked)
    d = (uv - torch.tensor(centre)) / torch.tensor(radii["lips_inner"])
    e = (uv - torch.tensor(centre)) / torch.tensor(radii["lips_outer"])
    in_opening, in_lips = d.norm(dim=1) < 0.8, e.norm(dim=1) < 0.9
    skin_over_lips = in_lips & ~in_opening & ~lips & ~inner & (w > 0)
    lips_over_lips = in_lips & (d.norm(dim=1) > 1.2) & lips & (w > 0)
    assert skin_over_lips.sum() > 20 and lips_over_lips.sum() > 10
    assert bool(bad[skin_over_lips].all()) and float(w2[skin_over_lips].max()) == 0
    assert bool(bad[in_opening & lips].all())
    assert not bad[lips_over_lips].any()
    torch.testing.assert_close(w2[lips_over_lips], w[lips_over_lips])
    assert not bad[e.norm(dim=1) > 1.2].any() and not bad[inner].any()
    # a mouth that is open: what the jaw moved is not vouched for either, the forehead is
    wide = untrusted(model, slots, portrait(plain, posed(model, jawOpen=0.8)))
    pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
    chin = (pts[:, 1] < pts[lips, 1].min() - 0.01) & (pts[:, 1] > -0.085) & (pts[:, 2] > 0) & (pts[:, 0].abs() < 0.015)
    lower = lips & (pts[:, 1] < pts[lips, 1].mean())
    assert chin.sum() > 20 and wide[lower].float().mean() > 0.9 and wide[chin].float().mean() > 0.5
    assert not wide[(pts[:, 1] > 0.06) & (pts[:, 2] > 0)].any()


def project_slots_of(model, slots, src):
    from engine.generator.projective import project_slots

    return project_slots(model, slots, src, ProjectiveConfig())


@pytest.mark.parametrize("slant, closed", [(0.0, False), (0.05, False), (0.05, True)])
def test_neck_inside_is_what_lies_below_the_cuts_highest_point(slant, closed):
    """On an open tube whose bottom cut is level, nothing; slanted (the back lower), the slots on
    the back below the front rim; closed at the bottom, nothing."""
    from types import SimpleNamespace

    from engine.generator.projective import neck_inside

    n, rows = 16, 6
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    verts = []
    for r in range(rows):
        y = r * 0.02 - 0.05 - slant * (1 - np.cos(a)) / 2 * (1 - r / (rows - 1))   # back (a = pi) lower
        verts.append(np.stack([np.sin(a) * 0.05, y, np.cos(a) * 0.05], 1))
    verts = np.concatenate(verts)
    faces = []
    for r in range(rows - 1):
        for i in range(n):
            p, q = r * n + i, r * n + (i + 1) % n
            faces += [[p, q, p + n], [q, q + n, p + n]]
    if closed:                                        # a cap under the tube: no open boundary at the bottom
        verts = np.concatenate([verts, [[0.0, -0.2, 0.0]]])
        faces += [[len(verts) - 1, (i + 1) % n, i] for i in range(n)]
    faces = torch.tensor(faces)
    slots = SimpleNamespace(face=torch.arange(len(faces)), bary=torch.full((len(faces), 3), 1 / 3))
    model = SimpleNamespace(v_template=torch.tensor(verts, dtype=torch.float32), faces=faces)
    inside = neck_inside(model, slots)
    centre = verts[faces.numpy()].mean(1)
    if slant == 0 or closed:
        assert not inside.any()
    else:
        assert inside.any() and (centre[inside, 1] < -0.05).all() and (centre[inside, 2] < 0.03).all()
