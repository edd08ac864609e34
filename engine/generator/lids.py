"""The lids' Gaussians end at the lid margins.

The skin's Gaussians are as wide as their texel's footprint (`binding.surface_init`), about
1.4 mm on OpenHead's face at 256², and a splat shows to about 2σ: beside a 7 mm eye opening the
rows along both margins would hang over it, painted with the source's lashes and iris, and the
eye seen would be mostly that still paint, not the eyeball turning behind it. Every generator
narrows the Gaussians near a margin to their distance from it (`lid_width_caps`), for any head
model whose landmarks include FaceMesh's eye loops: they lay their Gaussians out with
`lidded_surface`.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.binding import UVGaussians, UVSlots, surface_init
from engine.headmodel import facemesh as fm
from engine.headmodel.base import HeadModel

RIM_SIGMAS = 1.0
"""A lid Gaussian is at most its distance to the lid margin over this wide (σ): its splat fades
out at the margin."""
LASH_OVERHANG = 0.0006
"""The upper lid's Gaussians may reach this much further (metres), as its lashes do: a closed
eye's margins meet, and splats that all stopped at them would leave a seam the eyeball shows through."""
MIN_RIM_WIDTH = 0.0003
"""The narrowest a lid Gaussian is made (metres): the margin's own row still covers the lid's edge."""


def lid_margins(model: HeadModel, verts: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per eye, the (upper, lower) lid margins [K, 3] of the posed or rest mesh ``verts`` [V, 3],
    each from corner to corner (FaceMesh's eye loops through the model's landmarks); the eyes
    whose landmarks the model lacks are left out."""
    ids = list(np.asarray(model.lmk_ids))
    loops = fm.topology()
    lmk = model.landmarks(verts[None])[0]
    out = []
    for side in ("R", "L"):
        loop = loops[f"eye_{side}"]
        if not all(i in ids for i in loop):
            continue
        points = np.zeros((max(loop) + 1, 3))
        points[loop] = lmk[[ids.index(i) for i in loop]].detach().cpu().numpy()
        upper, lower, _, _ = fm.split_loop(loop, points)
        out.append(tuple(lmk[[ids.index(i) for i in path]] for path in (upper, lower)))
    return out


def _distance(points: torch.Tensor, paths: list[torch.Tensor]) -> torch.Tensor:
    """[N] distance of each point [N, 3] to the nearest of the polylines ``paths`` ([K, 3] each)."""
    a = torch.cat([p[:-1] for p in paths])                                     # segment starts
    ab = torch.cat([p[1:] for p in paths]) - a
    t = (((points[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (points[:, None] - (a[None] + t[..., None] * ab[None])).norm(dim=-1).min(1).values


def lid_width_caps(model: HeadModel, slots: UVSlots, verts: torch.Tensor) -> torch.Tensor:
    """[N] the widest each slot's Gaussian may be (metres) so that the skin's do not hang over the
    eye openings of ``verts`` [V, 3]: its distance to the nearest lower lid margin, or to the
    nearest upper one plus LASH_OVERHANG, whichever is less, over RIM_SIGMAS (at least
    MIN_RIM_WIDTH); infinity for the eyeballs (the slots skinned to the eye joints), which the
    openings show."""
    caps = torch.full((len(slots),), float("inf"), device=verts.device)
    margins = lid_margins(model, verts)
    if not margins:
        return caps
    face = slots.face.to(verts.device)
    p = torch.einsum("nk,nkc->nc", slots.bary.to(verts), verts[model.faces[face]])
    reach = torch.minimum(_distance(p, [up for up, _ in margins]) + LASH_OVERHANG,
                          _distance(p, [low for _, low in margins]))
    return torch.where(eyeball_slots(model, slots), caps, (reach / RIM_SIGMAS).clamp_min(MIN_RIM_WIDTH))


def eyeball_slots(model: HeadModel, slots: UVSlots) -> torch.Tensor:
    """[N] bool: the slot's triangle is skinned to the eye joints (3 and on, `HeadParams.full_pose`)."""
    w = model.weights[model.faces[slots.face.to(model.weights.device)]]     # [N, 3, J]
    return w[..., 3:].sum(-1).mean(-1) > 0.5


def lidded_surface(model: HeadModel, slots: UVSlots, rest: torch.Tensor, colors: torch.Tensor,
                   opacity: float | torch.Tensor = 0.99) -> UVGaussians:
    """`binding.surface_init` on the rest mesh ``rest`` [V, 3] with the lids' Gaussians ending at
    their margins (`lid_width_caps`): the Gaussians every generator starts from."""
    caps = lid_width_caps(model, slots, rest)
    return surface_init(slots, rest, model.faces, colors, opacity=opacity, max_width=caps)
