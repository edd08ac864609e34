"""OpenHead: counts, landmark identity, smplx compatibility, rig behaviour, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from engine.binding import rasterize_uv
from engine.expressions import apply_expressions
from engine.headmodel import facemesh as fm
from engine.headmodel.base import HeadModel, HeadModelData, HeadModelError
from engine.types import HeadParams


@pytest.fixture(scope="module")
def model(openhead) -> HeadModel:
    return HeadModel(openhead)


def posed(model: HeadModel, **weights) -> np.ndarray:
    p = apply_expressions(model.neutral(), model, weights)
    return model.vertices(p)[0].numpy()


def test_counts_and_uv_texels(openhead):
    assert 4000 <= len(openhead.v_template) <= 8000
    assert openhead.n_expr >= 24
    slots = rasterize_uv(openhead.uvs, openhead.uv_faces, 256)
    assert len(slots) >= 55_000
    assert openhead.uvs.min() >= 0 and openhead.uvs.max() <= 1


def test_face_has_the_highest_texel_density(openhead):
    """Texels per square metre of the face (landmark triangles) exceed the rest of the head's."""
    v, f, uv, uf = openhead.v_template, openhead.faces, openhead.uvs, openhead.uv_faces
    area3 = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    t = uv[uf]
    area2 = 0.5 * np.abs((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
    centroid = v[f].mean(1)
    face = (centroid[:, 2] > 0.0) & (np.abs(centroid[:, 1]) < 0.07)
    density = lambda m: area2[m].sum() / area3[m].sum()  # noqa: E731
    assert density(face) > 1.5 * density(~face)


def test_landmark_i_is_vertex_i(openhead, model):
    verts = model.v_template[None]
    lm = model.landmarks(verts)[0]
    assert lm.shape == (478, 3)
    assert_close(lm[: fm.N_FACE], model.v_template[: fm.N_FACE], atol=1e-6, rtol=0)


def test_iris_landmarks_lie_on_the_eyeballs(openhead, model):
    lm = model.landmarks(model.v_template[None])[0].numpy()
    joints = model.joints_rest().numpy()
    for centre_idx, joint in ((468, 4), (473, 3)):        # FaceMesh 468 = right iris, eye_R is joint 4
        d = np.linalg.norm(lm[centre_idx : centre_idx + 5] - joints[joint], axis=1)
        assert_close(d, np.full(5, d[0]), atol=3e-4, rtol=0)
        assert 0.010 < d[0] < 0.015


def test_weights_and_regressor_are_normalised(openhead):
    assert_close(openhead.weights.sum(1), np.ones(len(openhead.v_template), np.float32), atol=1e-5, rtol=0)
    assert_close(openhead.J_regressor.sum(1), np.ones(5, np.float32), atol=1e-5, rtol=0)


def test_joints_are_where_anatomy_puts_them(model):
    j = model.joints_rest().numpy()
    root, neck, jaw, eye_l, eye_r = j
    assert eye_l[0] > 0.02 and eye_r[0] < -0.02 and abs(eye_l[0] + eye_r[0]) < 1e-4   # subject's left is +x
    assert root[1] < neck[1] < jaw[1] < eye_l[1]
    assert abs(jaw[0]) < 1e-4 and jaw[2] < eye_l[2]


def test_loads_through_smplx_flame_with_the_same_vertices(openhead, model, tmp_path):
    from engine.headmodel.build import export_smplx, smplx_flame, smplx_max_error

    export_smplx(openhead, tmp_path)
    assert smplx_max_error(openhead, tmp_path) < 1e-5
    out = smplx_flame(openhead, tmp_path)()
    lm = model.landmarks(model.vertices(model.neutral()))
    assert_close(out.joints[:, 5:], lm, atol=1e-5, rtol=0)   # smplx appends the landmarks to the joints


def test_jaw_opens_the_mouth_without_moving_the_upper_lip(model):
    rest, open_ = posed(model), posed(model, jawOpen=1.0)
    upper, lower, *_ = fm.split_loop(fm.topology()["lips_inner"], rest[: fm.N_FACE])
    x_corner = np.abs(rest[upper, 0]).max()
    middle = [i for i in upper if abs(rest[i, 0]) < x_corner - 0.009]   # the corners stretch, by design
    d_up = np.linalg.norm(open_[middle] - rest[middle], axis=1)
    drop = rest[lower[1:-1], 1] - open_[lower[1:-1], 1]
    assert d_up.max() < 0.002
    assert drop[len(drop) // 2] > 0.01        # the middle of the lower lip drops by more than 1 cm
    assert open_[fm.CHIN, 1] < rest[fm.CHIN, 1] - 0.015


def test_jaw_opening_does_not_tear_or_spike_the_surface(openhead, model):
    rest, open_ = posed(model), posed(model, jawOpen=1.0)
    f = openhead.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    stretch = np.linalg.norm(open_[e[:, 0]] - open_[e[:, 1]], axis=1) / np.maximum(
        np.linalg.norm(rest[e[:, 0]] - rest[e[:, 1]], axis=1), 1e-9)
    assert np.percentile(stretch, 99.9) < 3.0


# (expression, landmark that must move, direction it must move in, landmark that must stay)
EXPECTED_MOTION = [
    ("eyeBlink_L", 386, (0, -1, 0), 159), ("eyeBlink_R", 159, (0, -1, 0), 386),
    ("eyeWide_L", 386, (0, 1, 0), 159), ("eyeWide_R", 159, (0, 1, 0), 386),
    ("eyeSquint_L", 374, (0, 1, 0), 145), ("eyeSquint_R", 145, (0, 1, 0), 374),
    ("browInnerUp", 336, (0, 1, 0), 152), ("browDown_L", 334, (0, -1, 0), 105),
    ("browDown_R", 105, (0, -1, 0), 334), ("browOuterUp_L", 300, (0, 1, 0), 70),
    ("browOuterUp_R", 70, (0, 1, 0), 300), ("mouthSmile_L", 291, (0, 1, 0), 61),
    ("mouthSmile_R", 61, (0, 1, 0), 291), ("mouthFrown_L", 291, (0, -1, 0), 61),
    ("mouthFrown_R", 61, (0, -1, 0), 291), ("mouthPucker", 291, (-1, 0, 0), 10),
    ("mouthFunnel", 0, (0, 0, 1), 10), ("mouthLeft", 0, (1, 0, 0), 10), ("mouthRight", 0, (-1, 0, 0), 10),
    ("mouthClose", 14, (0, 1, 0), 10), ("cheekPuff", 425, (1, 0, 0), 10), ("noseSneer_L", 358, (0, 1, 0), 129),
    ("noseSneer_R", 129, (0, 1, 0), 358), ("mouthUpperUp_L", 267, (0, 1, 0), 37),
    ("mouthLowerDown_L", 314, (0, -1, 0), 84), ("mouthStretch_L", 291, (1, 0, 0), 61),
    ("mouthShrugLower", 17, (0, 1, 0), 0), ("mouthRollLower", 17, (0, 0, -1), 0),
    ("jawForward", 152, (0, 0, 1), 10),
]


@pytest.mark.parametrize("name,moves,direction,stays", EXPECTED_MOTION, ids=[m[0] for m in EXPECTED_MOTION])
def test_expression_moves_what_its_name_says(model, name, moves, direction, stays):
    rest, expr = posed(model), posed(model, **{name: 1.0})
    d = expr - rest
    assert float(d[moves] @ np.asarray(direction, float)) > 0.0015, f"{name} moves landmark {moves} by {d[moves]}"
    assert np.linalg.norm(d[stays]) < 0.4 * np.linalg.norm(d[moves])


def test_every_expression_is_named_and_does_something(openhead):
    mags = np.linalg.norm(openhead.exprdirs, axis=1).max(0)
    assert all(openhead.expr_names) and len(set(openhead.expr_names)) == openhead.n_expr
    assert (mags > 0.001).all(), {n: m for n, m in zip(openhead.expr_names, mags) if m <= 0.001}


def test_expressions_leave_eyeballs_and_upper_teeth_alone(openhead):
    rigid = (openhead.weights[:, 3] == 1) | (openhead.weights[:, 4] == 1)
    jaw_free = (openhead.weights[:, 1] == 1) & (openhead.weights[:, 2] == 0)
    names = [i for i, n in enumerate(openhead.expr_names) if not n.startswith("jaw")]
    assert np.abs(openhead.exprdirs[rigid][:, :, names]).max() == 0


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_a_blink_slides_the_lid_over_the_eyeball_not_through_it(openhead, model, weight):
    """No skin vertex that starts outside the sphere EYE_LID_GAP round an eyeball ends inside it
    when the lids close: the closed lid would show the eye through it (before, a closed lid's
    vertices lay up to 0.93 mm inside the eyeball)."""
    from engine.headmodel.parts import EYE_LID_GAP, EYE_RADIUS

    rest = posed(model)
    closed = posed(model, eyeBlink_L=weight, eyeBlink_R=weight)
    skin = openhead.weights[:, 3:].max(1) < 0.5
    for k in (3, 4):
        ball = rest[openhead.weights[:, k] > 0.5]
        A = np.concatenate([2 * ball, np.ones((len(ball), 1))], 1)           # least-squares sphere
        sol = np.linalg.lstsq(A, (ball ** 2).sum(1), rcond=None)[0]
        centre = sol[:3]
        assert np.sqrt(sol[3] + centre @ centre) == pytest.approx(EYE_RADIUS, abs=1e-5)
        clear = EYE_RADIUS + EYE_LID_GAP
        r0 = np.linalg.norm(rest[skin] - centre, axis=1)
        r1 = np.linalg.norm(closed[skin] - centre, axis=1)
        moved = np.linalg.norm(closed[skin] - rest[skin], axis=1) > 1e-4
        outside = r0 >= clear
        assert (moved & outside).sum() > 20
        # closed, clear of it; half-closed (the lid moves in a straight line), still clear of the eyeball
        assert r1[outside].min() >= (clear if weight == 1.0 else EYE_RADIUS) - 1e-6


def test_identity_basis_is_smooth_and_moves_the_joints(openhead, model):
    shape = torch.zeros(openhead.n_shape)
    shape[0] = 1.0                                     # widen by 5 %
    j0, j1 = model.joints_rest(), model.joints_rest(shape)
    assert j1[3, 0] > j0[3, 0] + 0.001                 # the left eye moves outwards with the lids
    v = openhead.v_template + openhead.shapedirs[..., 5]
    f = openhead.faces
    n0 = np.cross(openhead.v_template[f[:, 1]] - openhead.v_template[f[:, 0]], openhead.v_template[f[:, 2]] - openhead.v_template[f[:, 0]])
    n1 = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flipped = (np.sum(n0 * n1, axis=1) < 0).mean()
    assert flipped < 0.001


def test_build_is_deterministic(openhead):
    from engine.headmodel.build import build_openhead

    assert build_openhead().digest() == openhead.digest()


def test_save_load_round_trip_and_missing_key(openhead, tmp_path):
    path = tmp_path / "m.npz"
    openhead.save(path)
    back = HeadModelData.load(path)
    assert back.digest() == openhead.digest()
    z = dict(np.load(path))
    del z["weights"]
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(HeadModelError, match=r"bad\.npz.*weights"):
        HeadModelData.load(tmp_path / "bad.npz")


def test_openhead_declares_its_charts_and_its_counts_are_its_versions(openhead):
    """The generators' OpenHead-only paths key on the data's ``charts``, not on the name; the
    name changes whenever the component counts do (an old avatar then fails by name)."""
    from engine.headmodel.build import COUNTS, OPENHEAD_VERSION

    assert openhead.charts == "openhead" and openhead.name == f"openhead-{OPENHEAD_VERSION}"
    assert (openhead.shapedirs.shape[2], openhead.exprdirs.shape[2]) == COUNTS[OPENHEAD_VERSION]


def test_the_inner_parts_follow_the_charts_capability_not_the_name(openhead, tmp_path):
    import dataclasses

    from engine.animate import AnimatedAvatar
    from engine.generator.plain import inner_parts, plain_avatar

    renamed = HeadModel(dataclasses.replace(openhead, name="my-head"))
    slots = AnimatedAvatar(plain_avatar(renamed), renamed).slots
    inner = inner_parts(renamed, slots)
    assert 2_000 < inner.sum() < len(slots) // 4                    # eyeballs, teeth, cavity
    plain = HeadModel(dataclasses.replace(openhead, name="openhead-1", charts=""))
    assert not inner_parts(plain, slots).any()
    openhead.save(tmp_path / "m.npz")                              # the capability survives a save
    assert HeadModelData.load(tmp_path / "m.npz").charts == "openhead"


def test_a_head_model_file_loads_through_the_registry_and_an_unknown_kind_is_named(openhead, tmp_path):
    from engine.headmodel.openhead import LOADERS, load_head_model

    openhead.save(tmp_path / "mine.npz")
    loaded = load_head_model(tmp_path / "mine.npz")
    assert loaded.data.digest() == openhead.digest() and loaded.charts == "openhead"
    (tmp_path / "head.obj").write_text("v 0 0 0\n")
    with pytest.raises(HeadModelError, match=r"head.obj: not a head model this program reads \(head model file: "
                                             r"\.npz; FLAME: a folder, \.pkl\)"):
        load_head_model(tmp_path / "head.obj")
    assert [x.name for x in LOADERS] == ["head model file", "FLAME"]
