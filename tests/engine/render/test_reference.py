"""ReferenceRenderer: against a naive per-Gaussian oracle, hand-computed values, and gradcheck."""
from __future__ import annotations

import pytest
import torch

from engine.render.reference import ReferenceRenderer
from engine.render.base import Renderer, RenderOptions
from engine.render.projection import project_gaussians
from engine.types import Camera, Frame, Gaussians


def _camera(width: int, height: int, f: float, dtype: torch.dtype = torch.float32) -> Camera:
    """Identity pose (world = OpenCV camera); the optical axis hits the centre of a pixel."""
    K = torch.tensor([[f, 0.0, width / 2 + 0.5], [0.0, f, height / 2 + 0.5], [0.0, 0.0, 1.0]], dtype=dtype)
    return Camera(torch.eye(4, dtype=dtype), K, width, height)


def _random_scene(n: int, seed: int, opacity_lo: float = 0.0, spread: float = 1.0) -> Gaussians:
    """n Gaussians 2-4 m in front of a 32x24, f=30 camera, a few pixels wide each.

    ``spread`` < 1 crowds them towards the image centre (0.15 saturates some pixels).
    """
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([2.4, 1.8]) * spread
    z = 2.0 + 2.0 * torch.rand(n, 1, generator=g)
    quats = torch.randn(n, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    scales = 0.02 + 0.15 * torch.rand(n, 3, generator=g)
    opacities = opacity_lo + (1 - opacity_lo) * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g) * 1.2 - 0.1  # some outside [0, 1]: must be clamped
    return Gaussians(torch.cat([xy * z, z], dim=1), quats, scales, opacities, colors)


def _oracle(gaussians: Gaussians, camera: Camera, opts: RenderOptions) -> Frame:
    """gsplat's per-pixel loop, written plainly: every visible Gaussian on every pixel."""
    p = project_gaussians(gaussians, camera, opts)
    H, W = camera.height, camera.width
    ys, xs = torch.meshgrid(torch.arange(H, dtype=p.depths.dtype), torch.arange(W, dtype=p.depths.dtype),
                            indexing="ij")
    px, py = xs + 0.5, ys + 0.5
    T = torch.ones(H, W, dtype=p.depths.dtype)
    done = torch.zeros(H, W, dtype=torch.bool)
    rgb, alpha, depth = torch.zeros(H, W, 3, dtype=T.dtype), torch.zeros_like(T), torch.zeros_like(T)
    ids = p.visible.nonzero().squeeze(1)
    for i in ids[torch.argsort(p.depths[ids], stable=True)].tolist():
        a, b, c = p.conics[i]
        dx, dy = px - p.means2d[i, 0], py - p.means2d[i, 1]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        al = torch.clamp(gaussians.opacities[i] * torch.exp(power), max=opts.alpha_max)
        al = torch.where(al < opts.alpha_min, torch.zeros_like(al), al)
        next_T = T * (1 - al)
        done = done | (next_T <= opts.transmittance_min)
        w = torch.where(done, torch.zeros_like(al), al * T)
        rgb += w[..., None] * gaussians.colors[i].clamp(0, 1)
        alpha += w
        depth += w * p.depths[i]
        T = torch.where(done, T, next_T)
    return Frame(rgb, alpha, depth)


def test_is_a_renderer() -> None:
    r = ReferenceRenderer()
    assert isinstance(r, Renderer)
    assert (r.name, r.differentiable) == ("reference", True)


@pytest.mark.parametrize("seed, n, opacity_lo, spread, chunk_size", [
    (0, 20, 0.0, 1.0, 512),
    (1, 50, 0.0, 1.0, 512),
    (2, 50, 0.9, 0.15, 8),  # dense and opaque: transmittance cut-off, carried across small chunks
])
def test_matches_oracle(seed: int, n: int, opacity_lo: float, spread: float, chunk_size: int) -> None:
    gaussians, cam, opts = _random_scene(n, seed, opacity_lo, spread), _camera(32, 24, 30.0), RenderOptions()
    got = ReferenceRenderer(chunk_size=chunk_size).render(gaussians, cam, opts)
    want = _oracle(gaussians, cam, opts)
    assert float(want.alpha.max()) > 0.5  # a non-trivial image
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-5, rtol=0)


def test_transmittance_cutoff_is_used() -> None:
    # The dense oracle scene saturates some pixels: without the cut-off their alpha would
    # reach 1 - prod(1 - alpha_i) > 1 - 1e-4; with it, alpha stays below 1 - 1e-4.
    gaussians, cam = _random_scene(50, 2, opacity_lo=0.9, spread=0.15), _camera(32, 24, 30.0)
    alpha = ReferenceRenderer().render(gaussians, cam).alpha
    assert float(alpha.max()) < 1 - 1e-4
    assert int((alpha > 0.999).sum()) >= 5


def test_empty_and_behind_camera_are_transparent() -> None:
    cam = _camera(32, 24, 30.0)
    empty = Gaussians(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))
    behind = _random_scene(20, 0)
    behind = Gaussians(behind.means * torch.tensor([1.0, 1.0, -1.0]), behind.quats, behind.scales,
                       behind.opacities, behind.colors)
    for gaussians in (empty, behind):
        frame = ReferenceRenderer().render(gaussians, cam)
        assert list(frame.rgb.shape) == [24, 32, 3]
        assert float(frame.alpha.abs().max()) == 0.0
        assert float(frame.rgb.abs().max()) == 0.0
        assert float(frame.depth.abs().max()) == 0.0


def _on_axis(depths: list[float], opacities: list[float], colors: list[list[float]], scale: float) -> Gaussians:
    """Isotropic Gaussians centred on the optical axis (so exactly on pixel (W/2, H/2))."""
    n = len(depths)
    means = torch.tensor([[0.0, 0.0, z] for z in depths], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n, dtype=torch.float64)
    return Gaussians(means, quats, torch.full((n, 3), scale, dtype=torch.float64),
                     torch.tensor(opacities, dtype=torch.float64), torch.tensor(colors, dtype=torch.float64))


def test_opaque_front_gaussian_hides_back_one() -> None:
    cam = _camera(16, 16, 20.0, torch.float64)
    red_front_green_back = _on_axis([1.0, 3.0], [1.0, 0.6], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 0.5)
    frame = ReferenceRenderer().render(red_front_green_back, cam)
    # At the centre pixel exp(power) = 1: alpha_front = min(0.99, 1) and the green one
    # only gets the remaining 1% of transmittance.
    c = frame.rgb[8, 8]
    assert c.tolist() == pytest.approx([0.99, 0.01 * 0.6, 0.0], abs=1e-12)
    assert float(frame.alpha[8, 8]) == pytest.approx(0.99 + 0.01 * 0.6, abs=1e-12)
    assert float(frame.depth[8, 8]) == pytest.approx(0.99 * 1.0 + 0.01 * 0.6 * 3.0, abs=1e-12)


def test_compositing_stops_for_good_below_transmittance_min() -> None:
    # T: 1 -> 0.1 after the first; the second would take it to 0.04 <= 0.05, so it and
    # every Gaussian behind it (even the faint third, 0.1 * 0.9 > 0.05) are dropped.
    cam = _camera(16, 16, 20.0, torch.float64)
    gaussians = _on_axis([1.0, 2.0, 3.0], [0.9, 0.6, 0.1], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], 0.5)
    frame = ReferenceRenderer().render(gaussians, cam, RenderOptions(transmittance_min=0.05))
    assert frame.rgb[8, 8].tolist() == pytest.approx([0.9, 0.0, 0.0], abs=1e-12)
    assert float(frame.alpha[8, 8]) == pytest.approx(0.9, abs=1e-12)
    assert float(frame.depth[8, 8]) == pytest.approx(0.9, abs=1e-12)


def _gaussian_alphas(gaussians: Gaussians, camera: Camera) -> torch.Tensor:
    """opacity * exp(power) of every Gaussian at every pixel centre, before clamping: [N, H, W]."""
    p = project_gaussians(gaussians, camera)
    ys, xs = torch.meshgrid(torch.arange(camera.height, dtype=p.depths.dtype),
                            torch.arange(camera.width, dtype=p.depths.dtype), indexing="ij")
    dx = xs + 0.5 - p.means2d[:, 0, None, None]
    dy = ys + 0.5 - p.means2d[:, 1, None, None]
    a, b, c = (p.conics[:, k, None, None] for k in range(3))
    return gaussians.opacities[:, None, None] * torch.exp(-0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy)


def test_gradcheck(gradcheck_fields) -> None:
    # Three wide, semi-transparent Gaussians over an 8x8 image (one tile), placed so that
    # every alpha is well inside (alpha_min, alpha_max) and T stays far above
    # transmittance_min: the image is then smooth in all parameters.
    cam = _camera(8, 8, 10.0, torch.float64)
    means, quats, scales, opacities, colors = gradcheck_fields
    alphas = _gaussian_alphas(Gaussians(means, quats, scales, opacities, colors), cam)
    assert float(alphas.min()) > 0.05 and float(alphas.max()) < 0.9
    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors))

    def render(*fields: torch.Tensor) -> tuple[torch.Tensor, ...]:
        frame = ReferenceRenderer().render(Gaussians(*fields), cam)
        return frame.rgb, frame.alpha, frame.depth

    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
