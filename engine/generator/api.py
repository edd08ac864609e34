"""One entry point for every generator: tracked sources -> an animatable avatar.

``generate("projective", ...)`` is the parameter-free stage (the default everywhere);
``generate("network", ..., checkpoint=PATH)`` runs the paper's feed-forward network
(`engine.generator.network`). Both return an object with ``gaussians(params, camera=None)``
(`engine.animate.AnimatedAvatar` or its network subclass) and ``.avatar`` (the bundle-able
`Avatar`) and ``.confidence`` ([N] per slot: how well the sources saw it). Both fit the head
model's outer layer (hair shell and bust, `engine.generator.outer`) to the sources too; the
projective avatar then takes a few photometric steps at the sources' cameras (`polish`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from engine.animate import AnimatedAvatar
from engine.generator.outer import fit_outer, polish
from engine.generator.projective import Source, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.types import Avatar

GENERATORS = ("projective", "network")


def check_generator(kind: str, checkpoint: Path | None, model: HeadModel | None = None) -> None:
    """Raise ValueError for an unknown generator, or the network one without a checkpoint file
    (before anything slow runs); with ``model``, also when the checkpoint is not a network for it
    (it is read now, and kept for `generate`)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATORS)}")
    if kind == "network" and checkpoint is None:
        raise ValueError("the network generator needs a checkpoint (--checkpoint PATH, a file written by "
                         "`python main.py train`; docs/training.md)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"checkpoint {checkpoint} does not exist")
    if model is not None and kind == "network":
        _network(checkpoint, model)


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


def generate(kind: str, model: HeadModel, sources: Sequence[Source], shape: torch.Tensor,
             checkpoint: Path | None = None, outer: bool = True) -> AnimatedAvatar:
    """The avatar of ``sources`` (tracked portraits of one person sharing ``shape`` [S]);
    ``outer``: with its outer layer fitted, else the head page alone (as avatars were before it)."""
    check_generator(kind, checkpoint)
    host = model.host()         # the warp and the fit are numpy-sized work on the host
    outer = fit_outer(host, list(sources), shape.cpu()) if outer else None
    if kind == "projective":
        uvg, confidence = projective_gaussians(host, list(sources), shape.cpu())
        animated = AnimatedAvatar(Avatar(uvg, model.name, shape, {"generator": "projective"}, outer=outer), model)
        animated.confidence = animated.slots.gather(confidence[None].to(model.device))[:, 0]
        return animated if outer is None else polish(animated, list(sources))
    # the network runs on the host; its Gaussians are moved to the renderer's device
    animated = _network(Path(checkpoint), host).avatar(host, list(sources), shape.cpu())
    return animated if outer is None else animated.with_outer(outer)
