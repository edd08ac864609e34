"""Screen-space aspect statistics: hand-computed 2D covariances, and agreement with the
refiner's aspect penalty."""
import math

import numpy as np
import pytest
import torch

from engine.eval.aspect import aspect_ratios, aspect_stats
from engine.refine.refiner import aspect_penalty


def _rotated(sx2: float, sy2: float, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]])
    return R @ torch.diag(torch.tensor([sx2, sy2])) @ R.T


def test_ratio_of_hand_computed_covariances():
    cov = torch.stack([
        torch.tensor([[5.0, 2.0], [2.0, 2.0]]),   # eigenvalues 6 and 1 -> r = sqrt(6)
        _rotated(16.0, 1.0, 0.5),                 # axes 4 : 1 at any angle -> r = 4
        torch.eye(2) * 3,                         # isotropic -> r = 1
        torch.tensor([[100.0, 0.0], [0.0, 1.0]]), # invisible: left out
    ])
    visible = torch.tensor([True, True, True, False])
    r = aspect_ratios(cov, visible)
    assert r.tolist() == pytest.approx([math.sqrt(6), 4.0, 1.0], rel=1e-4)


def test_penalty_is_the_mean_relu_of_log_ratio_minus_tau():
    torch.manual_seed(0)
    M = torch.randn(50, 2, 2) * torch.tensor([5.0, 0.2])[:, None]
    cov = M @ M.transpose(-1, -2) + 0.3 * torch.eye(2)
    visible = torch.rand(50) > 0.3
    r = aspect_ratios(cov, visible)
    for tau in (0.0, 1.15):
        assert float(torch.relu(torch.log(r) - tau).mean()) == pytest.approx(float(aspect_penalty(cov, visible, tau)),
                                                                               rel=1e-5)


def test_stats():
    r = np.array([1.0, 2.0, 3.0, 4.0, 20.0])
    s = aspect_stats(r, tau=math.log(2.5))
    assert s.median == 3.0 and s.count == 5
    assert s.frac_over_tau == pytest.approx(0.6) and s.frac_over_10 == pytest.approx(0.2)
    assert 4.0 < s.p99 <= 20.0
