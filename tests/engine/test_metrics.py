import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from engine.metrics import image, ms_ssim, mse, psnr, ssim
from engine.metrics.image import ms_ssim_min_side


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


def _np_blur(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Valid 2-D correlation with the separable window outer(g, g)."""
    win = np.lib.stride_tricks.sliding_window_view(img, (len(g), len(g)))
    return np.einsum("ijkl,k,l->ij", win, g, g)


def _np_halve(img: np.ndarray) -> np.ndarray:
    """2x2 mean; an odd side gets a zero on each end first (avg_pool2d's padding, zeros counted)."""
    for axis in (0, 1):
        if img.shape[axis] % 2:
            img = np.pad(img, [(1, 1) if a == axis else (0, 0) for a in (0, 1)])
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    return img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def _np_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM straight from the formula, per channel in float64."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    c1, c2 = 0.01**2, 0.03**2
    out = []
    for ch in range(a.shape[2]):
        p, q = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        val = 1.0
        for s, w in enumerate(weights):
            mp, mq = _np_blur(p, g), _np_blur(q, g)
            vp, vq = _np_blur(p * p, g) - mp**2, _np_blur(q * q, g) - mq**2
            cov = _np_blur(p * q, g) - mp * mq
            cs = (2 * cov + c2) / (vp + vq + c2)
            lum = (2 * mp * mq + c1) / (mp**2 + mq**2 + c1)
            term = (lum * cs).mean() if s == len(weights) - 1 else cs.mean()
            val *= max(term, 0.0) ** w
            p, q = _np_halve(p), _np_halve(q)
        out.append(val)
    return float(np.mean(out))


def _pair(shape=(170, 203, 3), noise=0.15, seed=2):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]] / 40.0
    a = (0.5 + 0.4 * np.sin(xx[..., None] + np.arange(3)) * np.cos(yy[..., None])).astype(np.float32)
    b = np.clip(a + g.normal(0, noise, a.shape), 0, 1).astype(np.float32)
    return a, b


def test_ms_ssim_matches_the_formula():
    a, b = _pair()       # odd sides at some scales: 170 -> 85 -> 43, 203 -> 102 -> 51 -> 26 -> 13
    assert float(ms_ssim(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(_np_ms_ssim(a, b), abs=1e-5)


def test_ms_ssim_matches_pytorch_msssim():
    pm = pytest.importorskip("pytorch_msssim")
    for shape, noise in (((170, 203, 3), 0.15), ((256, 256, 3), 0.05), ((161, 180, 1), 0.3)):
        a, b = _pair(shape, noise)
        ref = pm.ms_ssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None],
                         data_range=1.0)
        assert float(ms_ssim(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(float(ref), abs=1e-6)


def test_ms_ssim_identity_symmetry_and_order():
    a, b = (torch.from_numpy(t) for t in _pair())
    assert float(ms_ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert float(ms_ssim(a, b)) == pytest.approx(float(ms_ssim(b, a)), abs=1e-6)
    worse = torch.from_numpy(_pair(noise=0.3)[1])
    assert 0 < float(ms_ssim(a, worse)) < float(ms_ssim(a, b)) < 1


def test_ms_ssim_rejects_images_too_small_for_five_scales():
    assert ms_ssim_min_side() == 161
    a = torch.rand(160, 300, 3)
    with pytest.raises(ValueError, match="at least 161 px on the smaller side"):
        ms_ssim(a, a)
    b = torch.rand(161, 161, 3)
    assert float(ms_ssim(b, b)) == pytest.approx(1.0, abs=1e-5)
