"""The evaluation matte: head and neck only, like the INSTA / SplattingAvatar data the paper
evaluates on: the person segmentation intersected with the dilated silhouette of the tracked
head mesh, so shoulders, torso and the background are excluded. Ground truth and render are
both composited on a constant (black) background through it; metrics cover the full frame."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.camera import project
from engine.types import HeadParams

MATTE_DEFINITION = ("eval matte = (person segmentation > 0.5) AND dilate(silhouette of the tracked head mesh, "
                    "{dilate} px); ground truth and render composited on black through it; metrics over the full frame")


def mesh_silhouette(model: HeadModel, params: HeadParams, focal: float, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] mask (255 inside) of the head mesh posed by ``params`` (one frame), seen by
    the tracker's camera (origin, looking down -z, principal point at the centre)."""
    h, w = size
    model = model.host()            # a numpy polygon fill
    with torch.no_grad():
        verts = model.vertices(params.frame(0).cpu())
        uv, _ = project(verts, torch.tensor([focal]), torch.tensor([[h, w]], dtype=torch.float32))
    tri = np.round(uv[0].numpy()[model.faces.numpy()] * 4).astype(np.int32)     # 2 bits of sub-pixel
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, list(tri), 255, lineType=cv2.LINE_8, shift=2)
    return mask


def eval_matte(person: np.ndarray, silhouette: np.ndarray, dilate_px: int) -> np.ndarray:
    """float32 [H, W] in {0, 1}: person (uint8 or float in [0, 1] or [0, 255]) ∩ dilated silhouette."""
    p = person.astype(np.float32)
    p = p / 255.0 if p.max() > 1.0 else p
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
    return ((p > 0.5) & (cv2.dilate(silhouette, k) > 0)).astype(np.float32)


HEAD_MATTE_DILATE = 15
"""Silhouette dilation of the training mattes, pixels at 512 px (scaled with the image)."""


def head_matte(model: HeadModel, params: HeadParams, person: np.ndarray, focal: float, size: tuple[int, int]
               ) -> np.ndarray:
    """The head-and-neck matte of one frame at ``size`` (`eval_matte` of the person matte and the
    mesh silhouette, dilated by HEAD_MATTE_DILATE px at 512 px, scaled to the frame's longer side)."""
    dilate = max(1, round(HEAD_MATTE_DILATE * max(size) / 512))
    return eval_matte(person, mesh_silhouette(model, params, focal, size), dilate)


PORTRAIT_CUT = 0.6
"""The portrait matte ends this many face heights below the chin."""
CHIN = 152
"""FaceMesh's chin landmark."""
PORTRAIT_MATTE_DEFINITION = ("portrait matte = (person segmentation > 0.5) above a horizontal cut {cut} face heights "
                             "below the chin (face height = vertical extent of the fitted head model's 468 face "
                             "landmarks): head, all hair, ears, neck and the top of the shoulders, not the torso; "
                             "ground truth and render composited on black through it; metrics over the full frame")


def portrait_cut_row(model: HeadModel, params: HeadParams, focal: float, size: tuple[int, int]) -> float:
    """Image row (pixels, may lie outside the frame) of the portrait matte's lower edge for one
    frame: the fitted chin plus PORTRAIT_CUT face heights (`chin_row`)."""
    chin, height = chin_row(model, params, focal, size)
    return chin + PORTRAIT_CUT * height


def chin_row(model: HeadModel, params: HeadParams, focal: float, size: tuple[int, int]) -> tuple[float, float]:
    """(image row of the fitted chin, face height in rows) of one frame: the face height is the
    vertical extent of the fitted landmarks among FaceMesh's 468 face points, the chin the lowest
    of them when the model has no chin landmark."""
    ids, uv = face_points(model, params, focal, size)
    y, face = uv[:, 1], ids
    chin = float(y[face == CHIN][0]) if (face == CHIN).any() else float(y.max())
    return chin, float(y.max() - y.min())


def face_points(model: HeadModel, params: HeadParams, focal: float, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(FaceMesh indices [L], image positions [L, 2] in pixels) of the model's fitted landmarks
    among FaceMesh's 468 face points, for one frame."""
    h, w = size
    model = model.host()
    with torch.no_grad():
        lmk = model.landmarks(model.vertices(params.frame(0).cpu()))
        uv, _ = project(lmk, torch.tensor([focal]), torch.tensor([[h, w]], dtype=torch.float32))
    ids = model.lmk_ids.numpy()
    return ids[ids < 468], uv[0].numpy()[ids < 468]


REGIONS = ("eyes", "mouth")
"""The face regions scored on their own (`region_matte`)."""
REGION_MARGIN = 0.25
REGION_DEFINITION = ("regions: eyes = the box round both eyes' lid margins, mouth = the box round the outer lip "
                     "contour (fitted FaceMesh landmarks), each grown by {margin:.0%} of its width and height on "
                     "every side, inside the portrait matte; metrics over the region's pixels only")


def region_matte(kind: str, model: HeadModel, params: HeadParams, person: np.ndarray, focal: float,
                 size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] in {0, 1}: face region ``kind`` ("eyes" or "mouth", `REGION_DEFINITION`) of one
    frame inside its portrait matte; all zero when the model has none of the region's landmarks."""
    from engine.headmodel.facemesh import topology

    loops = topology()
    want = set(loops["eye_L"]) | set(loops["eye_R"]) if kind == "eyes" else set(loops["lips_outer"])
    ids, uv = face_points(model, params, focal, size)
    pts = uv[np.isin(ids, list(want))]
    h, w = size
    out = np.zeros((h, w), np.float32)
    if len(pts) == 0:
        return out
    lo, hi = pts.min(0), pts.max(0)
    pad = REGION_MARGIN * (hi - lo)
    x0, y0 = np.clip(np.floor(lo - pad).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(hi + pad).astype(int), 0, [w, h])
    out[y0:y1, x0:x1] = 1
    return out * portrait_matte(model, params, person, focal, size)


def portrait_matte(model: HeadModel, params: HeadParams, person: np.ndarray, focal: float,
                   size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W] in {0, 1}: the person segmentation (uint8, or float in [0, 1]) above the
    portrait cut of `portrait_cut_row` (see PORTRAIT_MATTE_DEFINITION)."""
    h, w = size
    p = cv2.resize(person, (w, h), interpolation=cv2.INTER_AREA) if person.shape[:2] != (h, w) else person
    p = p.astype(np.float32)
    p = p / 255.0 if p.max() > 1.0 else p
    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    return ((p > 0.5) & (rows <= portrait_cut_row(model, params, focal, size))).astype(np.float32)


MATTES = ("portrait", "head")
"""The mattes frames are scored and trained in, the headline first."""


def matte_of(kind: str, model: HeadModel, params: HeadParams, person: np.ndarray, focal: float,
             size: tuple[int, int]) -> np.ndarray:
    """float32 [H, W]: the ``kind`` ("portrait" or "head", or a face region of `REGIONS`) matte of one frame."""
    if kind == "portrait":
        return portrait_matte(model, params, person, focal, size)
    if kind == "head":
        return head_matte(model, params, person, focal, size)
    if kind in REGIONS:
        return region_matte(kind, model, params, person, focal, size)
    raise ValueError(f"unknown matte {kind!r}; choose from {', '.join(MATTES + REGIONS)}")
