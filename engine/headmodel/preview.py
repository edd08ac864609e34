"""A contact sheet of a head model's rig: neutral, jawOpen, every expression, head poses.

    python main.py headmodel --sheet openhead.png

Each tile renders the plain avatar with shading recomputed on the posed mesh, so a
blendshape's change of shape shows as a change of light, not only of outline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.binding import bind
from engine.generator.plain import plain_avatar, plain_colors, shade
from engine.headmodel.base import HeadModel, HeadModelData
from engine.render.reference import ReferenceRenderer
from engine.types import Camera, HeadParams


def sheet_poses(model: HeadModel) -> list[tuple[str, HeadParams]]:
    """(label, params) of every tile: neutral, jawOpen, each expression at 1, three head poses."""
    out = [("neutral", model.neutral())]
    p = model.neutral()
    out.append(("jawOpen (jaw 0.35 rad)", HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw + torch.tensor([[0.35, 0, 0]]), p.eyes, p.translation)))
    for i, name in enumerate(model.expr_names):
        e = p.expr.clone()
        e[0, i] = 1.0
        out.append((name, HeadParams(p.shape, e, p.rotation, p.neck, p.jaw, p.eyes, p.translation)))
    for label, rot, neck in (("yaw 35° (root)", [0, 0.61, 0], [0, 0, 0]), ("pitch -20° (neck)", [0, 0, 0], [-0.35, 0, 0]),
                             ("roll 15° + eyes left", [0, 0, 0.26], [0, 0, 0])):
        eyes = torch.tensor([[0, 0.3, 0, 0, 0.3, 0]]) if "eyes" in label else p.eyes
        out.append((label, HeadParams(p.shape, p.expr, torch.tensor([rot], dtype=torch.float32), torch.tensor([neck], dtype=torch.float32),
                                      p.jaw, eyes, p.translation)))
    return out


def contact_sheet(data: HeadModelData, path: Path, tile: int = 224, cols: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    model = HeadModel(data)
    avatar = plain_avatar(model)
    slots = model.uv_slots(avatar.gaussians.resolution)
    albedo = plain_colors(model, slots, shaded=False)
    cam = Camera.look_at((0.0, 0.0, 0.75), (0.0, 0.0, 0.0), fov_y_deg=12.5, width=tile, height=tile)
    renderer = ReferenceRenderer()
    tiles = sheet_poses(model)
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.35))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, params) in zip(axes.ravel(), tqdm(tiles, desc="contact sheet")):
        verts = model.vertices(params)[0]
        g = bind(avatar.gaussians, slots, verts, model.faces)
        colors = albedo * torch.from_numpy(shade(model, slots, verts.numpy())).float()[:, None]
        g = type(g)(g.means, g.quats, g.scales, g.opacities, colors.clamp(0, 1))
        with torch.no_grad():
            frame = renderer.render(g, cam)
        ax.imshow(frame.to_uint8())
        ax.set_title(label, fontsize=8)
    fig.suptitle(f"{data.name}: {len(data.v_template)} vertices, {len(data.faces)} faces, "
                 f"{data.n_expr} expressions, {len(slots)} Gaussian slots at {slots.resolution}²", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
