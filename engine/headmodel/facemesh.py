"""MediaPipe FaceMesh topology facts OpenHead is built on: loops and named point groups.

Loops are chained from the connection sets the mediapipe wheel ships
(`mediapipe.python.solutions.face_mesh_connections`), so no index list is copied by hand
except the small named groups below (brows, cheeks, nose wings), which are landmark
indices, not geometry. "Left" is the subject's left (+x in FLAME axes), as in mediapipe.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FACE = 468
IRIS_R = tuple(range(468, 473))   # centre, then 4 points on the iris rim
IRIS_L = tuple(range(473, 478))

MOUTH_CORNER_R, MOUTH_CORNER_L = 61, 291
LIP_UPPER_MID, LIP_LOWER_MID = 13, 14
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
BROW_INNER = {"R": (107, 66, 55, 65), "L": (336, 296, 285, 295)}
BROW_OUTER = {"R": (70, 63, 156, 46, 53), "L": (300, 293, 383, 276, 283)}
BROW_ALL = {"R": (70, 63, 105, 66, 107, 46, 53, 52, 65, 55), "L": (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)}
CHEEK = {"R": (205, 50, 187, 123, 147, 36), "L": (425, 280, 411, 352, 376, 266)}
CHEEK_UPPER = {"R": (117, 118, 119, 100, 101), "L": (346, 347, 348, 329, 330)}
NOSE_WING = {"R": (129, 98, 102, 48, 64, 219), "L": (358, 327, 331, 278, 294, 439)}


def _connections():
    from mediapipe.python.solutions import face_mesh_connections as c

    return c


def chain_loops(edges) -> list[list[int]]:
    """Closed loops (vertex cycles) of an edge set whose vertices all have degree 2."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev][0]
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        loops.append(loop)
    return loops


def chain_open(edges) -> list[int]:
    """The vertex path of an edge set forming one open chain."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    ends = [v for v, n in adj.items() if len(n) == 1]
    path, prev = [min(ends)], None
    while len(path) < len(adj):
        cur = path[-1]
        nxt = [n for n in adj[cur] if n != prev][0]
        prev = cur
        path.append(nxt)
    return path


def brow_edges() -> list[tuple[int, int]]:
    """The segments of both eyebrows' outlines."""
    c = _connections()
    return sorted(c.FACEMESH_LEFT_EYEBROW | c.FACEMESH_RIGHT_EYEBROW)


@lru_cache(maxsize=1)
def topology() -> dict[str, list[int]]:
    """Named loops: face_oval, eye_L, eye_R (lid margins), lips_outer, lips_inner."""
    c = _connections()
    (oval,) = chain_loops(c.FACEMESH_FACE_OVAL)
    (eye_l,) = chain_loops(c.FACEMESH_LEFT_EYE)
    (eye_r,) = chain_loops(c.FACEMESH_RIGHT_EYE)
    lips = chain_loops(c.FACEMESH_LIPS)
    # The outer loop contains the outer mouth corners; the inner loop lies inside it.
    outer = [lp for lp in lips if MOUTH_CORNER_R in lp][0]
    inner = [lp for lp in lips if lp is not outer][0]
    return {"face_oval": oval, "eye_L": eye_l, "eye_R": eye_r, "lips_outer": outer, "lips_inner": inner}


def split_loop(loop: list[int], points: np.ndarray) -> tuple[list[int], list[int], int, int]:
    """Split a closed loop at its extreme-x points into (upper, lower) paths, both ordered by
    increasing x and including both corners; returns (upper, lower, corner_min_x, corner_max_x)."""
    xs = points[loop, 0]
    i0, i1 = int(np.argmin(xs)), int(np.argmax(xs))
    n = len(loop)
    a = [loop[(i0 + k) % n] for k in range((i1 - i0) % n + 1)]
    b = [loop[(i1 + k) % n] for k in range((i0 - i1) % n + 1)][::-1]
    upper, lower = (a, b) if points[a[1:-1], 1].mean() > points[b[1:-1], 1].mean() else (b, a)
    return upper, lower, loop[i0], loop[i1]
