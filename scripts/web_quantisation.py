"""What the web page's quantisation costs: the default avatar rendered natively with its float
attributes, against the same with one attribute stored as the page stores it (and with all of
them), PSNR inside the avatar's alpha, front and turned views.

    python scripts/web_quantisation.py [--avatar A.savatar]
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
from engine.binding import Activated, pose_slots  # noqa: E402
from engine.camera import orbit_camera  # noqa: E402
from engine.expressions import apply_expressions  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.render.select import select  # noqa: E402
from engine.service import open_avatar  # noqa: E402


def f16(t):
    return t.half().float()


def u8(t):
    return torch.round(t.clamp(0, 1) * 255) / 255


STORES = {  # attribute -> how the page stores it
    "local position (float16)": lambda a: dataclasses.replace(a, local_position=f16(a.local_position)),
    "rotation (float16)": lambda a: dataclasses.replace(a, unit_quat=torch.nn.functional.normalize(f16(a.unit_quat), dim=-1)),
    "scale (float16 log)": lambda a: dataclasses.replace(a, rel_scale=torch.exp(f16(torch.log(a.rel_scale)))),
    "colour (8 bits)": lambda a: dataclasses.replace(a, color=u8(a.color)),
    "opacity (8 bits)": lambda a: dataclasses.replace(a, opacity=u8(a.opacity)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avatar", type=Path, help="a .savatar (default: the built-in avatar)")
    args = ap.parse_args()
    model = load_head_model()
    animated = AnimatedAvatar(open_avatar(args.avatar, model), model)
    params = apply_expressions(animated.neutral(), model, {"jawOpen": 0.3, "mouthSmile_L": 0.5, "mouthSmile_R": 0.5})
    verts = model.vertices(params)[0]
    base = animated.activated(params.condition()[0])
    outer, oa = animated.outer_layer
    renderer = select(model.device)

    def render(head: Activated, out: Activated, yaw: float):
        with torch.no_grad():
            g = pose_slots(animated.slots, verts, model.faces, head)
            o = pose_slots(outer.slots, outer.pose(model, params)[0], outer.faces, out)
            from engine.animate import concat

            return renderer.render(concat(g, o), orbit_camera(yaw, size=512))

    def psnr(f, ref) -> float:
        inside = ref.alpha > 0.5
        mse = ((f.rgb - ref.rgb)[inside] ** 2).mean().item()
        return 10 * np.log10(1 / max(mse, 1e-12))

    print(f"{'stored as the page stores it':<30s} {'front dB':>9s} {'35° dB':>8s}")
    refs = {yaw: render(base, oa, yaw) for yaw in (0.0, 35.0)}
    everything = (lambda a: a)
    for name, store in STORES.items():
        print(f"{name:<30s} " + " ".join(f"{psnr(render(store(base), store(oa), y), r):>8.2f}" for y, r in refs.items()))
        everything = (lambda f, g: (lambda a: g(f(a))))(everything, store)
    print(f"{'all of them':<30s} " + " ".join(f"{psnr(render(everything(base), everything(oa), y), r):>8.2f}"
                                              for y, r in refs.items()))
    print("PSNR against the float attributes inside the avatar's alpha (> 0.5), 512², native renderer; the "
          "outer layer's positions stay float32; the blendshapes' float16 is not in these rows")


if __name__ == "__main__":
    main()
