"""The feed-forward training losses against their formulas."""
from __future__ import annotations

import pytest
import torch

from engine.train import losses as L


def tiny_head(cin: int = 27, cout: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(cin, 16), torch.nn.Tanh(), torch.nn.Linear(16, cout))


def exact_sq_norms(head, gamma: torch.Tensor) -> torch.Tensor:
    """‖∂head(γ_i)/∂γ_i‖²_F per row, by autograd."""
    return torch.stack([torch.autograd.functional.jacobian(head, g).pow(2).sum() for g in gamma])


def test_hutchinson_estimate_matches_the_autograd_jacobian_on_average():
    head = tiny_head()
    gamma = torch.randn(6, 27, requires_grad=True)
    exact = exact_sq_norms(head, gamma.detach())
    gen = torch.Generator().manual_seed(1)
    est = torch.stack([L.hutchinson_sq_norm(head(gamma), gamma, gen).detach() for _ in range(3000)]).mean(0)
    assert torch.allclose(est, exact, rtol=0.06), (est, exact)


def test_hutchinson_is_exact_for_a_single_output():
    """With one output channel Jᵀv = ±J, so every sample is exact."""
    head = tiny_head(cout=1)
    gamma = torch.randn(5, 27, requires_grad=True)
    assert torch.allclose(L.hutchinson_sq_norm(head(gamma), gamma), exact_sq_norms(head, gamma.detach()), rtol=1e-5)


def test_jacobian_penalty_formula_and_its_gradient_reaches_the_heads():
    pos, scale = tiny_head(cout=1, seed=1), tiny_head(cout=1, seed=2)
    gamma = torch.randn(4, 27, requires_grad=True)
    value = L.jacobian_penalty(pos(gamma), scale(gamma), gamma)
    want = torch.log1p(exact_sq_norms(pos, gamma.detach()) + exact_sq_norms(scale, gamma.detach())).mean()
    assert float(value.detach()) == pytest.approx(float(want), rel=1e-5)
    value.backward()
    assert pos[0].weight.grad is not None and float(pos[0].weight.grad.abs().sum()) > 0


def test_a_view_independent_head_has_no_jacobian_penalty():
    gamma = torch.randn(4, 27, requires_grad=True)
    feat = torch.randn(4, 8)
    head = tiny_head(cin=8)
    out = head(feat) + 0 * gamma[:, :3]
    assert float(L.jacobian_penalty(out, out, gamma)) == 0.0


class _Slots:
    """The part of UVSlots that uv_tv uses, on a 3 x 3 raster with one invalid corner."""

    def __init__(self):
        self.valid = torch.ones(3, 3, dtype=torch.bool)
        self.valid[2, 2] = False
        self.texel = torch.nonzero(self.valid.reshape(-1))[:, 0]

    def scatter(self, values):
        out = torch.zeros(values.shape[1], 9)
        out[:, self.texel] = values.T
        return out.reshape(-1, 3, 3)


def test_uv_total_variation_counts_only_valid_neighbours():
    slots = _Slots()
    assert float(L.uv_tv(torch.full((8, 2), 0.7), slots)) == 0.0
    grid = torch.tensor([[0.0, 1, 2], [0, 1, 2], [0, 1, 0]])            # [2, 2] is invalid
    vals = grid.reshape(-1)[slots.texel][:, None]
    # valid pairs: 5 horizontal (|1|,|1| in rows 0, 1; |1| in row 2) and 5 vertical (all 0)
    assert float(L.uv_tv(vals, slots)) == pytest.approx(5 / 10)


def test_box_l1_and_shrinkage_and_l2sp_formulas():
    a, b = torch.zeros(10, 10, 3), torch.zeros(10, 10, 3)
    b[2:5, 3:8] = 0.5
    assert float(L.box_l1(a, b, (3, 2, 8, 5))) == pytest.approx(0.5)
    assert float(L.box_l1(a, b, (0, 0, 10, 10))) == pytest.approx(0.5 * 15 / 100)
    assert float(L.box_l1(a, b, (9, 9, 9, 9))) == 0.0
    res = {"color": torch.full((4, 3), 0.5), "rotation": torch.zeros(4, 4)}
    assert float(L.residual_shrinkage(res)) == pytest.approx(0.25 * 12 / 28)
    assert float(L.residual_shrinkage(None)) == 0.0
    p = {"w": torch.ones(3), "b": torch.zeros(2)}
    assert float(L.l2_sp(p, {"w": torch.zeros(3), "b": torch.ones(2)})) == pytest.approx(5.0)


def test_ms_ssim_loss_is_zero_for_equal_images_and_uses_fewer_scales_on_small_ones():
    img = torch.rand(96, 80, 3)
    assert float(L.ms_ssim_loss(img, img)) == pytest.approx(0.0, abs=1e-5)
    assert float(L.ms_ssim_loss(img, torch.rand(96, 80, 3))) > 0.3
