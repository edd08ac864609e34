"""How blotchy an avatar's lower lip is: over the lower lip's slots (OpenHead's lip region below
the lips' mean height, 128 at 256²), the mean absolute colour difference between neighbouring
slots, the spread of their brightness, and the share darker than 0.7 of their median brightness.
A closed lower lip painted from a wide-open mouth's tongue and shadowed corners reads high on all
three; a lip of one colour with soft shading reads low.

    python scripts/lip_blotches.py A.savatar [B.savatar ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generator.plain import lip_slots  # noqa: E402
from engine.headmodel.openhead import load_head_model  # noqa: E402
from engine.io.bundle import load_avatar  # noqa: E402
from engine.refine.refiner import total_variation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    args = parser.parse_args()
    model = load_head_model()
    print(f"{'avatar':40s} {'neighbour diff':>14s} {'brightness sd':>13s} {'dark share':>10s}")
    for path in args.avatars:
        avatar = load_avatar(path)
        slots = model.uv_slots(avatar.gaussians.resolution)
        pts = torch.einsum("nk,nkc->nc", slots.bary, model.v_template[model.faces[slots.face]])
        lips = torch.as_tensor(lip_slots(model, slots))
        lower = lips & (pts[:, 1] < pts[lips, 1].mean())
        pairs = slots.neighbours(model.faces)
        pairs = pairs[lower[pairs[:, 0]] & lower[pairs[:, 1]]]
        color = slots.gather(avatar.gaussians.maps()["color"])
        diff = total_variation(color, pairs).mean()
        lum = color[lower].mean(1)
        dark = (lum < 0.7 * lum.median()).float().mean()
        print(f"{path.name:40s} {float(diff):14.4f} {float(lum.std()):13.3f} {float(dark):10.3f}")


if __name__ == "__main__":
    main()
