import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from engine.metrics import mse, psnr, ssim


def test_psnr_against_the_formula():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.1)
    assert float(mse(a, b)) == pytest.approx(0.01)
    assert float(psnr(a, b)) == pytest.approx(20.0)


def test_ssim_matches_scikit_image():
    g = np.random.default_rng(0)
    a = g.random((48, 40, 3)).astype(np.float32)
    b = np.clip(a + g.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert float(ssim(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(ref, abs=2e-3)
    assert float(ssim(torch.from_numpy(a), torch.from_numpy(a))) == pytest.approx(1.0, abs=1e-5)
