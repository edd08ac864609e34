"""The cross-reenactment check: drive an avatar with another person's video in relative and
absolute mode (`drive --side-by-side`), then compare the expression our tracker reads from the
driver frame with the one it reads from the rendered avatar (AED-style: mean |Δ| of expr + jaw,
each image fitted on its own; `engine.metrics.face`), and the head pose (APD-style).

    python scripts/drive_aed.py AVATAR.savatar DRIVER.mp4 OUT_DIR [--frames 150] [--samples 15]

Writes OUT_DIR/{relative,absolute}.mp4 (driver | avatar) and prints a table."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("avatar", type=Path)
    ap.add_argument("driver", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--samples", type=int, default=15)
    a = ap.parse_args()

    from engine.drive.drive import drive_video
    from engine.drive.transfer import TransferConfig
    from engine.headmodel.openhead import load_head_model
    from engine.io import load_avatar
    from engine.io.media import VideoReader
    from engine.metrics.face import FaceReader, aed, apd, mean_of

    model = load_head_model()
    avatar = load_avatar(a.avatar)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with FaceReader(model) as faces:
        for mode in ("relative", "absolute"):
            out = a.out / f"{mode}.mp4"
            drive_video(avatar, model, a.driver, out, transfer=TransferConfig(relative=mode == "relative"), size=256,
                        side_by_side_driver=True, max_frames=a.frames)
            with VideoReader(out) as video:
                frames = list(video)
            pick = np.linspace(len(frames) // 10, len(frames) - 1, a.samples).round().astype(int)
            e, p = [], []
            for i in pick:
                both = frames[i]
                w = both.shape[1] - both.shape[0]                    # driver | avatar (square)
                d, r = faces.read(np.ascontiguousarray(both[:, :w])), faces.read(np.ascontiguousarray(both[:, w:]))
                e.append(aed(d.expression if d else None, r.expression if r else None))
                p.append(apd(d.pose if d else None, r.pose if r else None))
            (me, n), (mp, _) = mean_of(e), mean_of(p)
            rows.append((mode, me, mp, n))
            print(f"{mode}: wrote {out}", flush=True)
    print(f"{'mode':<9} {'AED':>7} {'APD':>7} {'frames':>6}")
    for mode, me, mp, n in rows:
        print(f"{mode:<9} {me:7.4f} {mp:7.4f} {n:>6}")
    print("AED: mean |Δ| of concat(expr, jaw) fitted by our tracker to the driver frame and to the rendered avatar; "
          "APD: the same for the head rotation (rad); lower = the avatar shows more of the driver's expression/pose")


if __name__ == "__main__":
    main()
