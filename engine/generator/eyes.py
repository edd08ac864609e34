"""Eyes as eyes: an OpenHead avatar's eyeballs painted as eyes in their own frame.

A portrait shows an eye through the lids, looking wherever the person looked, so the warp of
`engine.generator.projective` gives each eyeball only the strip the lids left open, at the
tracked gaze, and the rest from the plain palette: turned, the eye showed a grey patch beside a
smeared iris, and an iris looking sideways in the photo stayed sideways on the eyeball. Here
every eyeball texel is repainted from its angle to the eyeball's forward pole, which the gaze
rotates: a dark pupil, the iris with a darker limbal ring at its rim, and the sclera, so the
iris is centred at neutral gaze whatever the portrait's, and turns with the gaze sliders and the
driver. The colours are the source's: the iris and the sclera are read from the pixels inside
each eye's lid outline (the fitted FaceMesh lid-margin and iris landmarks projected into the
source), pooled over the sources by how many pixels each shows; an eye no source shows open
keeps the plain palette's.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.binding import UVSlots
from engine.generator.plain import IRIS, PUPIL, SCLERA, inner_parts, slot_uv
from engine.headmodel import facemesh as fm
from engine.headmodel import parts
from engine.headmodel.base import HeadModel
from engine.headmodel.build import IRIS_RIM_DEG
from engine.camera import project

PUPIL_DEG = 11.0
"""Angular radius of the pupil on the eyeball (degrees from the forward pole)."""
LIMBUS_DEG = 6.0
"""Width of the limbal ring, the iris's darker rim, degrees."""
LIMBUS_SHADE = 0.6
"""The iris colour's factor at its rim."""
EDGE_DEG = 1.5
"""Half-width of the soft transitions between pupil, iris and sclera, degrees."""
MIN_PIXELS = 6
"""An eye shows its iris (and its sclera) when at least this many source pixels fall on it."""
EYES = {"R": (parts.EYE_R_DISC, fm.IRIS_R), "L": (parts.EYE_L_DISC, fm.IRIS_L)}


def eyeball_angles(model: HeadModel, slots: UVSlots) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per eye ("R", "L"): (slot mask [N] bool, angle [N] degrees from the eyeball's forward pole)
    of the eyeball's texels; empty for a head model without OpenHead's eyeball charts."""
    if not inner_parts(model, slots).any():
        return {}
    uv = slot_uv(slots)
    out = {}
    for side, ((cu, cv, r), _) in EYES.items():
        d = np.hypot(uv[:, 0] - cu, uv[:, 1] - cv) / r         # polar angle / cap angle
        out[side] = (d <= 1.02, d * parts.EYE_CAP_DEG)
    return out


def eye_colors(model: HeadModel, src) -> dict[str, tuple[np.ndarray, np.ndarray, float, float]]:
    """Per eye: (iris RGB [3], sclera RGB [3] in [0, 1], iris pixels, sclera pixels) read from one
    `Source` inside the eye's lid outline, as fitted; eyes whose landmarks the model lacks are left out."""
    h, w = src.rgb.shape[:2]
    ids = list(np.asarray(model.lmk_ids))
    with torch.no_grad():
        lmk = model.landmarks(model.vertices(src.params))
        uv, _ = project(lmk, torch.tensor([float(src.K[0, 0])]), torch.tensor([[h, w]], dtype=torch.float32))
    uv = uv[0].numpy()
    loops = fm.topology()
    out = {}
    for side, (_, iris) in EYES.items():
        lid = loops[f"eye_{side}"]
        if not all(i in ids for i in (*iris, *lid)):
            continue
        centre = uv[ids.index(iris[0])]
        radius = float(np.mean([np.linalg.norm(uv[ids.index(i)] - centre) for i in iris[1:]]))
        outline = uv[[ids.index(i) for i in lid]]
        # only the outline's bounding box is read: the image may be megapixels, the eye is not
        x0, y0 = np.clip(np.floor(outline.min(0)).astype(int), 0, (w, h))
        x1, y1 = np.clip(np.ceil(outline.max(0)).astype(int) + 1, 0, (w, h))
        opening = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        cv2.fillPoly(opening, [np.round((outline - (x0, y0)) * 4).astype(np.int32)], 1, shift=2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1])
        box = src.rgb[y0:y1, x0:x1]
        iris_px = box[(opening > 0) & (r < 0.7 * radius)].astype(np.float32) / 255
        sclera_px = box[(opening > 0) & (r > 1.15 * radius)].astype(np.float32) / 255
        iris_c = np.median(iris_px, 0) if len(iris_px) else np.asarray(IRIS)
        if len(sclera_px):      # the brighter half: lashes and the lid's shadow darken the rest
            lum = sclera_px.mean(1)
            sclera_c = np.median(sclera_px[lum >= np.median(lum)], 0)
        else:
            sclera_c = np.asarray(SCLERA)
        out[side] = (iris_c, sclera_c, float(len(iris_px)), float(len(sclera_px)))
    return out


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0, 1)
    return t * t * (3 - 2 * t)


def eye_texture(angle: np.ndarray, iris: np.ndarray, sclera: np.ndarray) -> np.ndarray:
    """Colours [N, 3] of eyeball texels at ``angle`` [N] degrees from the pole: pupil, iris with
    its limbal ring, sclera, with soft edges."""
    iris_deg = IRIS_RIM_DEG
    ring = 1 - (1 - LIMBUS_SHADE) * _smoothstep(iris_deg - LIMBUS_DEG, iris_deg, angle)
    c = np.asarray(iris)[None] * ring[:, None]
    pupil = 1 - _smoothstep(PUPIL_DEG - EDGE_DEG, PUPIL_DEG + EDGE_DEG, angle)
    c = c + (np.asarray(PUPIL)[None] - c) * pupil[:, None]
    out = np.asarray(sclera)[None] * _smoothstep(iris_deg - EDGE_DEG, iris_deg + EDGE_DEG, angle)[:, None]
    return out + c * (1 - _smoothstep(iris_deg - EDGE_DEG, iris_deg + EDGE_DEG, angle))[:, None]


def paint_eyes(model: HeadModel, slots: UVSlots, readings: list[dict], color: torch.Tensor) -> torch.Tensor:
    """``color`` [N, 3] with every eyeball texel repainted as an eye (see the module docstring),
    its iris and sclera pooled over the sources' ``readings`` (`eye_colors` of each) by the
    pixels each shows: both eyes take the pooled colours of the two."""
    eyes = eyeball_angles(model, slots)
    if not eyes:
        return color
    iris_sum, iris_n, sclera_sum, sclera_n = np.zeros(3), 0.0, np.zeros(3), 0.0
    for reading in readings:
        for iris, sclera, n_iris, n_sclera in reading.values():
            if n_iris >= MIN_PIXELS:
                iris_sum, iris_n = iris_sum + n_iris * iris, iris_n + n_iris
            if n_sclera >= MIN_PIXELS:
                sclera_sum, sclera_n = sclera_sum + n_sclera * sclera, sclera_n + n_sclera
    iris = iris_sum / iris_n if iris_n else np.asarray(IRIS)
    sclera = sclera_sum / sclera_n if sclera_n else np.asarray(SCLERA)
    out = color.clone()
    for mask, angle in eyes.values():
        out[torch.from_numpy(mask)] = torch.as_tensor(eye_texture(angle[mask], iris, sclera), dtype=out.dtype)
    return out
