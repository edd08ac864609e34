"""Self-reenactment strips of the frames that test the eyes and the mouth: the K = 1 avatar of a
video's frame 0 (as `eval ff` builds it) beside the real frame, at the held-out frames where the
person looks furthest to either side, closes the eyes most and opens the mouth widest (FaceMesh's
reading of the real frame, `engine.metrics.face.face_signals`). Each row: real | avatar, cropped
round the face.

    python scripts/face_strips.py VIDEO OUT.png [--targets 40]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.eval.feedforward import build, held_out_targets, load_clip  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.metrics.face import FaceReader, face_signals  # noqa: E402
from engine.render.select import select  # noqa: E402


def pick(signals: dict[int, np.ndarray]) -> list[tuple[str, int]]:
    """(what, frame) of the frames furthest along each signal."""
    t = list(signals)
    s = np.stack([signals[i] for i in t])
    return [("looks to one side", t[int(np.argmin(s[:, 0]))]), ("looks to the other", t[int(np.argmax(s[:, 0]))]),
            ("eyes most closed", t[int(np.argmin(s[:, 2]))]), ("mouth widest", t[int(np.argmax(s[:, 1]))])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--targets", type=int, default=40)
    args = ap.parse_args()
    from PIL import Image

    model = load_head_model()
    clip = load_clip(args.video, model, ks=(1,), n_targets=args.targets)
    reader = FaceReader()
    signals = {}
    for t in held_out_targets(clip, args.targets):
        face = reader.read(clip.image(t, clip.camera(t)))
        if face is not None:
            signals[t] = face_signals(face)
    reader.close()
    animated = build(clip, model, 1)
    renderer = select(model.device)
    rows = []
    for what, t in pick(signals):
        cam = clip.camera(t)
        real = clip.image(t, cam)
        with torch.no_grad():
            frame = renderer.render(animated.gaussians(clip.tracked.params.frame(t), camera=cam), cam)
        fake = frame.to_uint8((0.0, 0.0, 0.0))
        pts = clip.tracked.landmarks[t] * (cam.width / clip.tracked.image_size[t][1])
        pts = pts[np.isfinite(pts).all(1)]
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.6 * max(x1 - x0, y1 - y0)
        box = [int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half)]
        crops = [Image.fromarray(img).crop(box).resize((256, 256)) for img in (real, fake)]
        row = Image.new("RGB", (512, 256))
        row.paste(crops[0], (0, 0))
        row.paste(crops[1], (256, 0))
        rows.append(row)
        print(f"frame {t}: {what} (iris offset {signals[t][0]:+.3f}, mouth {signals[t][1]:.3f}, "
              f"eyes {signals[t][2]:.3f} of their widths)")
    sheet = Image.new("RGB", (512, 256 * len(rows)))
    for i, row in enumerate(rows):
        sheet.paste(row, (0, 256 * i))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
