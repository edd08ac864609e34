"""One entry point for every generator: tracked sources -> an animatable avatar.

``generate(PROJECTIVE, ...)`` is the parameter-free stage (the default everywhere);
``generate(GeneratorChoice("network", PATH), ...)`` runs the paper's feed-forward network
(`engine.generator.network`); the registry (`engine.generator.registry`) names them. Both return an object with ``gaussians(params, camera=None)``
(`engine.animate.AnimatedAvatar` or its network subclass) and ``.avatar`` (the bundle-able
`Avatar`) and ``.confidence`` ([N] per slot: how well the sources saw it). Both fit the head
model's outer layer (hair shell and bust, `engine.generator.outer`) to the sources too; the
projective avatar then takes a few photometric steps at the sources' cameras (`polish`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import torch

from engine.animate import AnimatedAvatar
from engine.generator.outer import fit_outer, polish
from engine.generator.projective import Source, projective_gaussians, untrusted
from engine.generator.registry import KINDS, PROJECTIVE, GeneratorChoice  # noqa: F401 - re-exported for callers
from engine.headmodel.base import HeadModel
from engine.types import Avatar

def check_generator(choice: GeneratorChoice, model: HeadModel | None = None) -> None:
    """`GeneratorChoice.check`; with ``model``, also read a checkpoint now (kept for `generate`)
    so one that is not a network for this head model fails before any tracking."""
    choice.check()
    if model is not None and choice.kind == "network":
        _network(choice.checkpoint, model)


_NETWORKS: dict = {}


def _network(checkpoint: Path, model: HeadModel):
    """The loaded network of a checkpoint file, kept while the file is unchanged."""
    from engine.generator.network import load_generator

    p = Path(checkpoint).resolve()
    key = (str(p), p.stat().st_mtime_ns, model.name)
    if key not in _NETWORKS:
        _NETWORKS.clear()
        _NETWORKS[key] = load_generator(p, model)
    return _NETWORKS[key]


def generate(choice: GeneratorChoice, model: HeadModel, sources: Sequence[Source], shape: torch.Tensor,
             outer: bool = True) -> AnimatedAvatar:
    """The avatar of ``sources`` (tracked portraits of one person sharing ``shape`` [S]) by the
    generator ``choice`` names (`engine.generator.registry.KINDS`); ``outer``: with its outer
    layer fitted, else the head page alone (as avatars were before it)."""
    choice.check()
    module, _, name = KINDS[choice.kind].entry.partition(":")
    make = getattr(importlib.import_module(module), name)
    return make(model, list(sources), shape, choice.checkpoint, outer)


def projective_avatar(model: HeadModel, sources: list[Source], shape: torch.Tensor, checkpoint: Path | None,
                      outer: bool) -> AnimatedAvatar:
    """The parameter-free stage: the sources warped into UV and pooled, the outer layer fitted,
    then a few photometric steps at the sources' cameras (`polish`)."""
    host = model.host()         # the warp and the fit are numpy-sized work on the host
    layer = fit_outer(host, sources, shape.cpu()) if outer else None
    uvg, confidence = projective_gaussians(host, sources, shape.cpu())
    animated = AnimatedAvatar(Avatar(uvg, model.name, shape, {"generator": "projective"}, outer=layer), model)
    animated.confidence = animated.slots.gather(confidence[None].to(model.device))[:, 0]
    if layer is None:
        return animated
    return polish(animated, sources, frozen=[untrusted(host, animated.slots.to("cpu"), src) for src in sources])


def network_avatar(model: HeadModel, sources: list[Source], shape: torch.Tensor, checkpoint: Path | None,
                   outer: bool) -> AnimatedAvatar:
    """The paper's trained network (its ``checkpoint``), run on the host; its Gaussians are moved
    to the renderer's device."""
    host = model.host()
    layer = fit_outer(host, sources, shape.cpu()) if outer else None
    animated = _network(Path(checkpoint), host).avatar(host, sources, shape.cpu())
    return animated if layer is None else animated.with_outer(layer)
