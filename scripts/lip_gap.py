"""How far a refined avatar's mouth opens on its held-out frames, three ways: FaceMesh's inner-lip
gap (points 13 and 14) on the real frame, the same on the avatar's render, and the gap between
the mesh's own inner-lip points (the head model's landmarks without the closed-mouth offsets).
Each is fitted as a line against the real frame's gap; a render gap short of the mesh's says the
Gaussians cover the opening, a mesh gap short of the frame's says the tracking closed it.

    python scripts/lip_gap.py AVATAR VIDEO [--tracking T.tracking.npz | --landmark-tracking]

The tracking is the one `eval refine` scores with (`engine.refine.session.tracking_of`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.animate import AnimatedAvatar  # noqa: E402
from engine.camera import project  # noqa: E402
from engine.eval.refined import EVAL_SIDE  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.io import load_avatar  # noqa: E402
from engine.refine.session import load_tracking, prepare, tracking_of  # noqa: E402
from engine.render.select import select  # noqa: E402
from engine.track.landmarks import FaceMeshDetector  # noqa: E402
from engine.track.lmk_model import LandmarkModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("avatar", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--tracking", type=Path, default=None)
    ap.add_argument("--landmark-tracking", action="store_true", help="the landmark tracker's parameters as they are")
    args = ap.parse_args()

    model = load_head_model()
    avatar = load_avatar(args.avatar)
    _, data = prepare(args.video, model, EVAL_SIDE, avatar)
    path = None if args.landmark_tracking else tracking_of(args.avatar, args.tracking)
    if path is not None:
        data = load_tracking(path, data, model)
    animated = AnimatedAvatar(avatar, model)
    renderer = select(model.device)
    mesh = LandmarkModel(model, detected=False)
    ids = list(np.asarray(model.lmk_ids))
    upper, lower = ids.index(13), ids.index(14)
    unit = max(data.images.shape[1:3]) / 512
    rows = []
    detector = FaceMeshDetector(static_image=True)
    try:
        for t in data.test:
            p = dataclasses.replace(data.params.frame(int(t)), shape=avatar.shape[None])
            cam = data.cameras[int(t)]
            with torch.no_grad():
                rgb = renderer.render(animated.gaussians(p), cam).rgb.clamp(0, 1)
                uv, _ = project(mesh(p), cam.K[0, 0].reshape(1), torch.tensor([[cam.height, cam.width]]).float())
            real = detector.detect(data.images[int(t)])
            render = detector.detect((rgb.numpy() * 255 + 0.5).astype(np.uint8))
            if real and render:
                rows.append([real[0][14, 1] - real[0][13, 1], render[0][14, 1] - render[0][13, 1],
                             float(uv[0, lower, 1] - uv[0, upper, 1])])
    finally:
        detector.close()
    gaps = np.array(rows) / unit
    print(f"{args.avatar.name} on {args.video.name}, {len(gaps)} held-out frames read on both, tracking: "
          f"{path if path is not None else 'the landmark tracker'}; inner-lip gap, 512-px pixels")
    wide = gaps[:, 0] >= np.percentile(gaps[:, 0], 75)
    print(f"{'':<8} {'line against the frame':>24} {'r':>6} {'mean diff':>9} {'widest quarter':>14}")
    print(f"{'frame':<8} {'':>24} {'':>6} {'':>9} {gaps[wide, 0].mean():>14.2f}")
    for name, c in (("render", 1), ("mesh", 2)):
        k, b = np.polyfit(gaps[:, 0], gaps[:, c], 1)
        r = np.corrcoef(gaps[:, 0], gaps[:, c])[0, 1]
        print(f"{name:<8} {f'{k:.3f} x frame {b:+.2f}':>24} {r:>6.3f} {np.mean(gaps[:, c] - gaps[:, 0]):>+9.2f} "
              f"{gaps[wide, c].mean():>14.2f}")


if __name__ == "__main__":
    main()
