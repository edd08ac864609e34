"""The plain avatar: an OpenHead painted in flat colours with baked soft shading.

It is what the program shows before any portrait is loaded, and the avatar the tests and
benchmarks use. Regions are found from OpenHead's UV layout (`engine.headmodel.parts`), so
a FLAME head model gets a uniform skin colour.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.path import Path as PolyPath

from engine.binding import UVSlots
from engine.generator.lids import lidded_surface
from engine.headmodel import facemesh as fm
from engine.headmodel import parts
from engine.headmodel.base import HeadModel
from engine.headmodel.build import IRIS_RIM_DEG
from engine.headmodel.rig import vertex_normals
from engine.types import Avatar

UV_RESOLUTION = 256
SKIN = (0.80, 0.60, 0.50)
LIPS = (0.70, 0.38, 0.38)
BROWS = (0.33, 0.24, 0.19)
SCLERA = (0.92, 0.90, 0.87)
IRIS = (0.30, 0.22, 0.15)
PUPIL = (0.03, 0.03, 0.03)
TEETH = (0.93, 0.91, 0.85)
MOUTH_SHADE = 0.5
"""How much light reaches the teeth inside the mouth, against the face's: what a photo's parted
lips show is teeth in the mouth's shadow, never TEETH at full brightness (a white slab)."""
CAVITY = (0.30, 0.08, 0.08)
GUM = (0.62, 0.30, 0.30)
TONGUE = (0.55, 0.22, 0.22)
LIGHT = (-0.35, 0.45, 0.82)


def _in_rect(uv: np.ndarray, rect) -> np.ndarray:
    u0, v0, u1, v1 = rect
    return (uv[:, 0] >= u0 - 0.004) & (uv[:, 0] <= u1 + 0.004) & (uv[:, 1] >= v0 - 0.004) & (uv[:, 1] <= v1 + 0.004)


def _distance_to_edges(p: np.ndarray, pts: np.ndarray, edges) -> np.ndarray:
    """Distance [N] of points [N, 2] to the nearest of the segments ``edges`` between ``pts``."""
    a, b = pts[[e[0] for e in edges]], pts[[e[1] for e in edges]]        # [E, 2]
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1)[None], 0, 1)
    return np.linalg.norm(p[:, None] - (a[None] + t[..., None] * ab[None]), axis=-1).min(1)


def shade(model: HeadModel, slots: UVSlots, verts: np.ndarray) -> np.ndarray:
    """Soft frontal-light shading factor [N] of every slot on the mesh posed as ``verts`` [V, 3]."""
    faces = model.faces.numpy()
    vn = vertex_normals(verts, faces)
    n = np.einsum("nk,nkc->nc", slots.bary.numpy(), vn[faces[slots.face.numpy()]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    light = np.asarray(LIGHT) / np.linalg.norm(LIGHT)
    return 0.62 + 0.38 * np.clip(n @ light, 0, 1)


def slot_uv(slots: UVSlots) -> np.ndarray:
    """Texel-centre UV [N, 2] of every slot."""
    R = slots.resolution
    row, col = slots.texel.numpy() // R, slots.texel.numpy() % R
    return np.stack([(col + 0.5) / R, 1 - (row + 0.5) / R], 1)


def inner_parts(model: HeadModel, slots: UVSlots) -> np.ndarray:
    """[N] bool: the slot lies on an eyeball, the teeth or the mouth cavity (OpenHead's charts
    below the main surface); all False for other head models."""
    if model.charts != "openhead":
        return np.zeros(len(slots), bool)
    return slot_uv(slots)[:, 1] < parts.CAVITY_UPPER[3] + 0.004


def _chart_coords(uv: np.ndarray, rect) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) in [0, 1]: a texel's position across a chart rectangle (u) and along it (v)."""
    u0, v0, u1, v1 = rect
    return np.clip((uv[:, 0] - u0) / (u1 - u0), 0, 1), np.clip((uv[:, 1] - v0) / (v1 - v0), 0, 1)


def teeth_colors(uv: np.ndarray, rect, gum_at_top: bool) -> np.ndarray:
    """[N, 3] colours of a teeth chart's texels: TEETH with a darker gap between neighbouring
    teeth (one per chart column), darker towards the back of the arch, where less light
    reaches, all in the mouth's shade (MOUTH_SHADE), and GUM along the gum line, so a mouth no
    source showed open has teeth, not a slab."""
    a, b = _chart_coords(uv, rect)
    cols = parts.TEETH_COLS
    to_gap = np.abs(a * cols - np.round(a * cols))                      # 0 on a boundary, 0.5 mid-tooth
    gap = np.exp(-(to_gap / 0.12) ** 2)
    back = MOUTH_SHADE * (1 - 0.5 * (2 * a - 1) ** 2) * (1.0 if gum_at_top else 0.7)   # lower teeth: deeper
    c = np.asarray(TEETH)[None] * (back * (1 - 0.3 * gap))[:, None]
    gum_side = b if gum_at_top else 1 - b                               # 1 at the gum line
    w = np.clip((gum_side - 0.75) / 0.2, 0, 1)[:, None]
    return c * (1 - w) + np.asarray(GUM)[None] * back[:, None] * w


def cavity_colors(uv: np.ndarray, part: str) -> np.ndarray:
    """[N, 3] colours of the mouth cavity's ``part`` chart ("upper", "lower" or "back"): CAVITY
    darkening with depth (the tubes' rows run from the lip rim inwards; the back wall is deepest),
    the lower tube with a TONGUE in its middle."""
    rect = {"upper": parts.CAVITY_UPPER, "lower": parts.CAVITY_LOWER, "back": parts.CAVITY_BACK}[part]
    a, b = _chart_coords(uv, rect)
    depth = {"upper": b, "lower": 1 - b, "back": np.ones_like(a)}[part]   # the lower tube's rim is its top edge
    c = np.tile(np.asarray(CAVITY), (len(a), 1))
    if part == "lower":
        w = (np.clip(1 - np.abs(2 * a - 1) / 0.7, 0, 1) * np.clip((depth - 0.15) / 0.3, 0, 1))[:, None]
        c = c * (1 - w) + np.asarray(TONGUE)[None] * w
    return c * (1 - 0.55 * depth)[:, None]


def mouth_interior(model: HeadModel, slots: UVSlots) -> np.ndarray:
    """[N] bool: the slot lies on the teeth or the mouth cavity (the inner parts right of the eyeballs)."""
    return inner_parts(model, slots) & (slot_uv(slots)[:, 0] >= parts.CAVITY_UPPER[0] - 0.004)


def lip_slots(model: HeadModel, slots: UVSlots) -> np.ndarray:
    """[N] bool: the slot lies on the lips (inside FaceMesh's outer lip loop on the face chart);
    all False for head models without OpenHead's charts."""
    if model.charts != "openhead":
        return np.zeros(len(slots), bool)
    uvs = model.uvs.numpy()          # UV vertex i < 468 is landmark i on the face chart
    return PolyPath(uvs[fm.topology()["lips_outer"]]).contains_points(slot_uv(slots))


def plain_colors(model: HeadModel, slots: UVSlots, shaded: bool = True) -> torch.Tensor:
    """Per-slot albedo [N, 3], with soft shading of the rest pose baked in when ``shaded``."""
    uv = slot_uv(slots)
    color = np.tile(np.array(SKIN), (len(slots), 1))
    if model.charts == "openhead":
        uvs = model.uvs.numpy()
        lips = lip_slots(model, slots)
        color[lips] = LIPS
        color[(_distance_to_edges(uv, uvs, fm.brow_edges()) < 0.006) & ~lips] = BROWS
        for cu, cv, r in (parts.EYE_R_DISC, parts.EYE_L_DISC):
            d = np.hypot(uv[:, 0] - cu, uv[:, 1] - cv) / r        # polar angle / cap angle
            angle = d * parts.EYE_CAP_DEG
            eye = d <= 1.02
            color[eye] = SCLERA
            color[eye & (angle < IRIS_RIM_DEG)] = IRIS
            color[eye & (angle < 11)] = PUPIL
        for rect, gum_at_top in ((parts.TEETH_UPPER, True), (parts.TEETH_LOWER, False)):
            m = _in_rect(uv, rect)
            color[m] = teeth_colors(uv[m], rect, gum_at_top)
        for part, rect in (("upper", parts.CAVITY_UPPER), ("lower", parts.CAVITY_LOWER), ("back", parts.CAVITY_BACK)):
            m = _in_rect(uv, rect)
            color[m] = cavity_colors(uv[m], part)
    if shaded:
        color = color * shade(model, slots, model.v_template.numpy())[:, None]
    return torch.from_numpy(color).float()


def plain_avatar(model: HeadModel, resolution: int = UV_RESOLUTION) -> Avatar:
    """The model's neutral shape covered in plain-coloured flat Gaussians (made on the host: an
    `Avatar` is data, moved to the device by `AnimatedAvatar`)."""
    model = model.host()
    slots = model.uv_slots(resolution)
    uvg = lidded_surface(model, slots, model.v_template, plain_colors(model, slots))
    return Avatar(uvg, model.name, torch.zeros(model.n_shape), {"generator": "plain", "head_model": model.name})
