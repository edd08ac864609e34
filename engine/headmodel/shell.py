"""OpenHead's main surface: the FaceMesh face stitched into a procedural head, in one UV chart.

The surface is built directly in its UV chart. Every point of the head is seen from a
centre C inside it (the head is star-shaped from C), so its direction (azimuth psi,
elevation theta) is a chart coordinate; piecewise-linear warps of psi and theta give the
face the densest part of the texture. The face's 468 landmarks and a regular grid over
the rest of the chart are triangulated together by a Delaunay triangulation *in UV*, so
the chart never overlaps itself and the face is stitched to the head with no seam of
its own. Eye and mouth openings are then cut out. Positions off the face come from a
smooth procedural head (cranium, jaw, neck, ears: an SDF ray-marched from C) plus a
harmonic offset field that blends it into the face's border.

The chart's left and right edges are the back of the head (psi = ±180°): its vertices
are duplicated there with two UVs and welded in 3D, as FLAME's UV seams are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from matplotlib.path import Path as PolyPath

from engine.headmodel import facemesh as fm
from engine.headmodel.triangulate import triangulate

DEG = np.pi / 180


@dataclass(frozen=True)
class ShellSpec:
    """Dimensions of the procedural head (metres, FLAME axes: x left, y up, z out of the face)."""

    centre: tuple = (0.0, 0.0, -0.09)
    cranium_c: tuple = (0.0, 0.040, -0.083)
    cranium_r: tuple = (0.076, 0.108, 0.100)
    jaw_c: tuple = (0.0, -0.040, -0.050)
    jaw_r: tuple = (0.058, 0.045, 0.060)
    neck_c: tuple = (0.0, -0.100)          # (x, z) of the neck axis
    neck_r: tuple = (0.054, 0.056)
    neck_top: float = -0.01
    ear_c: tuple = (0.077, 0.012, -0.098)  # the left ear; the right is mirrored
    ear_r: tuple = (0.010, 0.031, 0.018)
    blend: float = 0.025                   # smooth-union radius
    theta_bottom: float = -72.0            # neck cut, degrees of elevation from C
    theta_top: float = 87.0                # crown ring (a ~5 mm opening at the pole)
    psi_knots: tuple = (-180.0, -78.0, 78.0, 180.0)
    u_knots: tuple = (0.0, 0.19, 0.81, 1.0)
    theta_knots: tuple = (-72.0, -54.0, 50.0, 87.0)
    t_knots: tuple = (0.0, 0.11, 0.90, 1.0)
    grid: tuple = (44, 34)                 # grid cells across u and v before subdivision
    lip_gap: float = 0.003                 # the template's lips are parted by this much
    v_range: tuple = (0.168, 1.0)          # part of the texture the chart occupies (v)


# ---------------------------------------------------------------- procedural head
def _sd_ellipsoid(p: np.ndarray, c, r) -> np.ndarray:
    q = (p - np.asarray(c)) / np.asarray(r)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(r), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def head_sdf(p: np.ndarray, spec: ShellSpec) -> np.ndarray:
    """Approximate signed distance [...] of points [..., 3] to the procedural head."""
    d = _sd_ellipsoid(p, spec.cranium_c, spec.cranium_r)
    d = _smin(d, _sd_ellipsoid(p, spec.jaw_c, spec.jaw_r), spec.blend)
    neck = np.stack([p[..., 0] - spec.neck_c[0], np.zeros_like(p[..., 0]), p[..., 2] - spec.neck_c[1]], -1)
    neck_d = np.maximum(_sd_ellipsoid(neck, (0, 0, 0), (spec.neck_r[0], 1.0, spec.neck_r[1])), p[..., 1] - spec.neck_top)
    d = _smin(d, neck_d, spec.blend)
    for sx in (1.0, -1.0):
        ear_c = (sx * spec.ear_c[0], spec.ear_c[1], spec.ear_c[2])
        d = _smin(d, _sd_ellipsoid(p, ear_c, spec.ear_r), 0.006)
    return d


def ray_march(dirs: np.ndarray, spec: ShellSpec, t_max: float = 0.45, steps: int = 900) -> np.ndarray:
    """Outermost surface point [N, 3] of the head along unit rays [N, 3] from the centre."""
    c = np.asarray(spec.centre)
    ts = np.linspace(0.0, t_max, steps)
    out = np.empty((len(dirs), 3))
    for s in range(0, len(dirs), 512):
        d = dirs[s : s + 512]
        inside = head_sdf(c + d[:, None, :] * ts[None, :, None], spec) < 0   # [n, steps]
        last = steps - 1 - np.argmax(inside[:, ::-1], axis=1)               # last inside sample
        lo, hi = ts[last], ts[np.minimum(last + 1, steps - 1)]
        for _ in range(30):                                                  # bisection
            mid = 0.5 * (lo + hi)
            ins = head_sdf(c + d * mid[:, None], spec) < 0
            lo, hi = np.where(ins, mid, lo), np.where(ins, hi, mid)
        out[s : s + 512] = c + d * lo[:, None]
    return out


# ---------------------------------------------------------------- chart coordinates
def directions_to_uv(dirs: np.ndarray, spec: ShellSpec) -> np.ndarray:
    """Chart UV [N, 2] of unit directions [N, 3] from the centre."""
    psi = np.arctan2(dirs[:, 0], dirs[:, 2]) / DEG
    theta = np.arcsin(np.clip(dirs[:, 1], -1, 1)) / DEG
    u = np.interp(psi, spec.psi_knots, spec.u_knots)
    t = np.interp(theta, spec.theta_knots, spec.t_knots)
    v0, v1 = spec.v_range
    return np.stack([u, v0 + t * (v1 - v0)], axis=1)


def uv_to_directions(uv: np.ndarray, spec: ShellSpec) -> np.ndarray:
    """Inverse of `directions_to_uv`: unit directions [N, 3]."""
    v0, v1 = spec.v_range
    psi = np.interp(uv[:, 0], spec.u_knots, spec.psi_knots) * DEG
    theta = np.interp((uv[:, 1] - v0) / (v1 - v0), spec.t_knots, spec.theta_knots) * DEG
    return np.stack([np.cos(theta) * np.sin(psi), np.sin(theta), np.cos(theta) * np.cos(psi)], axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---------------------------------------------------------------- the shell
@dataclass
class Shell:
    """The main surface before welding: one row per UV vertex (T of them)."""

    uv: np.ndarray          # [T, 2]
    pos: np.ndarray         # [T, 3]
    faces: np.ndarray       # [F, 3] into the T UV vertices
    is_face: np.ndarray     # [T] bool: on the FaceMesh face (landmarks and their subdivision)
    same_as: dict = field(default_factory=dict)  # duplicate UV vertex -> the vertex it is in 3D


def part_lips(face: np.ndarray, gap: float) -> np.ndarray:
    """The face [468, 3] with its lips parted by ``gap`` at the middle, tapering to the corners.

    Everything below the inner lower lip moves down by a field that is ``gap`` at the lip
    and fades out over 2.5 cm towards the chin, so the lower lip's rings keep their order."""
    topo = fm.topology()
    face = face.copy()
    _, lower_in, c0, c1 = fm.split_loop(topo["lips_inner"], face)
    x0, x1 = face[c0, 0], face[c1, 0]
    order = np.argsort(face[lower_in, 0])
    lip_y = np.interp(face[:, 0], face[lower_in, 0][order], face[lower_in, 1][order])
    taper = np.sin(np.pi * np.clip((face[:, 0] - x0) / (x1 - x0), 0, 1))
    below = lip_y - face[:, 1]
    fade = np.where(below >= -1e-6, np.clip(1 - below / 0.025, 0, 1), 0.0)
    face[:, 1] -= gap * taper * fade
    return face


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def check_loops_present(faces: np.ndarray, loops: dict[str, list[int]]) -> None:
    """Raise if a hole's loop edge is missing from the triangulation (the hole would leak)."""
    have = {tuple(e) for e in _edges(faces)}
    for name, loop in loops.items():
        missing = [(a, b) for a, b in zip(loop, loop[1:] + loop[:1]) if tuple(sorted((a, b))) not in have]
        if missing:
            raise RuntimeError(f"OpenHead triangulation lost edges {missing} of the {name} loop")


def subdivide(uv: np.ndarray, pos: np.ndarray, faces: np.ndarray, smooth: np.ndarray):
    """One 1-to-4 midpoint subdivision. Midpoints of interior edges whose endpoints both have
    ``smooth`` set take Loop's edge rule (3/8, 3/8, 1/8, 1/8) so the face gets rounder; the
    original vertices keep their positions (landmark i stays vertex i).
    Returns uv, pos, faces, smooth, parent_edges [M, 2] of the new vertices."""
    n = len(uv)
    e_all = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    opp = np.concatenate([faces[:, 2], faces[:, 0], faces[:, 1]])
    key = np.sort(e_all, axis=1)
    edges, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    mid_uv = 0.5 * (uv[edges[:, 0]] + uv[edges[:, 1]])
    mid_pos = 0.5 * (pos[edges[:, 0]] + pos[edges[:, 1]])
    count = np.bincount(inv, minlength=len(edges))
    opp_sum = np.zeros((len(edges), 3))
    np.add.at(opp_sum, inv, pos[opp])
    opp_smooth = np.bincount(inv, weights=smooth[opp], minlength=len(edges))
    loop_rule = (count == 2) & (opp_smooth == 2) & smooth[edges[:, 0]] & smooth[edges[:, 1]]
    mid_pos[loop_rule] = 0.75 * mid_pos[loop_rule] + 0.125 * opp_sum[loop_rule]
    m = (n + inv).reshape(3, -1).T          # [F, 3] midpoints of edges (01, 12, 20)
    f0, f1, f2 = faces.T
    m01, m12, m20 = m.T
    new_faces = np.concatenate([
        np.stack([f0, m01, m20], 1), np.stack([m01, f1, m12], 1),
        np.stack([m20, m12, f2], 1), np.stack([m01, m12, m20], 1)])
    new_smooth = np.concatenate([smooth, smooth[edges[:, 0]] & smooth[edges[:, 1]]])
    return (np.concatenate([uv, mid_uv]), np.concatenate([pos, mid_pos]), new_faces, new_smooth, edges)


def uniform_laplacian(n: int, faces: np.ndarray) -> sp.csr_matrix:
    e = _edges(faces)
    w = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    w = (w + w.T).tocsr()
    w.data[:] = 1.0
    return (sp.diags(np.asarray(w.sum(1)).ravel()) - w).tocsr()


def harmonic_fill(L: sp.csr_matrix, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve L x = 0 on the free vertices with x = values on the ``fixed`` ones. [V, C]."""
    free = ~fixed
    x = values.copy()
    A = L[free][:, free].tocsc()
    b = -L[free][:, fixed] @ values[fixed]
    solve = spla.factorized(A)
    x[free] = np.stack([solve(b[:, k]) for k in range(values.shape[1])], axis=1)
    return x


def build_shell(face_neutral: np.ndarray, spec: ShellSpec = ShellSpec()) -> Shell:
    """The main surface: face landmarks first (vertex i = landmark i), then grid and midpoints."""
    topo = fm.topology()
    face = part_lips(face_neutral.astype(np.float64), spec.lip_gap)
    centre = np.asarray(spec.centre)
    face_uv = directions_to_uv(_unit(face - centre), spec)

    nu, nv = spec.grid
    gu, gv = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(spec.v_range[0], spec.v_range[1], nv + 1))
    grid_uv = np.stack([gu.ravel(), gv.ravel()], 1)
    cell = min(1.0 / nu, (spec.v_range[1] - spec.v_range[0]) / nv)
    # A regular grid's cells are cocircular, so which diagonal Delaunay picks would hang on
    # floating-point noise (it differed between processes). A fixed jitter of the interior
    # points makes the triangulation unambiguous and the build bit-reproducible.
    inner = (gu.ravel() > 0) & (gu.ravel() < 1) & (gv.ravel() > spec.v_range[0]) & (gv.ravel() < spec.v_range[1])
    grid_uv[inner] += np.random.default_rng(7).uniform(-0.15, 0.15, (int(inner.sum()), 2)) * cell
    oval = face_uv[topo["face_oval"]]
    near_face = np.min(np.linalg.norm(grid_uv[:, None] - face_uv[None], axis=2), axis=1) < 0.75 * cell
    grid_uv = grid_uv[~(PolyPath(oval).contains_points(grid_uv) | near_face)]

    uv = np.concatenate([face_uv, grid_uv])
    faces = triangulate(uv, [topo[k] for k in ("eye_L", "eye_R", "lips_inner")])
    check_loops_present(faces, {k: topo[k] for k in ("eye_L", "eye_R", "lips_inner")})

    is_face = np.zeros(len(uv), bool)
    is_face[: fm.N_FACE] = True
    pos = np.concatenate([face, np.zeros((len(grid_uv), 3))])
    uv, pos, faces, is_face, _ = subdivide(uv, pos, faces, is_face)

    # Off the face: the procedural head, bent onto the face border by a harmonic offset.
    base = ray_march(uv_to_directions(uv, spec), spec)
    shell = Shell(uv, pos, faces, is_face)
    shell.same_as = _seam_duplicates(uv)
    L = uniform_laplacian(len(uv), _weld_faces(faces, shell.same_as, len(uv)))
    dirs_v = uv_to_directions(uv, spec)
    psi = np.abs(np.arctan2(dirs_v[:, 0], dirs_v[:, 2])) / DEG
    theta = np.arcsin(np.clip(dirs_v[:, 1], -1, 1)) / DEG
    far = (psi > 125) | (theta > 72) | (theta < -64)
    offset = np.zeros((len(uv), 3))
    offset[is_face] = pos[is_face] - base[is_face]
    offset = harmonic_fill(L, is_face | far, offset)
    shell.pos = np.where(is_face[:, None], pos, base + offset)
    return shell


def _seam_duplicates(uv: np.ndarray) -> dict[int, int]:
    """Vertices on the right chart edge (u = 1) → their twins on the left edge (u = 0)."""
    left = {round(v, 7): i for i, (u, v) in enumerate(uv) if u < 1e-9}
    return {i: left[round(v, 7)] for i, (u, v) in enumerate(uv) if u > 1 - 1e-9}


def _weld_faces(faces: np.ndarray, same_as: dict[int, int], n: int) -> np.ndarray:
    remap = np.arange(n)
    for a, b in same_as.items():
        remap[a] = b
    return remap[faces]
