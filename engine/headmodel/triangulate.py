"""Planar triangulation with holes and forced edges (a small constrained Delaunay).

scipy's Delaunay does not take constraints; a thin opening such as the slit between
parted lips loses its border edges to triangles that cross it. Missing border edges are
put back by the classic cavity method: remove the triangles the segment crosses and
ear-clip the two polygons on either side of it.
"""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolyPath
from scipy.spatial import Delaunay


def _orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Twice the signed area of (a, b, c); > 0 when counter-clockwise. Broadcasts over [..., 2]."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def ear_clip(poly: list[int], uv: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles of a simple counter-clockwise polygon (vertex indices into ``uv``)."""
    poly, out = list(poly), []
    while len(poly) > 3:
        n = len(poly)
        for k in range(n):
            p, i, q = poly[k - 1], poly[k], poly[(k + 1) % n]
            if _orient(uv[p], uv[i], uv[q]) <= 1e-18:
                continue
            others = [j for j in poly if j not in (p, i, q)]
            if others:
                o = uv[others]
                inside = (_orient(uv[p], uv[i], o) >= 0) & (_orient(uv[i], uv[q], o) >= 0) & (_orient(uv[q], uv[p], o) >= 0)
                if inside.any():
                    continue
            out.append((p, i, q))
            del poly[k]
            break
        else:
            raise RuntimeError(f"ear clipping failed on a polygon of {n} vertices")
    out.append(tuple(poly))
    return out


def insert_segment(tri: np.ndarray, uv: np.ndarray, a: int, b: int) -> np.ndarray:
    """Force edge (a, b) into a counter-clockwise triangulation ``tri`` [F, 3]."""
    A, B = uv[a], uv[b]
    hit = np.zeros(len(tri), bool)
    for k in range(3):
        p, q = tri[:, k], tri[:, (k + 1) % 3]
        shares = (p == a) | (p == b) | (q == a) | (q == b)
        proper = (_orient(A, B, uv[p]) * _orient(A, B, uv[q]) < 0) & (_orient(uv[p], uv[q], A) * _orient(uv[p], uv[q], B) < 0)
        hit |= proper & ~shares
    if not hit.any():
        return tri
    cav = tri[hit]
    directed = {(int(f[k]), int(f[(k + 1) % 3])) for f in cav for k in range(3)}
    nxt = {p: q for p, q in directed if (q, p) not in directed}
    chain1, v = [a], a
    while v != b:
        v = nxt[v]
        chain1.append(v)
    chain2 = [b]
    while v != a:
        v = nxt[v]
        chain2.append(v)
    new = ear_clip(chain1, uv) + ear_clip(chain2, uv)
    return np.concatenate([tri[~hit], np.array(new, dtype=tri.dtype)])


def triangulate(uv: np.ndarray, loops: list[list[int]]) -> np.ndarray:
    """Counter-clockwise triangles [F, 3] of points ``uv`` [N, 2] with every loop's edges kept
    and the inside of every loop left open (a hole)."""
    tri = Delaunay(uv).simplices
    area = _orient(uv[tri[:, 0]], uv[tri[:, 1]], uv[tri[:, 2]])
    tri = np.where((area < 0)[:, None], tri[:, [0, 2, 1]], tri)
    tri = tri[np.abs(area) > 1e-14]
    for loop in loops:
        for a, b in zip(loop, loop[1:] + loop[:1]):
            tri = insert_segment(tri, uv, a, b)
    centroid = uv[tri].mean(axis=1)
    keep = np.ones(len(tri), bool)
    for loop in loops:
        keep &= ~PolyPath(uv[loop]).contains_points(centroid)
    return tri[keep]
