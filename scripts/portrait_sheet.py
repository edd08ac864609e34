"""A contact sheet of portraits' K = 1 avatars: yaw -60/-35/0/35/60, smile and jawOpen, each
portrait's avatar without its outer layer (the head page only) above the same avatar with it.

    python scripts/portrait_sheet.py OUT.png IMAGE...

Columns: the portrait, then the seven views; rows: per portrait "head only", "with outer".
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIEWS = ((-60, {}), (-35, {}), (0, {}), (35, {}), (60, {}), (0, {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}),
         (0, {"jawOpen": 0.8}))
TILE = 160


def main() -> None:
    from engine.animate import AnimatedAvatar
    from engine.expressions import apply_expressions
    from engine.generator.api import PROJECTIVE, generate
    from engine.headmodel.openhead import load_head_model
    from engine.io.media import read_image
    from engine.render.turntable import render_array
    from engine.track.tracker import track_portraits

    out, paths = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    model = load_head_model()
    rows = []
    for path in paths:
        tracked = track_portraits([path], model)
        image = read_image(path)
        full = generate(PROJECTIVE, model, [tracked.source(0, image)],
                        tracked.params.shape[0])
        bald = AnimatedAvatar(replace(full.avatar, outer=None), model)
        h, w = image.shape[:2]
        s = TILE / max(h, w)
        thumb = np.full((TILE, TILE, 3), 255, np.uint8)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        thumb[:small.shape[0], :small.shape[1]] = small
        cv2.putText(thumb, path.stem[:18], (2, TILE - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 0, 0), 1)
        for label, avatar in (("head only", bald), ("with outer", full)):
            tiles = [thumb if label == "head only" else np.full_like(thumb, 255)]
            for yaw, weights in VIEWS:
                params = apply_expressions(avatar.neutral(), model, weights)
                tiles.append(render_array(avatar, params, size=TILE, view_yaw=yaw))
            cv2.putText(tiles[1], label, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
            rows.append(np.concatenate(tiles, 1))
        print(f"{path.name}: done", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, 0)[..., ::-1])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
