"""Scenes shared by the renderer tests."""
import pytest
import torch


@pytest.fixture
def gradcheck_fields() -> tuple[torch.Tensor, ...]:
    """Three wide, semi-transparent float64 Gaussians for an 8x8 image (one tile), placed so that
    every alpha is well inside (alpha_min, alpha_max) and T stays far above transmittance_min:
    the image is then smooth in all parameters. (means, quats, scales, opacities, colors)"""
    means = torch.tensor([[0.1, -0.05, 2.0], [-0.2, 0.1, 2.5], [0.05, 0.2, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.8, -0.3, 0.2, 0.1], [1.0, 0.2, 0.1, -0.1]], dtype=torch.float64)
    scales = torch.tensor([[0.8, 0.6, 0.5], [0.9, 0.7, 0.6], [0.7, 1.0, 0.8]], dtype=torch.float64)
    opacities = torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64)
    colors = torch.tensor([[0.2, 0.5, 0.8], [0.7, 0.3, 0.4], [0.1, 0.9, 0.6]], dtype=torch.float64)
    return means, quats, scales, opacities, colors
