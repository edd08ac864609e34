"""Overlays of a fitted head on its input: the front-facing mesh wireframe, the fitted
feature contours (red) and the detected landmarks (green)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.track.fit import project
from engine.types import HeadParams


def _contour_edges() -> list[tuple[int, int]]:
    from mediapipe.python.solutions import face_mesh_connections as c

    return sorted(c.FACEMESH_CONTOURS | c.FACEMESH_IRISES)


def draw_overlay(rgb: np.ndarray, model: HeadModel, params: HeadParams, K: np.ndarray,
                 detected: np.ndarray | None, fitted: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] image of frame 0 of ``params`` drawn over ``rgb``.
    detected, fitted: [478, 2] pixels (detected may be None or nan when the face was lost)."""
    h, w = rgb.shape[:2]
    out = rgb.copy()
    with torch.no_grad():
        verts = model.vertices(params.frame(0))[0]
        uv, z = project(verts[None], torch.tensor([float(K[0, 0])]), torch.tensor([[h, w]], dtype=torch.float32))
    uv, z = uv[0].numpy(), z[0].numpy()
    f = model.faces.numpy()
    a, b, c = uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]]
    facing = ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) < 0   # counter-clockwise in 3D, y flipped
    lines = np.concatenate([np.stack([a, b], 1), np.stack([b, c], 1), np.stack([c, a], 1)])[np.tile(facing, 3)]
    wire = out.copy()
    cv2.polylines(wire, np.round(lines * 4).astype(np.int32), False, (255, 255, 255), 1, cv2.LINE_AA, shift=2)
    out = cv2.addWeighted(wire, 0.35, out, 0.65, 0)
    thick = max(1, round(max(h, w) / 400))
    for i, j in _contour_edges():
        p, q = fitted[i], fitted[j]
        if not (np.isfinite(p).all() and np.isfinite(q).all()):   # a head model without these landmarks
            continue
        cv2.line(out, tuple(np.round(p * 4).astype(int)), tuple(np.round(q * 4).astype(int)), (255, 40, 40), thick,
                 cv2.LINE_AA, shift=2)
    if detected is not None and np.isfinite(detected).all():
        for p in detected:
            cv2.circle(out, tuple(np.round(p * 4).astype(int)), 4 * thick, (40, 255, 40), -1, cv2.LINE_AA, shift=2)
    return out
