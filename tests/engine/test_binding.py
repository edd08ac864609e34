"""engine.binding: UV rasterisation, triangle frames, binding formula, rigidity, surface init."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from engine.binding import UVSlots, bind, rasterize_uv, surface_init, texel_footprint, triangle_frames
from engine.rotations import quat_to_rotmat
from engine.types import UVGaussians

# A unit UV square split along its diagonal (0,0)-(1,1): face 0 is below-right (u >= v).
SQUARE_UVS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
SQUARE_UV_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def _quad_mesh(seed: int = 0, size: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """A small non-planar quad (two triangles) whose faces follow SQUARE_UV_FACES."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]) * size
    verts = verts + torch.randn(4, 3, generator=g) * size * 0.15
    return verts, torch.tensor(SQUARE_UV_FACES, dtype=torch.int64)


def _random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, generator=g)
    return quat_to_rotmat(q / q.norm())


def _random_uvg(slots: UVSlots, seed: int) -> UVGaussians:
    """Random maps on the valid texels (zeros elsewhere), colour outside [0, 1] to exercise the clamp."""
    g = torch.Generator().manual_seed(seed)
    n = len(slots)
    r = lambda c, s=1.0: slots.scatter(torch.randn(n, c, generator=g) * s)  # noqa: E731
    color = slots.scatter(torch.rand(n, 3, generator=g) * 2.0 - 0.5)
    return UVGaussians(r(3, 0.3), r(4), r(3, 0.5), color, r(1, 2.0), slots.valid)


def _frame_formula(v0, v1, v2):
    """Centroid, rotation (columns: edge dir, normal, edge x normal) and mean edge length, by hand."""
    e = (v1 - v0) / (v1 - v0).norm()
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    n = n / n.norm()
    R = torch.stack([e, n, torch.linalg.cross(e, n)], dim=1)
    s = ((v1 - v0).norm() + (v2 - v1).norm() + (v0 - v2).norm()) / 3
    return (v0 + v1 + v2) / 3, R, s


# --- triangle_frames -------------------------------------------------------------------------

def test_triangle_frames_on_hand_made_triangle() -> None:
    verts = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    fr = triangle_frames(verts, torch.tensor([[0, 1, 2]]))
    assert_close(fr.centroid, torch.tensor([[2 / 3, 1 / 3, 0.0]]))
    # columns: edge v0->v1 = +x, normal = +z, edge x normal = x cross z = -y
    assert_close(fr.rotation, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]]))
    assert_close(fr.scale, torch.tensor([(2.0 + math.sqrt(5.0) + 1.0) / 3]))


def test_triangle_frames_are_proper_rotations_matching_formula() -> None:
    g = torch.Generator().manual_seed(1)
    verts = torch.randn(10, 3, generator=g, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 5]])
    fr = triangle_frames(verts, faces)
    for f, (a, b, c) in enumerate(faces.tolist()):
        cen, R, s = _frame_formula(verts[a], verts[b], verts[c])
        assert_close(fr.centroid[f], cen)
        assert_close(fr.rotation[f], R)
        assert_close(fr.scale[f], s)
    assert_close(fr.rotation.transpose(1, 2) @ fr.rotation, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    assert_close(torch.linalg.det(fr.rotation), torch.ones(4, dtype=torch.float64))


# --- rasterize_uv / UVSlots ---------------------------------------------------------------------

@pytest.mark.parametrize("R", [4, 8, 13])
def test_rasterize_unit_square_covers_every_texel_once(R: int) -> None:
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, R)
    assert len(slots) == R * R
    assert_close(slots.texel, torch.arange(R * R), rtol=0, atol=0)
    assert_close(slots.valid, torch.ones(R, R, dtype=torch.bool), rtol=0, atol=0)
    assert_close(slots.bary.sum(1), torch.ones(R * R))
    assert bool((slots.bary >= 0).all())


def test_rasterize_matches_a_brute_force_test_of_every_texel_against_every_triangle() -> None:
    """Random overlapping triangles (some outside the page, one degenerate): each texel centre
    goes to the lowest-index triangle that contains it, with that triangle's barycentrics."""
    rng = np.random.default_rng(3)
    R = 24
    uvs = rng.uniform(-0.2, 1.2, (60, 2))
    uvs[59] = uvs[58]                                            # face 19 is degenerate
    faces = np.arange(60).reshape(20, 3)
    slots = rasterize_uv(uvs, faces, R)
    want_face = np.full(R * R, -1)
    want_bary = np.zeros((R * R, 3))
    for t in range(R * R):
        p = np.array([(t % R + 0.5) / R, 1 - (t // R + 0.5) / R])
        for f, (a, b, c) in enumerate(uvs[faces]):
            m = np.stack([b - a, c - a], 1)
            if abs(np.linalg.det(m)) < 1e-9:
                continue
            l12 = np.linalg.solve(m, p - a)
            bary = np.array([1 - l12.sum(), *l12])
            if (bary >= -1e-9).all():
                want_face[t], want_bary[t] = f, bary
                break
    texel = np.nonzero(want_face >= 0)[0]
    assert 0 < len(texel) < R * R
    assert np.array_equal(slots.texel.numpy(), texel) and np.array_equal(slots.face.numpy(), want_face[texel])
    assert_close(slots.bary, torch.from_numpy(want_bary[texel]).float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("R", [4, 8, 13])
def test_rasterize_barycentrics_reproduce_texel_centres(R: int) -> None:
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, R)
    i, j = slots.texel // R, slots.texel % R
    want = torch.stack([(j + 0.5) / R, 1 - (i + 0.5) / R], 1).float()
    corners = torch.tensor(SQUARE_UVS, dtype=torch.float32)[torch.tensor(SQUARE_UV_FACES)[slots.face]]  # [N, 3, 2]
    got = torch.einsum("nk,nkc->nc", slots.bary, corners)
    assert_close(got, want, atol=1e-6, rtol=0)
    # texels on the shared diagonal go to the lower face index: face 0 holds u >= v
    # (u < v  <=>  j + 1/2 < R - i - 1/2  <=>  i + j < R - 1, in exact integers)
    assert_close(slots.face, (i + j < R - 1).long(), rtol=0, atol=0)


def test_rasterize_single_triangle_covers_texels_under_it() -> None:
    R = 8
    slots = rasterize_uv(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]]), R)
    i, j = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    # centre (u, v) = ((j+.5)/R, 1-(i+.5)/R) is inside u + v <= 1  <=>  j <= i
    assert_close(slots.valid, j <= i, rtol=0, atol=0)
    assert len(slots) == R * (R + 1) // 2
    assert_close(slots.face, torch.zeros(len(slots), dtype=torch.int64), rtol=0, atol=0)


def test_rasterize_skips_degenerate_uv_triangle() -> None:
    uvs = np.array([[0.1, 0.1], [0.9, 0.9], [0.5, 0.5], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    slots = rasterize_uv(uvs, np.array([[0, 1, 2], [3, 4, 5]]), 8)
    assert len(slots) == 36
    assert_close(slots.face, torch.ones(36, dtype=torch.int64), rtol=0, atol=0)


def test_uvslots_gather_scatter_round_trip() -> None:
    R = 8
    slots = rasterize_uv(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]]), R)
    g = torch.Generator().manual_seed(2)
    uv_map = torch.randn(5, R, R, generator=g)
    values = slots.gather(uv_map)
    assert values.shape == (len(slots), 5)
    rows, cols = slots.texel // R, slots.texel % R
    assert_close(values, uv_map[:, rows, cols].T, rtol=0, atol=0)
    assert_close(slots.scatter(values), uv_map * slots.valid, rtol=0, atol=0)
    vals = torch.randn(len(slots), 2, generator=g)
    assert_close(slots.gather(slots.scatter(vals)), vals, rtol=0, atol=0)


def test_uvslots_neighbours_are_the_adjacent_texels_once_each() -> None:
    R = 8
    slots = rasterize_uv(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]]), R)
    pairs = slots.neighbours()
    rows, cols = slots.texel // R, slots.texel % R
    a, b = pairs[:, 0], pairs[:, 1]
    # every pair is one texel right or one texel down of its first, never the same pair twice
    step = (rows[b] - rows[a]) * R + (cols[b] - cols[a])
    assert set(step.tolist()) == {1, R}
    assert len(set(map(tuple, pairs.tolist()))) == len(pairs)
    # the staircase j <= i: row i has i + 1 texels, so i right-pairs; each of its i + 1 texels
    # has one below it (row i + 1 is longer)
    assert len(pairs) == sum(i for i in range(R)) + sum(i + 1 for i in range(R - 1))


def test_uvslots_neighbours_with_faces_keep_apart_islands_that_share_no_vertex() -> None:
    # two UV triangles touching along u = 0.5 in the raster; on the mesh the first pair of faces
    # shares vertex 0, the second pair shares nothing
    uvs = np.array([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.5, 0.0], [1.0, 0.0], [0.5, 1.0]])
    uv_faces = np.array([[0, 1, 2], [3, 4, 5]])
    slots = rasterize_uv(uvs, uv_faces, 8)
    across = lambda p: int((slots.face[p[:, 0]] != slots.face[p[:, 1]]).sum())  # noqa: E731
    assert across(slots.neighbours()) > 0
    touching = torch.tensor([[0, 1, 2], [0, 4, 5]])
    apart = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert across(slots.neighbours(touching)) == across(slots.neighbours())
    assert across(slots.neighbours(apart)) == 0
    within = lambda p: len(p) - across(p)  # noqa: E731
    assert within(slots.neighbours(apart)) == within(slots.neighbours())


# --- bind --------------------------------------------------------------------------------------

def test_bind_single_triangle_matches_binding_formula() -> None:
    uvs = np.array([[0.1, 0.1], [0.9, 0.15], [0.2, 0.9]])
    slots = rasterize_uv(uvs, np.array([[0, 1, 2]]), 8)
    assert len(slots) > 10
    uvg = _random_uvg(slots, seed=3)
    verts = torch.tensor([[0.01, 0.02, 0.03], [0.05, 0.01, 0.02], [0.02, 0.06, 0.04]])
    faces = torch.tensor([[0, 1, 2]])
    gs = bind(uvg, slots, verts, faces)
    assert len(gs) == len(slots)

    c, Rf, s = _frame_formula(*verts)
    rows, cols = slots.texel // 8, slots.texel % 8
    local = uvg.local_position[:, rows, cols].T
    q_local = uvg.rotation[:, rows, cols].T
    assert_close(gs.means, (local @ Rf.T) * s + c)
    # q = q_f ⊗ q_local  <=>  R(q) = R_f · R(q_local)
    assert_close(quat_to_rotmat(gs.quats), Rf @ quat_to_rotmat(q_local), atol=1e-6, rtol=0)
    assert_close(gs.quats.norm(dim=-1), torch.ones(len(gs)))
    assert_close(gs.scales, torch.exp(uvg.log_scale[:, rows, cols].T) * s)
    assert_close(gs.opacities, 1 / (1 + torch.exp(-uvg.opacity[0, rows, cols])))
    assert_close(gs.colors, uvg.color[:, rows, cols].T.clamp(0, 1), rtol=0, atol=0)


def test_bind_rejects_resolution_mismatch() -> None:
    slots8 = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, 8)
    slots4 = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, 4)
    verts, faces = _quad_mesh()
    with pytest.raises(ValueError, match="UV maps are 4² but the slots are 8²"):
        bind(_random_uvg(slots4, 0), slots8, verts, faces)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bind_rigid_motion_moves_every_gaussian_rigidly(seed: int) -> None:
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, 8)
    uvg = _random_uvg(slots, seed=10 + seed)
    verts, faces = _quad_mesh(seed)
    Q = _random_rotation(20 + seed)
    t = torch.tensor([0.1, -0.2, 0.3]) * (seed + 1)
    a = bind(uvg, slots, verts, faces)
    b = bind(uvg, slots, verts @ Q.T + t, faces)
    assert len(a) == len(b) == 64
    assert_close(b.means, a.means @ Q.T + t, atol=2e-6, rtol=0)
    assert_close(quat_to_rotmat(b.quats), Q @ quat_to_rotmat(a.quats), atol=2e-6, rtol=0)
    assert_close(b.scales, a.scales, atol=1e-6, rtol=1e-5)
    assert_close(b.opacities, a.opacities, rtol=0, atol=0)
    assert_close(b.colors, a.colors, rtol=0, atol=0)


def test_bind_non_rigid_deformation_keeps_the_count() -> None:
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, 8)
    uvg = _random_uvg(slots, seed=4)
    verts, faces = _quad_mesh(5)
    g = torch.Generator().manual_seed(6)
    for k in range(3):
        warped = verts * torch.tensor([1.0 + 0.5 * k, 1.0, 0.3]) + torch.randn(4, 3, generator=g) * 0.02
        gs = bind(uvg, slots, warped, faces)
        assert (len(gs), gs.means.shape[0], gs.quats.shape[0]) == (64, 64, 64)
        assert int(slots.valid.sum()) == len(gs)


# --- surface_init / texel_footprint --------------------------------------------------------------

@pytest.mark.parametrize("R", [8, 16])
def test_surface_init_puts_every_gaussian_on_its_surface_point(R: int) -> None:
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, R)
    verts, faces = _quad_mesh(7)
    colors = torch.rand(len(slots), 3, generator=torch.Generator().manual_seed(8))
    uvg = surface_init(slots, verts, faces, colors, opacity=0.9, thickness=0.25)
    gs = bind(uvg, slots, verts, faces)
    points = torch.einsum("nk,nkc->nc", slots.bary, verts[faces[slots.face]])
    assert_close(gs.means, points, atol=1e-6, rtol=0)
    assert_close(gs.colors, colors, rtol=0, atol=0)
    assert_close(gs.opacities, torch.full((len(slots),), 0.9))
    # identity local rotation: each Gaussian has its triangle's frame
    fr = triangle_frames(verts, faces)
    assert_close(quat_to_rotmat(gs.quats), fr.rotation[slots.face], atol=1e-6, rtol=0)
    # flat along the normal (second frame axis): thickness x the width
    assert_close(gs.scales[:, 1], gs.scales[:, 0] * 0.25)
    assert_close(gs.scales[:, 2], gs.scales[:, 0])
    assert_close(gs.scales[:, 0], texel_footprint(slots, points))


def test_texel_footprint_is_neighbour_spacing_on_a_flat_square() -> None:
    R, side = 8, 0.01
    slots = rasterize_uv(SQUARE_UVS, SQUARE_UV_FACES, R)
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]) * side
    points = torch.einsum("nk,nkc->nc", slots.bary, verts[torch.tensor(SQUARE_UV_FACES)[slots.face]])
    assert_close(texel_footprint(slots, points), torch.full((R * R,), side / R))


def test_texel_footprint_isolated_texel_falls_back_to_one_millimetre() -> None:
    # one tiny triangle around the centre of texel (1, 1) of a 4 x 4 raster: no neighbours
    uvs = np.array([[0.35, 0.60], [0.42, 0.60], [0.35, 0.67]])
    slots = rasterize_uv(uvs, np.array([[0, 1, 2]]), 4)
    assert slots.texel.tolist() == [5]
    assert_close(texel_footprint(slots, torch.zeros(1, 3)), torch.tensor([0.001]))


def test_place_passes_gradients_to_frames_that_need_them() -> None:
    from engine.binding import SlotFrames, place

    n = 50
    qf = torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    c = torch.randn(n, 3, requires_grad=True)
    frames = SlotFrames(quat_to_rotmat(qf), qf, c, torch.rand(n) + 0.1)
    out = place(frames, torch.randn(n, 3), torch.randn(n, 4), torch.randn(n, 3), torch.rand(n, 3), torch.randn(n, 1))
    up = torch.randn(n, 3)
    (g,) = torch.autograd.grad(out.means, c, up)
    assert_close(g, up)                                 # x = R·x_local·s + c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_pose_slots_equals_the_torch_placement(openhead, dtype) -> None:
    """The native display path gives the torch path's means, quaternions and scales on a posed
    OpenHead mesh (random local attributes, a turned head, every quaternion branch of Shepperd's
    method exercised by the mesh's many triangle orientations)."""
    from engine.binding import Activated, place_activated, pose_slots, slot_frames
    from engine.headmodel.base import HeadModel
    from engine.native import available

    if not available():
        pytest.skip("the native extension is not built here")
    model = HeadModel(openhead)
    slots = model.uv_slots(64)
    g = torch.Generator().manual_seed(1)
    p = model.neutral()
    p = type(p)(p.shape, torch.randn(1, model.n_expr, generator=g) * 0.5, torch.tensor([[0.3, -0.8, 0.2]]),
                torch.tensor([[0.1, 0.5, 0.0]]), torch.tensor([[0.3, 0.0, 0.0]]), p.eyes, p.translation)
    verts = model.vertices(p)[0].to(dtype)
    n = len(slots)
    a = Activated.of(torch.randn(n, 3, generator=g, dtype=dtype) * 0.1, torch.randn(n, 4, generator=g, dtype=dtype),
                     torch.randn(n, 3, generator=g, dtype=dtype) - 2, torch.rand(n, 3, generator=g, dtype=dtype),
                     torch.randn(n, 1, generator=g, dtype=dtype))
    with torch.no_grad():
        want = place_activated(slot_frames(slots, verts, model.faces), a)
        got = pose_slots(slots, verts, model.faces, a)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    for f in ("means", "quats", "scales", "opacities", "colors"):
        assert_close(getattr(got, f), getattr(want, f), **tol)


def test_pose_slots_keeps_autograd_when_a_gradient_is_needed(openhead) -> None:
    from engine.binding import Activated, pose_slots
    from engine.headmodel.base import HeadModel

    model = HeadModel(openhead)
    slots = model.uv_slots(32)
    n = len(slots)
    x = torch.zeros(n, 3, requires_grad=True)
    a = Activated.of(x, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.zeros(n, 3), torch.zeros(n, 3),
                     torch.zeros(n, 1))
    out = pose_slots(slots, model.v_template, model.faces, a)
    out.means.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
