"""One entry point for every generator: tracked sources -> an animatable avatar.

``generate("projective", ...)`` is the parameter-free stage (the default everywhere);
``generate("network", ..., checkpoint=PATH)`` runs the paper's feed-forward network
(`engine.generator.network`). Both return an object with ``gaussians(params, camera=None)``
(`engine.animate.AnimatedAvatar` or its network subclass) and ``.avatar`` (the bundle-able
`Avatar`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from engine.animate import AnimatedAvatar
from engine.generator.projective import Source, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.types import Avatar

GENERATORS = ("projective", "network")


def generate(kind: str, model: HeadModel, sources: Sequence[Source], shape: torch.Tensor,
             checkpoint: Path | None = None) -> AnimatedAvatar:
    """The avatar of ``sources`` (tracked portraits of one person sharing ``shape`` [S])."""
    if kind == "projective":
        uvg, _ = projective_gaussians(model, list(sources), shape)
        return AnimatedAvatar(Avatar(uvg, model.name, shape, {"generator": "projective"}), model)
    if kind == "network":
        if checkpoint is None:
            raise ValueError("the network generator needs --checkpoint PATH (a file written by "
                             "`python main.py train`)")
        from engine.generator.network import load_generator

        return load_generator(checkpoint, model).avatar(model, list(sources), shape)
    raise ValueError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATORS)}")
