import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from engine.metrics import image, mse, psnr, ssim


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


def _conv2d_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM as this module computed it before the banded blur: grouped conv2d per moment."""
    x, y = x.permute(2, 0, 1)[None], y.permute(2, 0, 1)[None]
    g = torch.exp(-((torch.arange(11.0) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    wx, wy = g.reshape(1, 1, 1, -1).expand(3, 1, 1, 11), g.reshape(1, 1, -1, 1).expand(3, 1, 11, 1)

    def blur(t):
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, wx, groups=3), wy, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return (((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4))).mean()


def test_ssim_value_and_gradient_match_the_conv2d_formulation():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(70, 90, 3, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    grads = []
    for f in (ssim, _conv2d_ssim):
        p = pred.clone().requires_grad_(True)
        v = f(p, target)
        v.backward()
        grads.append((float(v.detach()), p.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-9, rtol=1e-4)


def test_banded_blur_gradient(monkeypatch):
    monkeypatch.setattr(image, "_BLOCK", 4)            # several blocks on a small input
    t = torch.rand(2, 17, 19, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: image._blur(u, 5, 1.0), (t,))
    g = image._gaussian_window(5, 1.0).double()
    ref = torch.nn.functional.conv2d(t[:, None], (g[:, None] * g[None])[None, None])[:, 0]
    torch.testing.assert_close(image._blur(t, 5, 1.0), ref)

