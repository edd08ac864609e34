"""Where the rendered iris is: on `eval tracking`'s clip (the avatar with known gaze), FaceMesh's
iris centre and a photometric one (the darkest iris-sized disc inside FaceMesh's lid outline),
each against the projection of the model's iris landmark (the eyeball's pole), over the frames
whose eyes are open. If both locators agree with each other but not with the pole, the render
shows the iris where the tracker reads it and the gaze error is the render's, not FaceMesh's.

    python scripts/iris_offsets.py [--avatar A.savatar] [--frames 30]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.camera import orbit_camera  # noqa: E402
from engine.eval.tracking import OPEN, closure, known_clip  # noqa: E402
from engine.headmodel import facemesh as fm  # noqa: E402
from engine.track.landmarks import FaceMeshDetector  # noqa: E402
from spatialavatar_app.cmd_shared import Source  # noqa: E402


def dark_disc_centre(rgb: np.ndarray, outline: np.ndarray, radius: float) -> np.ndarray | None:
    """The centre of the darkest disc of ``radius`` px inside the polygon ``outline`` [K, 2]."""
    h, w = rgb.shape[:2]
    x0, y0 = np.clip(np.floor(outline.min(0)).astype(int) - 1, 0, (w, h))
    x1, y1 = np.clip(np.ceil(outline.max(0)).astype(int) + 2, 0, (w, h))
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [np.round((outline - (x0, y0)) * 4).astype(np.int32)], 1, shift=2)
    if inside.sum() < 6:
        return None
    grey = rgb[y0:y1, x0:x1].astype(np.float32).mean(2) / 255
    dark = np.clip(np.percentile(grey[inside > 0], 90) - grey, 0, None) * inside
    disc = np.zeros((int(2 * radius) + 3,) * 2, np.float32)
    cv2.circle(disc, (disc.shape[1] // 2, disc.shape[0] // 2), int(round(radius)), 1, -1)
    score = np.where(inside > 0, cv2.filter2D(dark, -1, disc / disc.sum(), borderType=cv2.BORDER_CONSTANT), 0) ** 4
    if score.sum() <= 0:
        return None
    yy, xx = np.mgrid[0:score.shape[0], 0:score.shape[1]]
    return np.array([(xx * score).sum() / score.sum() + x0 + 0.5, (yy * score).sum() / score.sum() + y0 + 0.5])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avatar", type=Path)
    ap.add_argument("--frames", type=int, default=30)
    args = ap.parse_args()
    animated, model = Source(args.avatar).load()          # on the host, beside FaceMesh
    clip = known_clip(animated, model, args.frames)
    cam = orbit_camera(size=clip.frames.shape[1])
    ids = list(np.asarray(model.lmk_ids))
    loops = fm.topology()
    det = FaceMeshDetector(static_image=True)
    shut = closure(model, clip.truth).max(1)
    fm_err, dark_err, between = [], [], []
    for i, rgb in enumerate(clip.frames):
        if shut[i] >= OPEN:
            continue
        with torch.no_grad():
            lm = model.landmarks(model.vertices(clip.truth.frame(i)))[0]
        uv = cam.pixels(lm).numpy()
        faces = det.detect(rgb)
        if not faces:
            continue
        f = faces[0]
        for side, centre in (("R", fm.IRIS_R[0]), ("L", fm.IRIS_L[0])):
            radius = float(np.mean([np.linalg.norm(f[k, :2] - f[centre, :2]) for k in range(centre + 1, centre + 5)]))
            dark = dark_disc_centre(rgb, f[loops[f"eye_{side}"], :2], radius)
            pole = uv[ids.index(centre)]
            if dark is None:
                continue
            fm_err.append(f[centre, :2] - pole)
            dark_err.append(dark - pole)
            between.append(f[centre, :2] - dark)
    det.close()
    m = lambda e: np.abs(np.asarray(e)).mean(0)  # noqa: E731
    print(f"{len(fm_err)} open eyes on {clip.frames.shape[1]}² frames; mean |x|, |y| in px:")
    print(f"  FaceMesh iris centre - projected pole: {m(fm_err)[0]:.2f}, {m(fm_err)[1]:.2f}")
    print(f"  darkest iris disc    - projected pole: {m(dark_err)[0]:.2f}, {m(dark_err)[1]:.2f}")
    print(f"  FaceMesh iris centre - darkest disc:   {m(between)[0]:.2f}, {m(between)[1]:.2f}")


if __name__ == "__main__":
    main()
