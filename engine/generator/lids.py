"""The lids' Gaussians end at the lid margins.

The skin's Gaussians are as wide as their texel's footprint (`binding.surface_init`), about
1.4 mm on OpenHead's face at 256², and a splat shows to about 2σ: beside a 7 mm eye opening the
rows along both margins hang over it, painted with the source's lashes and iris, so the eye seen
was mostly that still paint and hardly the eyeball turning behind it (the iris seen moved about
half as far as the gaze turned it). Every generator narrows the Gaussians near a margin to their distance
from it (`lid_width_caps`), for any head model whose landmarks include FaceMesh's eye loops.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.binding import UVSlots
from engine.headmodel import facemesh as fm
from engine.headmodel.base import HeadModel

RIM_SIGMAS = 1.0
"""A lid Gaussian is at most its distance to the lid margin over this wide (σ): its splat fades
out at the margin."""
MIN_RIM_WIDTH = 0.0003
"""The narrowest a lid Gaussian is made (metres): the margin's own row still covers the lid's edge."""


def lid_margins(model: HeadModel, verts: torch.Tensor) -> list[torch.Tensor]:
    """The two eyes' lid-margin loops [K, 3] of the posed or rest mesh ``verts`` [V, 3] (FaceMesh's
    eye loops through the model's landmarks); the eyes whose landmarks the model lacks are left out."""
    ids = list(np.asarray(model.lmk_ids))
    loops = fm.topology()
    lmk = model.landmarks(verts[None])[0]
    return [lmk[[ids.index(i) for i in loops[f"eye_{side}"]]] for side in ("R", "L")
            if all(i in ids for i in loops[f"eye_{side}"])]


def lid_width_caps(model: HeadModel, slots: UVSlots, verts: torch.Tensor) -> torch.Tensor:
    """[N] the widest each slot's Gaussian may be (metres) so that none but the eyeballs' reaches
    over the eye openings of ``verts`` [V, 3]: its distance to the nearest lid margin over
    RIM_SIGMAS (at least MIN_RIM_WIDTH) for the slots of the skin, infinity for the rest and for
    the eyeballs (the slots skinned to the eye joints), which the openings show."""
    caps = torch.full((len(slots),), float("inf"), device=verts.device)
    margins = lid_margins(model, verts)
    if not margins:
        return caps
    face = slots.face.to(verts.device)
    tri = verts[model.faces[face]]                                             # [N, 3, 3]
    p = torch.einsum("nk,nkc->nc", slots.bary.to(verts), tri)
    a = torch.cat([m for m in margins])                                       # segment starts [K, 3]
    b = torch.cat([m.roll(-1, 0) for m in margins])                           # and ends (each loop closed)
    ab = b - a
    t = (((p[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    dist = (p[:, None] - (a[None] + t[..., None] * ab[None])).norm(dim=-1).min(1).values     # [N]
    w = model.weights[model.faces[face]]                                       # [N, 3, J]
    eyeball = w[..., 3:].sum(-1).mean(-1) > 0.5          # joints 3 and on are the eyes (HeadParams.full_pose)
    return torch.where(eyeball, caps, (dist / RIM_SIGMAS).clamp_min(MIN_RIM_WIDTH))
