"""The evaluation matte: head and neck only, like the INSTA / SplattingAvatar data the paper
evaluates on: the person segmentation intersected with the dilated silhouette of the tracked
head mesh, so shoulders, torso and the background are excluded. Ground truth and render are
both composited on a constant (black) background through it; metrics cover the full frame."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.headmodel.base import HeadModel
from engine.track.fit import project
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
    h, w = size
    model = model.host()
    with torch.no_grad():
        lmk = model.landmarks(model.vertices(params.frame(0).cpu()))
        uv, _ = project(lmk, torch.tensor([focal]), torch.tensor([[h, w]], dtype=torch.float32))
    ids = model.lmk_ids.numpy()
    y = uv[0, :, 1].numpy()[ids < 468]
    face = ids[ids < 468]
    chin = float(y[face == CHIN][0]) if (face == CHIN).any() else float(y.max())
    return chin, float(y.max() - y.min())


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
    """float32 [H, W]: the ``kind`` ("portrait" or "head") matte of one frame."""
    if kind == "portrait":
        return portrait_matte(model, params, person, focal, size)
    if kind == "head":
        return head_matte(model, params, person, focal, size)
    raise ValueError(f"unknown matte {kind!r}; choose from {', '.join(MATTES)}")
