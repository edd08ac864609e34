"""The outer layer (hair shell and bust): its rigid binding, its layout, and its fit to a source.

The fit is checked on a synthetic subject whose hair and bust are known: rendered from the
front on a green background, built from that one render with the subject's own parameters,
then rendered again at +-35 degrees of yaw and compared with the known subject there.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.animate import AnimatedAvatar
from engine.generator.api import PROJECTIVE, generate
from engine.generator.outer import fit_outer, outer_gaussians, push_pull
from engine.generator.plain import plain_avatar
from engine.generator.projective import Source
from engine.headmodel.base import HeadModel
from engine.headmodel.outer import joint_transforms
from engine.refine.data import tracker_camera
from engine.render.select import select
from engine.track.fit import intrinsics
from engine.types import JOINT_NAMES

SIZE, FOCAL = 160, 300.0
GREEN = torch.tensor([0.0, 1.0, 0.0])
HAIR, BUST = torch.tensor([0.35, 0.20, 0.10]), torch.tensor([0.20, 0.30, 0.70])


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def pose(model: HeadModel, yaw: float = 0.0, neck: float = 0.0):
    n = model.neutral()
    return dataclasses.replace(n, rotation=torch.tensor([[0.0, yaw, 0.0]]), neck=torch.tensor([[neck, 0.0, 0.0]]),
                               translation=torch.tensor([[0.0, 0.03, -0.9]]))


def test_outer_vertices_move_rigidly_as_skinning_moves_their_joint(model: HeadModel) -> None:
    """A head vertex skinned wholly to the neck lands where the neck joint's transform puts it
    (up to the pose correctives, which the rigid outer layer has none of)."""
    p = dataclasses.replace(pose(model, 0.4, 0.3), jaw=torch.tensor([[0.2, 0.0, 0.0]]))
    posed = model.vertices(p)[0]
    w = model.data.weights
    neck = np.nonzero(w[:, JOINT_NAMES.index("neck")] > 0.999)[0]
    A = joint_transforms(model, p)[0, JOINT_NAMES.index("neck")]
    rigid = model.v_template[neck] @ A[:3, :3].T + A[:3, 3]
    assert neck.size > 1000
    assert float((rigid - posed[neck]).norm(dim=-1).max()) < 2e-4           # metres
    outer = model.outer()
    ov = outer.pose(model, p)[0]
    hair = outer.joint == JOINT_NAMES.index("neck")
    assert torch.allclose(ov[hair], outer.verts[hair] @ A[:3, :3].T + A[:3, 3], atol=1e-6)
    # rigid: distances between outer vertices do not change
    i, j = torch.arange(0, len(ov), 97), torch.arange(5, len(ov), 97)[: len(torch.arange(0, len(ov), 97))]
    i = i[: len(j)]
    same = outer.joint[i] == outer.joint[j]
    d0 = (outer.verts[i] - outer.verts[j]).norm(dim=-1)[same]
    d1 = (ov[i] - ov[j]).norm(dim=-1)[same]
    assert torch.allclose(d0, d1, atol=1e-6)


def test_outer_layout_is_one_slot_per_texel_with_a_mirror(model: HeadModel) -> None:
    outer = model.outer()
    assert len(outer) == int(outer.slots.valid.sum()) == len(outer.slots.texel)
    assert torch.equal(outer.mirror[outer.mirror], torch.arange(len(outer)))
    flip = torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(outer.direction[outer.mirror], outer.direction * flip, atol=1e-5)
    # each slot's point is its quad's centre: on the template surface at its ray's template radius
    tri = outer.verts[outer.faces[outer.slots.face]]
    centre = torch.einsum("nk,nkc->nc", outer.slots.bary, tri)
    assert float((centre - outer.points(outer.radius)).norm(dim=-1).max()) < 2e-3
    assert set(outer.chart.unique().tolist()) == {0, 1}


def test_push_pull_fills_holes_within_the_known_range() -> None:
    rng = np.random.default_rng(0)
    v = rng.random((32, 40))
    w = (rng.random((32, 40)) > 0.7).astype(float)
    out = push_pull(v, w)
    assert np.isfinite(out).all()
    assert out.min() >= v[w > 0].min() - 1e-9 and out.max() <= v[w > 0].max() + 1e-9
    const = push_pull(np.full((16, 16), 0.3), (rng.random((16, 16)) > 0.9).astype(float))
    assert np.allclose(const, 0.3)


def known_subject(model: HeadModel) -> AnimatedAvatar:
    """The plain head with 2.5 cm of brown hair over the crown, back and sides down to the ears
    and a blue bust on its template."""
    outer = model.outer()
    hair = (outer.chart == 0) & (outer.direction[:, 1] > -0.25)
    radius = outer.radius + 0.025 * hair.float()
    color = torch.where(hair[:, None], HAIR, BUST).expand(len(outer), 3).contiguous()
    opacity = (hair | (outer.chart == 1)).float() * 0.99
    return AnimatedAvatar(plain_avatar(model), model).with_outer(outer_gaussians(outer, outer.points(radius), color,
                                                                                 opacity))


def render(avatar: AnimatedAvatar, params, cam) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        f = select("cpu").render(avatar.gaussians(params), cam)
    return f.rgb.clamp(0, 1), f.alpha


@pytest.fixture(scope="module")
def built(model: HeadModel):
    K = intrinsics(np.array([FOCAL]), np.array([[SIZE, SIZE]]))[0]
    cam = tracker_camera(K, (SIZE, SIZE), SIZE)
    truth = known_subject(model)
    rgb, alpha = render(truth, pose(model), cam)
    photo = ((rgb + (1 - alpha[..., None]) * GREEN) * 255 + 0.5).to(torch.uint8).numpy()
    matte = (alpha * 255 + 0.5).to(torch.uint8).numpy()
    build = generate(PROJECTIVE, model, [Source(photo, matte, pose(model), K)], torch.zeros(model.n_shape))
    return truth, build, cam, K, photo, matte


def test_the_build_covers_the_source_silhouette(built, model: HeadModel) -> None:
    truth, build, cam, *_ = built
    _, a_true = render(truth, pose(model), cam)
    _, a_build = render(build, pose(model), cam)
    t, b = a_true > 0.5, a_build > 0.5
    iou = float((t & b).sum() / (t | b).sum())
    assert iou > 0.90, iou                     # measured 0.92
    # without the outer layer, the head alone covers much less
    bald = AnimatedAvatar(dataclasses.replace(build.avatar, outer=None), model)
    _, a_bald = render(bald, pose(model), cam)
    assert float(((a_bald > 0.5) & t).sum() / (t | (a_bald > 0.5)).sum()) < iou - 0.1


@pytest.mark.parametrize("yaw", [-35.0, 35.0])
def test_turned_views_match_the_known_subject_without_background_bleed(built, model: HeadModel, yaw: float) -> None:
    truth, build, cam, *_ = built
    p = pose(model, float(np.radians(yaw)))
    rgb_t, a_t = render(truth, p, cam)
    rgb_b, a_b = render(build, p, cam)
    inside = a_t > 0.9
    err = float((rgb_b - rgb_t).abs().mean(-1)[inside].mean())
    assert err < 0.08, err                     # mean abs over the known silhouette, of 1
    g = rgb_b[inside]
    green = (g[:, 1] > g[:, 0] + 0.25) & (g[:, 1] > g[:, 2] + 0.25)
    assert float(green.float().mean()) < 0.005
    # the outline agrees too
    t, b = a_t > 0.5, a_b > 0.5
    assert float((t & b).sum() / (t | b).sum()) > 0.85


def test_the_polish_leaves_the_frozen_head_slots_alone(built, model: HeadModel) -> None:
    """`polish` with ``frozen``: the head colours a source does not vouch for stay as they were;
    the others are fitted to it."""
    from engine.generator.outer import PolishConfig, polish

    _, build, _, K, photo, matte = built
    src = Source(photo, matte, pose(model), K)
    before = build.slots.gather(build.avatar.gaussians.color)
    dull = dataclasses.replace(build.avatar, gaussians=dataclasses.replace(
        build.avatar.gaussians, color=build.avatar.gaussians.color * 0.5))      # something to fit
    start = AnimatedAvatar(dull, model)
    frozen = torch.zeros(len(build.slots), dtype=torch.bool)
    frozen[::2] = True
    out = polish(start, [src], PolishConfig(steps=6), frozen=[frozen])
    after = out.slots.gather(out.avatar.gaussians.color)
    torch.testing.assert_close(after[frozen], 0.5 * before[frozen])
    assert float((after[~frozen] - 0.5 * before[~frozen]).abs().max()) > 0.05


def test_fit_is_symmetric_where_unseen(built, model: HeadModel) -> None:
    """The back of the head (seen by no source) takes its hair volume from the sides: the
    fitted back radius is within a centimetre of the truth's 2.5 cm over the template."""
    _, _, _, K, photo, matte = built
    uvg = fit_outer(model, [Source(photo, matte, pose(model), K)], torch.zeros(model.n_shape))
    outer = model.outer()
    local = outer.slots.gather(uvg.local_position)
    from engine.binding import triangle_frames

    fr = triangle_frames(outer.verts, outer.faces)
    f = outer.slots.face
    pts = torch.einsum("nij,nj->ni", fr.rotation[f], local * fr.scale[f][:, None]) + fr.centroid[f]
    excess = (pts - outer.origin).norm(dim=-1) - outer.radius
    back = (outer.chart == 0) & (outer.direction[:, 2] < -0.8) & (outer.direction[:, 1] > 0.0)
    assert back.sum() > 100
    assert abs(float(excess[back].median()) - 0.025) < 0.01


def test_any_head_model_gets_an_outer_layer_that_hugs_it(openhead) -> None:
    """The same construction on another head model (here OpenHead scaled by 1.15 and moved, as
    FLAME's template sits elsewhere): the hair shell's template encloses the head mesh."""
    d = openhead
    moved = dataclasses.replace(d, name="other-head", v_template=(d.v_template * 1.15 + np.array([0.0, 0.03, 0.02]))
                                .astype(np.float32))
    other = HeadModel(moved)
    outer = other.outer()
    hair = outer.chart == 0
    c = outer.origin[hair][0]
    v = other.v_template - c
    r = v.norm(dim=-1)
    dirs = v / r[:, None]
    # every head vertex in the shell's directions lies inside the shell: nearest ray's radius >= its own
    near = (dirs @ outer.direction[hair].T).argmax(1)
    cos = (dirs * outer.direction[hair][near]).sum(-1)
    covered = cos > 0.9995                                             # within ~1.8 degrees of a ray
    assert covered.sum() > 2000
    assert float((outer.radius[hair][near] - r)[covered].min()) > -0.004
    # the bust hangs below the head mesh, round the neck joint's vertical axis
    bust = outer.chart == 1
    assert float(outer.origin[bust, 1].max()) < float(other.v_template[:, 1].min()) + 0.07
    assert torch.allclose(outer.origin[bust, 2], other.joints_rest()[JOINT_NAMES.index("neck"), 2].expand(int(bust.sum())))


def test_the_refiner_trains_the_outer_layer(model: HeadModel) -> None:
    """Started from the known subject with a grey outer layer, a few refiner steps on renders of
    the known subject move the outer layer's colours towards the truth's."""
    from engine.refine.config import load_refine_config
    from engine.refine.data import VideoData
    from engine.refine.refiner import refine

    truth = known_subject(model)
    size, n = 64, 4
    K = intrinsics(np.array([FOCAL * size / SIZE]), np.array([[size, size]]))[0]
    cam = tracker_camera(K, (size, size), size)
    params = [pose(model, 0.25 * (i - 1.5)) for i in range(n)]
    frames = [render(truth, p, cam) for p in params]
    imgs = np.stack([(f[0] * 255 + 0.5).to(torch.uint8).numpy() for f in frames])
    mattes = np.stack([f[1].numpy() for f in frames]).astype(np.float32)
    stacked = type(params[0])(*(torch.cat([getattr(p, f.name) for p in params]) for f in dataclasses.fields(params[0])))
    data = VideoData("outer", imgs, mattes, stacked, [cam] * n, np.ones(n, bool), first_test=3)
    start = truth.avatar
    grey = dataclasses.replace(start.outer, color=torch.full_like(start.outer.color, 0.5) * start.outer.valid)
    start = dataclasses.replace(start, outer=grey)
    cfg = load_refine_config("default", iterations=60, aspect_start=0, scale_freeze=0, checkpoint_every=0,
                             preview_every=0, resolution=size, random_background=False)
    out = refine(start, model, data, cfg)
    outer = model.outer()
    want = outer.slots.gather(truth.avatar.outer.color)
    seen = outer.slots.gather(truth.avatar.outer.opacity)[:, 0] > 0      # the opaque hair and bust
    before = (outer.slots.gather(grey.color) - want).abs()[seen].mean()
    after = (outer.slots.gather(out.outer.color) - want).abs()[seen].mean()
    assert out.outer is not None and float(after) < 0.8 * float(before), (float(before), float(after))


def test_rigid_slot_frames_are_the_frames_of_the_posed_layer(model: HeadModel) -> None:
    from engine.binding import slot_frames

    outer = model.outer()
    p = dataclasses.replace(pose(model, 0.5, 0.3), rotation=torch.tensor([[0.1, 0.5, 0.2]]))
    fast, slow = outer.slot_frames(model, p), slot_frames(outer.slots, outer.pose(model, p)[0], outer.faces)
    assert torch.allclose(fast.centroid, slow.centroid, atol=1e-6)
    assert torch.allclose(fast.rotation, slow.rotation, atol=1e-3)
    assert torch.allclose(fast.scale, slow.scale, atol=1e-6)
    same = torch.minimum((fast.quat - slow.quat).abs().amax(1), (fast.quat + slow.quat).abs().amax(1))
    assert float(same.max()) < 1e-3


def test_the_posed_avatar_is_the_same_with_and_without_a_gradient(model: HeadModel) -> None:
    """`AnimatedAvatar.gaussians` poses the outer layer by its rigid slot frames when the pose
    needs a gradient (the photometric alignment) and natively when it does not (the display):
    both give the same Gaussians, and the gradient reaches the pose and the jaw."""
    truth = known_subject(model)
    p = dataclasses.replace(pose(model, 0.3, 0.2), jaw=torch.tensor([[0.15, 0.0, 0.0]]))
    with torch.no_grad():
        shown = truth.gaussians(p)
    var = dataclasses.replace(p, translation=p.translation.clone().requires_grad_(True),
                              jaw=p.jaw.clone().requires_grad_(True))
    g = truth.gaussians(var)
    assert g.means.requires_grad and len(g.means) == len(shown.means) > len(truth.slots)
    assert float((g.means.detach() - shown.means).abs().max()) < 1e-5                          # metres
    q = g.quats.detach()
    same = torch.minimum((q - shown.quats).abs().amax(1), (q + shown.quats).abs().amax(1))
    assert float(same.max()) < 1e-3 and torch.allclose(g.scales.detach(), shown.scales, atol=1e-6)
    g.means[:, 1].sum().backward()
    assert float(var.translation.grad[0, 1]) == pytest.approx(len(g.means), rel=1e-4)     # d(sum y)/d(t_y)
    assert float(var.jaw.grad.abs().sum()) > 0


def test_alignment_sees_the_outer_layer(model: HeadModel) -> None:
    """Photometric alignment of an avatar with an outer layer (its render includes the layer, posed
    with the parameters being aligned): a frame of the known subject tracked 8 mm off sideways is
    brought back to within 2 mm."""
    from engine.refine.align import AlignConfig, align_frames
    from engine.refine.data import VideoData

    truth = known_subject(model)
    size = 64
    K = intrinsics(np.array([FOCAL * size / SIZE]), np.array([[size, size]]))[0]
    cam = tracker_camera(K, (size, size), size)
    p = pose(model, 0.2)
    rgb, alpha = render(truth, p, cam)
    off = dataclasses.replace(p, translation=p.translation + torch.tensor([[0.008, 0.0, 0.0]]))
    data = VideoData("one", (rgb[None] * 255 + 0.5).to(torch.uint8).numpy(), alpha[None].numpy().astype(np.float32),
                     off, [cam], np.ones(1, bool), first_test=1)
    params = align_frames(truth.avatar, model, data, [0], AlignConfig(iterations=40, resolution=size))
    assert float((params.translation - p.translation).abs()[0, 0]) < 0.002
