"""An avatar on its head model, ready to pose: HeadParams -> world-space Gaussians.

Moving a slider re-runs only this: head model -> binding (paper §2.1). The UV slots are
computed once per avatar.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from engine.binding import Activated, UVSlots, place_activated, pose_slots
from engine.headmodel.base import HeadModel
from engine.residual import ExpressionResidual, add_residual
from engine.types import Avatar, Camera, Gaussians, HeadParams, UVGaussians


class AnimatedAvatar:
    """Binds an `Avatar`'s UV Gaussians to its posed head model."""

    def __init__(self, avatar: Avatar, model: HeadModel) -> None:
        if avatar.head_model != model.name:
            raise ValueError(f"the avatar was made for head model {avatar.head_model!r}, not {model.name!r}")
        self.avatar = avatar
        self.model = model
        self.slots: UVSlots = model.uv_slots(avatar.gaussians.resolution)
        if not torch.equal(self.slots.valid, avatar.gaussians.valid.cpu()):
            raise ValueError("the avatar's valid-texel mask does not match its head model's UV layout")
        base = {k: self.slots.gather(v.to(model.device)).contiguous() for k, v in avatar.gaussians.maps().items()}
        self._residual: ExpressionResidual | None = None
        if avatar.residual is not None:
            self._residual = ExpressionResidual.from_state(avatar.residual, self.slots).requires_grad_(False)
            if self._residual.cond_dim != model.cond_dim:
                raise ValueError(f"the avatar's expression residual takes a {self._residual.cond_dim}-d code; "
                                 f"{model.name} has {model.cond_dim}")
        self._base = base
        # Per-slot attributes activated once rather than on every pose (per expression with a residual).
        self._attrs = Activated.of(**base)
        self._cond: tuple = (None, self._attrs)      # (expression key, activated attributes) of the last pose
        self._outer: tuple | None = None             # (outer layer, its activated attributes)
        if avatar.outer is not None:
            self._bind_outer(avatar.outer)

    def _bind_outer(self, uvg: UVGaussians) -> None:
        outer = self.model.outer()
        if uvg.resolution != outer.slots.resolution or not torch.equal(outer.slots.valid, uvg.valid.cpu()):
            raise ValueError("the avatar's outer layer does not match its head model's outer page")
        attrs = {k: outer.slots.gather(v.to(self.model.device)).contiguous() for k, v in uvg.maps().items()}
        self._outer = (outer, Activated.of(**attrs))

    def with_outer(self, uvg: UVGaussians) -> "AnimatedAvatar":
        """This avatar with ``uvg`` as its outer layer (hair shell and bust); returns itself."""
        self._bind_outer(uvg)
        self.avatar = replace(self.avatar, outer=uvg)
        return self

    @property
    def outer_layer(self):
        """(the head model's `OuterLayer`, this avatar's activated outer attributes), or None."""
        return self._outer

    def outer_gaussians(self, params: HeadParams) -> Gaussians | None:
        """World-space Gaussians of the outer layer for frame 0 of ``params`` (None without one)."""
        if self._outer is None:
            return None
        outer, attrs = self._outer
        p = params.frame(0).to(self.model.device)
        if torch.is_grad_enabled() and p.requires_grad:
            # Differentiable in the pose (the photometric alignment): each slot's frame is the
            # rigid motion of its rest frame, one rotation per joint, not a frame per triangle.
            return place_activated(outer.slot_frames(self.model, p), attrs)
        return pose_slots(outer.slots, outer.pose(self.model, p)[0], outer.faces, attrs)

    def _with_outer(self, g: Gaussians, params: HeadParams) -> Gaussians:
        o = self.outer_gaussians(params)
        return g if o is None else concat(g, o)

    def activated(self, cond: Tensor) -> Activated:
        """The per-slot attributes for the expression code ``cond`` [E+12] (`HeadParams.condition`):
        the avatar's own, plus its expression residual if it has one (differentiable in ``cond``
        when that requires grad; otherwise the last expression's are reused)."""
        if self._residual is None:
            return self._attrs
        if cond.requires_grad:
            return Activated.of(**add_residual(self._base, self._residual(cond)))
        key = cond.detach().cpu().numpy().tobytes()
        if self._cond[0] != key:
            with torch.no_grad():
                self._cond = (key, Activated.of(**add_residual(self._base, self._residual(cond))))
        return self._cond[1]

    def neutral(self) -> HeadParams:
        """The avatar's own shape, neutral expression and pose."""
        p = self.model.neutral()
        return HeadParams(self.avatar.shape[None].to(p.shape), p.expr, p.rotation, p.neck, p.jaw, p.eyes, p.translation)

    def gaussians(self, params: HeadParams, camera: Camera | None = None) -> Gaussians:
        """World-space Gaussians of frame 0 of ``params``, the outer layer included. Differentiable
        in ``params`` (expression residual included) when they require a gradient. ``camera`` is
        for avatars whose Gaussians depend on the view (a network avatar's view-conditioned heads);
        ignored here."""
        p = params.frame(0).to(self.model.device)       # trackers pose on the host
        verts = self.model.vertices(p)[0]
        return self._with_outer(pose_slots(self.slots, verts, self.model.faces, self.activated(p.condition()[0])), p)


class StaticScene:
    """World-space Gaussians that do not move (an opened ``.ply``): same interface as
    `AnimatedAvatar` for display, with no avatar and no head-model binding."""

    avatar = None

    def __init__(self, gaussians: Gaussians, model: HeadModel) -> None:
        self.model = model
        self._gaussians = gaussians

    def neutral(self) -> HeadParams:
        return self.model.neutral()

    def gaussians(self, params: HeadParams, camera: Camera | None = None) -> Gaussians:
        return self._gaussians


def concat(*parts: Gaussians) -> Gaussians:
    """One set of Gaussians holding ``parts`` in order."""
    return Gaussians(*(torch.cat([getattr(g, f) for g in parts]) for f in ("means", "quats", "scales", "opacities", "colors")))
