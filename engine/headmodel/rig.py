"""OpenHead's rig: joints, skinning weights, expression blendshapes and the identity basis.

Every field is authored procedurally on the rest mesh:
- joints are regressed from vertices (least-norm affine weights that hit a target point
  exactly at rest and follow the surface when the shape changes);
- the jaw's skinning weight is a harmonic field on the surface, 1 on the lower lip and chin,
  0 on the upper lip, nose and skull: the lips are separate vertices across the mouth slit,
  so opening the jaw never tears them, and the weight fades smoothly over the cheeks;
- expression blendshapes are handle displacements spread by a smooth falloff of the
  *geodesic* distance on the surface, so a handle on the upper lid never drags the lower
  lid across the eye opening;
- identity modes are global axis scalings plus low-frequency eigenmodes of the surface's
  cotangent Laplacian, each displacing the head along x, y and z.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import dijkstra

from engine.headmodel import facemesh as fm
from engine.headmodel.parts import EYE_LID_GAP, EYE_RADIUS
from engine.headmodel.shell import harmonic_fill, uniform_laplacian

JAW_TARGET = (0.0, 0.0, -0.080)     # temporomandibular joints' midpoint
NECK_TARGET = (0.0, -0.035, -0.095)  # skull base
ROOT_TARGET = (0.0, -0.130, -0.100)  # neck base
N_EIGENMODES = 19
CORNER_FREE = 0.009  # lip points this close (in x) to the mouth corners are not pinned to jaw or skull


# ---------------------------------------------------------------- joints
def affine_regressor(verts: np.ndarray, support: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights [V] over ``support`` vertices, summing to 1, whose average of ``verts`` is ``target``
    (the least-norm solution)."""
    A = np.vstack([verts[support].T, np.ones(len(support))])       # [4, k]
    w = A.T @ np.linalg.solve(A @ A.T, np.append(target, 1.0))
    out = np.zeros(len(verts))
    out[support] = w
    return out


def joint_regressor(verts: np.ndarray, shell: np.ndarray, eye_rings: dict[str, np.ndarray]) -> np.ndarray:
    """J_regressor [5, V] in JOINT_NAMES order (root, neck, jaw, eye_L, eye_R)."""
    rows = []
    for target in (ROOT_TARGET, NECK_TARGET, JAW_TARGET):
        slab = shell[np.abs(verts[shell, 1] - target[1]) < 0.008]
        rows.append(affine_regressor(verts, slab, np.asarray(target)))
    for side in ("L", "R"):
        w = np.zeros(len(verts))
        w[eye_rings[side]] = 1.0 / len(eye_rings[side])            # the equator's mean is the centre
        rows.append(w)
    return np.stack(rows)


# ---------------------------------------------------------------- weights
def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def jaw_field(verts: np.ndarray, faces: np.ndarray, surface: np.ndarray, cavity_lower: np.ndarray,
              cavity_upper: np.ndarray) -> np.ndarray:
    """The jaw's share [V] of each surface vertex's head weight, by harmonic interpolation."""
    topo = fm.topology()
    face = verts[: fm.N_FACE]
    up_in, low_in, *_ = fm.split_loop(topo["lips_inner"], face)
    up_out, low_out, *_ = fm.split_loop(topo["lips_outer"], face)
    chin_y = face[low_out, 1].min()
    # Only the middle of each lip is pinned: the corners are left to the harmonic field so
    # the stretch of an opening mouth spreads over a centimetre instead of a millimetre.
    x_corner = np.abs(face[topo["lips_outer"], 0]).max()
    mid = lambda ids: [i for i in ids if abs(verts[i, 0]) < x_corner - CORNER_FREE]  # noqa: E731
    one = set(mid(low_in)) | set(mid(low_out)) | set(mid(cavity_lower.tolist()))
    idx = np.arange(fm.N_FACE)
    one |= set(idx[(face[:, 1] < chin_y - 0.004) & (face[:, 2] > -0.04)].tolist())
    zero = set(mid(up_in)) | set(mid(up_out)) | set(mid(cavity_upper.tolist()))
    zero |= set(idx[face[:, 1] > face[fm.NOSE_TIP, 1] - 0.012].tolist())
    zero |= set(surface[(verts[surface, 2] < -0.105) | (verts[surface, 1] < -0.125)].tolist())
    zero -= one
    L = uniform_laplacian(len(verts), faces)
    fixed = np.zeros(len(verts), bool)
    vals = np.zeros((len(verts), 1))
    fixed[list(one)] = True
    vals[list(one)] = 1.0
    fixed[list(zero)] = True
    sub = np.zeros(len(verts), bool)
    sub[surface] = True
    fixed |= ~sub                                   # parts off the surface are set elsewhere
    w = harmonic_fill(L, fixed, vals)[:, 0]
    return np.clip(w, 0, 1)


def skinning_weights(verts: np.ndarray, jaw: np.ndarray, groups: dict[str, np.ndarray]) -> np.ndarray:
    """Weights [V, 5]: the neck fades from root to head along its length; the head splits
    between neck and jaw joints; eyeballs and teeth are rigid."""
    head = _smoothstep(-0.135, -0.07, verts[:, 1])
    W = np.stack([1 - head, head * (1 - jaw), head * jaw, np.zeros_like(head), np.zeros_like(head)], 1)
    for name, col in (("eye_L", 3), ("eye_R", 4)):
        W[groups[name]] = np.eye(5)[col]
    W[groups["teeth_upper"]] = np.eye(5)[1]
    W[groups["teeth_lower"]] = np.eye(5)[2]
    return W


# ---------------------------------------------------------------- expressions
def edge_graph(verts: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, 1), axis=0)
    length = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1)
    g = sp.coo_matrix((length, (e[:, 0], e[:, 1])), shape=(len(verts),) * 2)
    return (g + g.T).tocsr()


class Handles:
    """Builds blendshapes from handle displacements spread by geodesic falloff."""

    def __init__(self, verts: np.ndarray, graph: sp.csr_matrix) -> None:
        self.verts = verts
        self.graph = graph

    def bump(self, sources, t, radius: float) -> np.ndarray:
        """Displacement [V, 3]: each vertex takes its geodesically nearest source's ``t``
        scaled by (1 - (d / radius)^2)^3."""
        sources = np.asarray(sources, int)
        t = np.broadcast_to(np.asarray(t, float), (len(sources), 3))
        dist, _, nearest = dijkstra(self.graph, indices=sources, min_only=True, limit=radius,
                                    return_predecessors=True)
        out = np.zeros((len(self.verts), 3))
        ok = np.isfinite(dist)
        k = np.searchsorted(np.sort(sources), nearest[ok])
        t_sorted = t[np.argsort(sources)]
        fall = (1 - np.clip(dist[ok] / radius, 0, 1) ** 2) ** 3
        out[ok] = t_sorted[k] * fall[:, None]
        return out


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], n)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def clear_of_eyeball(verts: np.ndarray, t: np.ndarray, centre: np.ndarray, clearance: float) -> np.ndarray:
    """The displacement ``t`` [V, 3] with every vertex that it would carry inside the sphere of
    ``clearance`` round ``centre`` (and that starts outside it) stopped on that sphere instead:
    a closing lid slides over the eyeball rather than through it."""
    end = verts + t
    r0 = np.linalg.norm(verts - centre, axis=1)
    r1 = np.linalg.norm(end - centre, axis=1)
    push = (r1 < clearance) & (r0 >= clearance)
    end[push] = centre + (end[push] - centre) * (clearance / r1[push])[:, None]
    return end - verts


def expression_basis(verts: np.ndarray, faces: np.ndarray, surface_graph: sp.csr_matrix,
                     jaw: np.ndarray, eye_centres: dict[str, np.ndarray] | None = None) -> tuple[list[str], np.ndarray]:
    """(names, exprdirs [V, 3, E]) with ARKit names; weight 1 is the full expression. With the
    eyeballs' ``eye_centres`` ("L", "R"), a blink's lid stays outside its eyeball."""
    topo = fm.topology()
    face = verts[: fm.N_FACE]
    h = Handles(verts, surface_graph)
    up_in, low_in, ci0, ci1 = fm.split_loop(topo["lips_inner"], face)
    up_out, low_out, co0, co1 = fm.split_loop(topo["lips_outer"], face)
    upper_lip, lower_lip = up_in[1:-1] + up_out[1:-1], low_in[1:-1] + low_out[1:-1]
    corners = {"R": [ci0, co0], "L": [ci1, co1]}       # R has the smaller x
    normals = vertex_normals(verts, faces)
    shapes: dict[str, np.ndarray] = {}

    def lids(side: str):
        up, low, c0, c1 = fm.split_loop(topo[f"eye_{side}"], face)
        return up[1:-1], low[1:-1], [c0, c1]

    for s, sx in (("L", 1.0), ("R", -1.0)):
        up, low, cs = lids(s)
        low_x, low_y, low_z = face[low, 0], face[low, 1], face[low, 2]
        order = np.argsort(low_x)
        xs = np.concatenate([face[cs, 0], low_x])
        ys = np.concatenate([face[cs, 1], low_y])
        zs = np.concatenate([face[cs, 2], low_z])
        o = np.argsort(xs)
        t_up = np.stack([np.zeros(len(up)), np.interp(face[up, 0], xs[o], ys[o]) - face[up, 1] + 0.0006,
                         np.interp(face[up, 0], xs[o], zs[o]) - face[up, 2] + 0.0012], 1)
        gap = -t_up[:, 1]
        t_low = np.stack([np.zeros(len(low)), np.interp(face[low, 0], face[up, 0][np.argsort(face[up, 0])],
                                                        gap[np.argsort(face[up, 0])]) * 0.12, np.zeros(len(low))], 1)
        zero = np.zeros((2, 3))
        shapes[f"eyeBlink_{s}"] = (h.bump(up + cs, np.concatenate([t_up, zero]), 0.013)
                                   + h.bump(low + cs, np.concatenate([t_low, zero]), 0.006))
        if eye_centres is not None:
            shapes[f"eyeBlink_{s}"] = clear_of_eyeball(verts, shapes[f"eyeBlink_{s}"], eye_centres[s],
                                                       EYE_RADIUS + EYE_LID_GAP)
        shapes[f"eyeWide_{s}"] = (h.bump(up + cs, np.concatenate([np.tile([0, 0.003, 0.0005], (len(up), 1)), zero]), 0.012)
                                  + h.bump(low + cs, np.concatenate([np.tile([0, -0.001, 0], (len(low), 1)), zero]), 0.005))
        shapes[f"eyeSquint_{s}"] = (h.bump(low + cs, np.concatenate([np.tile([0, 0.0025, 0.0005], (len(low), 1)), zero]), 0.007)
                                    + h.bump(list(fm.CHEEK_UPPER[s]), [0, 0.0015, 0.0005], 0.015))
        shapes[f"browDown_{s}"] = h.bump(list(fm.BROW_ALL[s]), [-sx * 0.002, -0.005, 0.001], 0.02)
        shapes[f"browOuterUp_{s}"] = h.bump(list(fm.BROW_OUTER[s]), [0, 0.007, 0], 0.02)
        shapes[f"mouthSmile_{s}"] = h.bump(corners[s], [sx * 0.006, 0.007, -0.004], 0.03)
        shapes[f"mouthFrown_{s}"] = h.bump(corners[s], [sx * 0.002, -0.006, -0.001], 0.025)
        shapes[f"mouthDimple_{s}"] = h.bump(corners[s], [sx * 0.004, 0.0005, -0.004], 0.02)
        shapes[f"mouthStretch_{s}"] = h.bump(corners[s], [sx * 0.006, -0.003, -0.002], 0.025)
        side_up = [i for i in upper_lip if sx * face[i, 0] > 0]
        side_low = [i for i in lower_lip if sx * face[i, 0] > 0]
        shapes[f"mouthPress_{s}"] = (h.bump(side_up, [0, -0.0012, -0.0005], 0.01)
                                     + h.bump(side_low, [0, 0.0012, -0.0005], 0.01))
        prof = lambda idx: np.exp(-((face[idx, 0] - sx * 0.011) / 0.009) ** 2)[:, None]  # noqa: E731
        shapes[f"mouthUpperUp_{s}"] = h.bump(upper_lip, prof(upper_lip) * [0, 0.0045, 0.0008], 0.012)
        shapes[f"mouthLowerDown_{s}"] = h.bump(lower_lip, prof(lower_lip) * [0, -0.0045, 0.0008], 0.012)
        shapes[f"cheekSquint_{s}"] = h.bump(list(fm.CHEEK_UPPER[s]), [0, 0.003, 0.0005], 0.018)
        shapes[f"noseSneer_{s}"] = h.bump(list(fm.NOSE_WING[s]), [0, 0.003, 0.0008], 0.011)

    brow_inner = list(fm.BROW_INNER["L"] + fm.BROW_INNER["R"])
    shapes["browInnerUp"] = h.bump(brow_inner, [0, 0.008, 0.001], 0.025)
    lips_all = upper_lip + lower_lip + corners["L"] + corners["R"]
    x = face[lips_all, 0]
    shapes["mouthPucker"] = h.bump(lips_all, np.stack([-0.35 * x, 0 * x, 0.006 + 0 * x], 1), 0.015)
    sign = np.array([1.0] * len(upper_lip) + [-1.0] * len(lower_lip) + [0.0] * 4)
    shapes["mouthFunnel"] = h.bump(lips_all, np.stack([-0.2 * x, 0.003 * sign, 0.006 - 0.002 * (sign == 0)], 1), 0.012)
    shapes["mouthLeft"] = h.bump(lips_all, [0.008, 0, 0], 0.02)
    shapes["mouthRight"] = h.bump(lips_all, [-0.008, 0, 0], 0.02)
    shapes["mouthClose"] = h.bump(lips_all, np.stack([0 * x, -0.006 * sign, 0 * x], 1), 0.012)
    shapes["mouthRollUpper"] = h.bump(up_out[1:-1], [0, -0.002, -0.004], 0.008) + h.bump(up_in[1:-1], [0, -0.001, -0.002], 0.004)
    shapes["mouthRollLower"] = h.bump(low_out[1:-1], [0, 0.002, -0.004], 0.008) + h.bump(low_in[1:-1], [0, 0.001, -0.002], 0.004)
    shapes["mouthShrugUpper"] = h.bump(upper_lip, [0, 0.0025, 0.001], 0.012)
    shapes["mouthShrugLower"] = h.bump(lower_lip + [fm.CHIN], [0, 0.003, 0.001], 0.02)
    cheeks = list(fm.CHEEK["L"] + fm.CHEEK["R"])
    shapes["cheekPuff"] = h.bump(cheeks, 0.008 * normals[cheeks], 0.03)
    shapes["jawForward"] = jaw[:, None] * [0, 0, 0.006]
    shapes["jawLeft"] = jaw[:, None] * [0.006, 0, 0]
    shapes["jawRight"] = jaw[:, None] * [-0.006, 0, 0]
    names = sorted(shapes)
    return names, np.stack([shapes[n] for n in names], axis=2)


# ---------------------------------------------------------------- local modes
LOCAL_REGIONS = (  # (name, radius in metres, modes): smooth extra degrees of freedom for tracking
    ("mouth", 0.030, 10), ("eye_L", 0.020, 5), ("eye_R", 0.020, 5), ("brow_L", 0.018, 3), ("brow_R", 0.018, 3))
LOCAL_AMPLITUDE = 0.003   # metres of peak displacement per unit coefficient


def local_modes(verts: np.ndarray, faces: np.ndarray, graph: sp.csr_matrix, surface: np.ndarray
                ) -> tuple[list[str], np.ndarray]:
    """Extra expression components [V, 3, K] named ``local_<region>_<k><axis>``: the lowest
    Dirichlet eigenmodes of the cotangent Laplacian on a geodesic disc around the mouth, each
    eye and each brow, along x, y and z. The named ARKit shapes are too few to follow every
    face a tracker sees (the exaggerated expressions of a talking-head video); these smooth,
    local modes absorb the rest, vanish at the region's border and cannot cross the eye or
    mouth openings (the region is geodesic and the openings are holes)."""
    topo = fm.topology()
    centres = {"mouth": topo["lips_inner"], "eye_L": topo["eye_L"], "eye_R": topo["eye_R"],
               "brow_L": list(fm.BROW_ALL["L"]), "brow_R": list(fm.BROW_ALL["R"])}
    on_surface = np.zeros(len(verts), bool)
    on_surface[surface] = True
    L, M = cotangent_laplacian(verts, faces[on_surface[faces].all(1)])
    names, dirs = [], []
    for region, radius, n_modes in LOCAL_REGIONS:
        dist = dijkstra(graph, indices=centres[region], min_only=True, limit=radius)
        inside = np.isfinite(dist) & (dist < radius) & on_surface
        edges = graph.tocoo()
        border = np.zeros(len(verts), bool)
        border[edges.row[inside[edges.row] & ~inside[edges.col]]] = True
        idx = np.nonzero(inside & ~border)[0]                   # Dirichlet: the border stays put
        Li, Mi = L[idx][:, idx].tocsc(), M.tocsr()[idx][:, idx].tocsc()
        vals, vecs = spla.eigsh(Li, k=n_modes, M=Mi, sigma=-1e-6, which="LM", v0=np.linspace(1.0, 2.0, len(idx)))
        vecs = vecs[:, np.argsort(vals)]
        vecs *= np.sign(vecs[np.abs(vecs).argmax(0), np.arange(n_modes)])
        for k in range(n_modes):
            phi = np.zeros(len(verts))
            phi[idx] = vecs[:, k] / np.abs(vecs[:, k]).max() * LOCAL_AMPLITUDE
            for axis, a in enumerate("xyz"):
                d = np.zeros((len(verts), 3))
                d[:, axis] = phi
                names.append(f"local_{region}_{k}{a}")
                dirs.append(d)
    return names, np.stack(dirs, axis=2)


# ---------------------------------------------------------------- identity
def cotangent_laplacian(verts: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, sp.dia_matrix]:
    """(L [V, V] positive semi-definite, lumped mass M [V, V])."""
    n = len(verts)
    L = sp.csr_matrix((n, n))
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = faces[:, k], faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
        a, b = verts[i] - verts[o], verts[j] - verts[o]
        cot = (a * b).sum(1) / np.maximum(np.linalg.norm(np.cross(a, b), axis=1), 1e-12)
        rows += [i, j]
        cols += [j, i]
        vals += [0.5 * cot, 0.5 * cot]
    W = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    L = sp.diags(np.asarray(W.sum(1)).ravel()) - W
    area = 0.5 * np.linalg.norm(np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]]), axis=1)
    m = np.bincount(faces.ravel(), weights=np.repeat(area / 3, 3), minlength=n)
    return L.tocsr(), sp.diags(np.maximum(m, 1e-12))


def identity_basis(verts: np.ndarray, faces: np.ndarray, surface: np.ndarray,
                   followers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """shapedirs [V, 3, 3 + 3 * N_EIGENMODES]: x/y/z scalings about the head's centre (5 % per
    unit), then each eigenmode along x, y, z (4 mm peak per unit, falling with frequency).
    ``followers`` are (part vertices, anchor vertices): a part moves rigidly with its anchors'
    mean displacement (eyeballs with their lids, teeth with the lips)."""
    V = len(verts)
    sub_faces = faces[np.isin(faces, surface).all(1)]
    L, M = cotangent_laplacian(verts, sub_faces)
    idx = np.asarray(surface)
    Ls, Ms = L[idx][:, idx], M.tocsr()[idx][:, idx]
    # A fixed start vector and a sign convention make the modes (and so the build) deterministic.
    vals, vecs = spla.eigsh(Ls.tocsc(), k=N_EIGENMODES + 1, M=Ms.tocsc(), sigma=-1e-6, which="LM",
                            v0=np.linspace(1.0, 2.0, len(idx)))
    vecs = vecs[:, np.argsort(vals)][:, 1:]                      # drop the constant mode
    vecs *= np.sign(vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])])
    centre = verts[surface].mean(0)
    dirs = []
    for axis in range(3):
        d = np.zeros((V, 3))
        d[:, axis] = 0.05 * (verts[:, axis] - centre[axis])
        dirs.append(d)
    for k in range(N_EIGENMODES):
        phi = np.zeros(V)
        phi[idx] = vecs[:, k] / np.abs(vecs[:, k]).max() * 0.004 / (1 + 0.15 * k)
        for axis in range(3):
            d = np.zeros((V, 3))
            d[:, axis] = phi
            dirs.append(d)
    D = np.stack(dirs, axis=2)                                   # [V, 3, S]
    for part, anchors in followers:
        D[part] = D[anchors].mean(0, keepdims=True)
    return D
