"""OpenHead's inner parts: eyeballs, mouth cavity and teeth, each in its own UV chart.

The charts sit in the strip of the texture below the main surface (v < ShellSpec.v_range[0]).
Parts are built as UV vertices with 3D positions; a UV vertex that is the same 3D point as
an earlier one (the cavity's rim is the inner lip loop) records it in ``same_as``, and
`PartBuilder.weld` turns UV vertices into the mesh's 3D vertices, as FLAME keeps ``vt``
apart from ``v``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.headmodel import facemesh as fm

# Where each chart goes in the texture: (u0, v0, u1, v1), or (cu, cv, radius) for discs.
EYE_R_DISC = (0.085, 0.084, 0.078)
EYE_L_DISC = (0.255, 0.084, 0.078)
CAVITY_UPPER = (0.350, 0.088, 0.580, 0.162)
CAVITY_LOWER = (0.350, 0.006, 0.580, 0.080)
CAVITY_BACK = (0.590, 0.006, 0.660, 0.162)
TEETH_UPPER = (0.670, 0.088, 0.995, 0.162)
TEETH_LOWER = (0.670, 0.006, 0.995, 0.080)

EYE_RADIUS = 0.0125
EYE_LID_GAP = 0.0005  # the open lid margins' middle sits this far in front of the eyeball
EYE_CAP_DEG = 100.0   # the eyeball is a cap: its back is inside the head and never seen
EYE_RINGS, EYE_SEGMENTS = 10, 24
CAVITY_RINGS, CAVITY_DEPTH, CAVITY_HEIGHT = 5, 0.035, 0.011
TEETH_COLS, TEETH_ARC_DEG = 12, 70.0


@dataclass
class PartBuilder:
    """Accumulates UV vertices (uv, 3D position), triangles over them and 3D identities."""

    uv: list = field(default_factory=list)
    pos: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    same_as: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)   # part name -> UV vertex ids

    @property
    def n(self) -> int:
        return sum(len(u) for u in self.uv)

    def add(self, uv: np.ndarray, pos: np.ndarray, group: str, same_as=None) -> np.ndarray:
        """Add UV vertices; ``same_as[k]`` (if >= 0) names the vertex the k-th new one equals in 3D."""
        ids = np.arange(self.n, self.n + len(uv))
        self.uv.append(np.asarray(uv, float))
        self.pos.append(np.asarray(pos, float))
        if same_as is not None:
            self.same_as.update({int(i): int(s) for i, s in zip(ids, same_as) if s >= 0})
        self.groups[group] = np.concatenate([self.groups.get(group, np.zeros(0, int)), ids])
        return ids

    def add_faces(self, faces: np.ndarray) -> None:
        self.faces.append(np.asarray(faces, np.int64).reshape(-1, 3))

    def add_grid(self, ids: np.ndarray, flip: bool = False) -> None:
        """Two triangles per cell of a [rows, cols] array of vertex ids (counter-clockwise in UV
        when rows grow along v and columns along u; ``flip`` reverses)."""
        a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]
        tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
        self.add_faces(tri[:, ::-1] if flip else tri)

    def weld(self):
        """(verts [V, 3], faces [F, 3], uvs [T, 2], uv_faces [F, 3], vertex_of_uv [T]).

        3D vertices are numbered in order of first appearance, so UV vertex i < 468 (a
        landmark) is 3D vertex i. Triangles that welding collapses (the cavity's corners,
        where its upper and lower halves meet) are dropped."""
        n = self.n
        root = np.arange(n)
        for a, b in self.same_as.items():
            while root[b] != b:
                b = root[b]
            root[a] = b
        root = np.array([_find(root, i) for i in range(n)])
        uniq, first = np.unique(root, return_index=True)
        order = uniq[np.argsort(first)]
        new_id = np.empty(n, np.int64)
        new_id[order] = np.arange(len(order))
        vertex_of_uv = new_id[root]
        pos = np.concatenate(self.pos)
        uv_faces = np.concatenate(self.faces)
        faces = vertex_of_uv[uv_faces]
        ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
        return pos[order], faces[ok], np.concatenate(self.uv), uv_faces[ok], vertex_of_uv


def _find(root: np.ndarray, i: int) -> int:
    while root[i] != i:
        i = root[i]
    return i


def _rect_uv(rect, rows: int, cols: int) -> np.ndarray:
    u0, v0, u1, v1 = rect
    u, v = np.meshgrid(np.linspace(u0, u1, cols), np.linspace(v0, v1, rows))
    return np.stack([u, v], -1)


def eyeball_centre(face: np.ndarray, loop: list[int]) -> np.ndarray:
    """Centre [3] of an eyeball of EYE_RADIUS whose surface sits EYE_LID_GAP behind the lid
    margins' middle (the lid corners reach past the eyeball, as real ones do)."""
    p = face[loop]
    c = p.mean(0)
    half = np.ptp(p[:, 0]) / 2
    mid = np.abs(p[:, 0] - c[0]) < 0.6 * half
    r2 = (EYE_RADIUS + EYE_LID_GAP) ** 2 - ((p[mid, :2] - c[:2]) ** 2).sum(1)
    cz = np.mean(p[mid, 2] - np.sqrt(np.maximum(r2, 1e-8)))
    return np.array([c[0], c[1], cz])


def add_eyeball(b: PartBuilder, centre: np.ndarray, disc, group: str) -> np.ndarray:
    """A spherical cap looking along +z; returns the ids of its equator ring (the joint is
    their mean, which is the centre)."""
    alphas = np.deg2rad(np.linspace(0, EYE_CAP_DEG, EYE_RINGS + 1)[1:])
    betas = np.linspace(0, 2 * np.pi, EYE_SEGMENTS, endpoint=False)
    A, B = np.meshgrid(alphas, betas, indexing="ij")                     # [rings, segments]
    dirs = np.stack([np.sin(A) * np.cos(B), np.sin(A) * np.sin(B), np.cos(A)], -1).reshape(-1, 3)
    pos = np.concatenate([centre[None] + [0, 0, EYE_RADIUS], centre + EYE_RADIUS * dirs])
    cu, cv, r = disc
    rad = (A / np.deg2rad(EYE_CAP_DEG)).reshape(-1) * r
    uv = np.concatenate([[[cu, cv]], np.stack([cu + rad * np.cos(B).ravel(), cv + rad * np.sin(B).ravel()], 1)])
    ids = b.add(uv, pos, group)
    pole, rings = ids[0], ids[1:].reshape(EYE_RINGS, EYE_SEGMENTS)
    nxt = np.roll(rings, -1, axis=1)
    b.add_faces(np.stack([np.full(EYE_SEGMENTS, pole), rings[0], nxt[0]], 1))
    a, c, d, e = rings[:-1], nxt[:-1], nxt[1:], rings[1:]
    b.add_faces(np.concatenate([np.stack([a, e, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]))
    equator = int(np.argmin(np.abs(np.rad2deg(alphas) - 90)))
    return rings[equator]


def add_mouth_cavity(b: PartBuilder, face: np.ndarray) -> None:
    """A bag behind the inner lip loop: an upper and a lower tube of CAVITY_RINGS rings going
    back and opening up and down, zipped together by a back wall."""
    upper, lower, c0, c1 = fm.split_loop(fm.topology()["lips_inner"], face)
    m = face[upper + lower].mean(0)
    t = np.linspace(0, 1, CAVITY_RINGS + 1)
    rows = {}
    for name, path, sign, rect in (("upper", upper, 1.0, CAVITY_UPPER), ("lower", lower, -1.0, CAVITY_LOWER)):
        p = face[path]                                                     # [C, 3]
        across = np.sin(np.pi * np.linspace(0, 1, len(path)))              # 0 at the corners
        pos = np.empty((len(t), len(path), 3))
        pos[..., 0] = m[0] + (p[None, :, 0] - m[0]) * (1 + 0.25 * t[:, None])
        pos[..., 1] = p[None, :, 1] + sign * CAVITY_HEIGHT * (1 - (1 - t[:, None]) ** 2) * across[None]
        pos[..., 2] = p[None, :, 2] - CAVITY_DEPTH * t[:, None]
        uv = _rect_uv(rect, len(t), len(path))
        if sign < 0:
            uv = uv[::-1]                                                  # lip rim on the chart's top edge
        same = np.full((len(t), len(path)), -1)
        same[0] = path                                                     # the rim is the lip loop
        if name == "lower":                                                # corners are shared with the upper tube
            same[1:, 0], same[1:, -1] = rows["upper"][1:, 0], rows["upper"][1:, -1]
        ids = b.add(uv.reshape(-1, 2), pos.reshape(-1, 3), "cavity", same.ravel()).reshape(len(t), len(path))
        rows[name] = ids
        b.add_grid(ids, flip=sign > 0)
    back_u, back_l = rows["upper"][-1], rows["lower"][-1]
    u0, v0, u1, v1 = CAVITY_BACK
    vs = np.linspace(v0, v1, len(upper))
    pos = np.concatenate(b.pos)
    uv = np.concatenate([np.stack([np.full_like(vs, u0), vs], 1), np.stack([np.full_like(vs, u1), vs], 1)])
    ids = b.add(uv, pos[np.concatenate([back_u, back_l])], "cavity", np.concatenate([back_u, back_l]))
    b.add_grid(ids.reshape(2, -1).T, flip=False)


def add_teeth(b: PartBuilder, face: np.ndarray, upper: bool) -> np.ndarray:
    """A curved band of teeth behind the lips: incisal edge, front face, gum line."""
    inner = fm.topology()["lips_inner"]
    m = face[inner].mean(0)
    phi = np.deg2rad(np.linspace(-TEETH_ARC_DEG, TEETH_ARC_DEG, TEETH_COLS + 1))
    z_front = face[inner, 2].max() - (0.004 if upper else 0.0055)
    x = 0.024 * np.sin(phi)
    z = z_front - 0.018 * (1 - np.cos(phi))
    sign = 1.0 if upper else -1.0
    # rows from the biting edge's back to the gum: (height above the biting edge, depth offset).
    # The upper incisors' edge sits 1.5 mm below the mouth line, so they show between parted
    # lips as real ones do; the lower ones' 4.5 mm, behind the upper (an overbite), where the
    # lower lip covers them until the mouth opens wide.
    edge = m[1] - (0.0015 if upper else 0.0045)
    profile = [(0.0, -0.005), (0.0, 0.0), (0.005, 0.0003), (0.0095, 0.0)]
    pos = np.array([[[xi, edge + sign * h, zi + dz] for xi, zi in zip(x, z)] for h, dz in profile])
    uv = _rect_uv(TEETH_UPPER if upper else TEETH_LOWER, len(profile), len(phi))
    if not upper:
        uv = uv[::-1]
    ids = b.add(uv.reshape(-1, 2), pos.reshape(-1, 3), "teeth_upper" if upper else "teeth_lower")
    b.add_grid(ids.reshape(len(profile), len(phi)), flip=not upper)
    return ids
