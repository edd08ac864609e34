"""The network trained on this repository's CPU (models/network_cpu_small.pt, made by
scripts/train_cpu_small.sh) loads with the code as it is and is a trained network."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.generator.network import load_generator
from engine.generator.projective import Source, projective_gaussians
from engine.headmodel.base import HeadModel
from engine.track.fit import intrinsics
from engine.train.config import TrainConfig

MODEL = Path(__file__).resolve().parents[3] / "models" / "network_cpu_small.pt"


def test_the_shipped_network_loads_and_differs_from_the_projective_stage(openhead):
    model = HeadModel(openhead)
    net = load_generator(MODEL, model)
    assert net.cfg == TrainConfig.cpu_small().network
    assert float(net.heads["color"][-1].weight.detach().abs().sum()) > 0          # trained: no longer zero-initialised
    rng = np.random.default_rng(0)
    p = model.neutral()
    from engine.types import HeadParams

    p = HeadParams(p.shape, p.expr, p.rotation, p.neck, p.jaw, p.eyes, torch.tensor([[0.0, 0.0, -0.8]]))
    src = Source(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), np.full((128, 128), 255, np.uint8), p,
                 intrinsics(np.array([500.0]), np.array([[128, 128]]))[0])
    avatar = net.avatar(model, [src], torch.zeros(model.n_shape))
    uvg, _ = projective_gaussians(model, [src], torch.zeros(model.n_shape))
    diff = (avatar.avatar.gaussians.color - uvg.color).abs()[:, uvg.valid]
    assert 1e-3 < float(diff.mean()) < 0.2                                # corrects the stage, does not replace it
