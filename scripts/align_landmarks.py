"""What the photometric alignment's landmark term holds: a video's held-out frames aligned to its
feed-forward start avatar as the default refine preset's first tracking stage aligns them
(`RefineConfig.track_config`, warm-started along the frames) at each given ``w_landmarks``, and
for each the render's L1 against the frames (what the alignment minimises), the mesh's
distance to the detected landmarks (all of them, and the mouth's and eyes' outlines about their
centroids, as the term compares them), its inner-lip gap (FaceMesh 13/14 on the mesh, against
the detected gap) and its jaw.

    python scripts/align_landmarks.py VIDEO [--weights 0,0.003,0.01] [--frames 40]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.camera import project  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.refine.align import align_frames, outline_groups, photometric_error, shape_distance  # noqa: E402
from engine.refine.config import load_refine_config  # noqa: E402
from engine.refine.session import prepare  # noqa: E402
from engine.track.lmk_model import LandmarkModel  # noqa: E402

OPEN_PX = 20.0      # a frame whose detected inner-lip gap is wider than this (512-px pixels) is "open"


def mesh_points(model, params, data, frames, detected: bool) -> np.ndarray:
    """[F, L, 2] the model's landmarks of ``frames`` in the data's pixels."""
    lm = LandmarkModel(model, detected=detected)
    out = []
    with torch.no_grad():
        for t in frames:
            cam = data.cameras[t]
            uv, _ = project(lm(params.frame(t)), cam.K[0, 0].reshape(1),
                            torch.tensor([[cam.height, cam.width]], dtype=torch.float32))
            out.append(uv[0].numpy())
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--weights", default="0,0.003,0.01", help="w_landmarks values, comma-separated")
    ap.add_argument("--frames", type=int, default=40, help="the first this many held-out frames")
    args = ap.parse_args()

    model = load_head_model()
    start, data = prepare(args.video, model, 512)
    frames = [int(t) for t in data.test][: args.frames]
    h, w = data.images.shape[1:3]
    ids = np.asarray(model.lmk_ids)
    detected = data.landmarks[frames][:, ids] * np.array([w, h])                    # [F, L, 2]
    unit = max(w, h) / 512
    upper, lower = list(ids).index(13), list(ids).index(14)
    gap = (detected[:, lower, 1] - detected[:, upper, 1]) / unit
    print(f"{args.video.name}: held-out frames {frames[0]}..{frames[-1]}; detected inner-lip gap "
          f"{gap.min():.1f}..{gap.max():.1f} px (512-px pixels)")
    groups = [torch.as_tensor(g) for g in outline_groups(ids)]
    print(f"{'w_landmarks':>11} {'L1 x1e-3':>8} {'landmark px':>11} {'outline px':>10} {'gap slope':>9} "
          f"{'open: gap diff':>14} {'closed: gap diff':>16} {'jaw (rad)':>9} {'seconds':>7}")
    for weight in [float(x) for x in args.weights.split(",")]:
        t0 = time.time()
        cfg = dataclasses.replace(load_refine_config("default").track_config(), w_landmarks=weight)
        params = align_frames(start, model, data, frames, cfg, warm_start=True)
        fitted = mesh_points(model, params, data, frames, detected=True)
        raw = mesh_points(model, params, data, frames, detected=False)
        err = np.linalg.norm(fitted - detected, axis=-1).mean() / unit
        outline = np.mean([float(shape_distance(torch.from_numpy(a), torch.from_numpy(b), groups).mean())
                           for a, b in zip(fitted, detected.astype(np.float32))]) / unit
        l1 = photometric_error(start, model, data, params, frames, cfg.resolution)
        mesh_gap = (raw[:, lower, 1] - raw[:, upper, 1]) / unit
        slope = np.polyfit(gap, mesh_gap, 1)[0]
        opened = gap > OPEN_PX
        jaw = float(params.jaw[frames, 0].mean())
        print(f"{weight:>11g} {l1 * 1e3:>8.2f} {err:>11.2f} {outline:>10.2f} {slope:>9.3f} "
              f"{np.mean(mesh_gap[opened] - gap[opened]):>+14.2f} {np.mean(mesh_gap[~opened] - gap[~opened]):>+16.2f} "
              f"{jaw:>9.3f} {time.time() - t0:>7.0f}")
    landmark_jaw = float(data.params.jaw[frames, 0].mean())
    print(f"landmark tracker's jaw on these frames: {landmark_jaw:.3f} rad; gap diff = the mesh's inner-lip gap "
          f"minus the detected one, 512-px pixels, on frames whose detected gap is over {OPEN_PX:g} px (open) "
          "or not (closed)")


if __name__ == "__main__":
    main()
