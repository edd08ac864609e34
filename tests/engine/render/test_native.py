"""NativeRenderer (C++/OpenMP): against the reference renderer, gradcheck, and edge cases.

The first run compiles the extension (~30 s on the 2-core dev machine, then cached in
~/.cache/spatialavatar/torch_extensions); after that the file runs in a few seconds.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from engine.render.reference import ReferenceRenderer
from engine.render.base import Renderer, RenderOptions
from engine.render.native import NativeRenderer, load
from engine.types import Camera, Frame, Gaussians

FIELDS = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    load()  # compile once, outside the timing of any test


def _camera(width: int, height: int, f: float, dtype: torch.dtype = torch.float32) -> Camera:
    K = torch.tensor([[f, 0.0, width / 2 + 0.3], [0.0, f, height / 2 - 0.2], [0.0, 0.0, 1.0]], dtype=dtype)
    return Camera(torch.eye(4, dtype=dtype), K, width, height)


def _hard_scene(seed: int, n: int = 80, dtype: torch.dtype = torch.float32) -> Gaussians:
    """Ordinary Gaussians 2-4 m in front of a 37x29, f=30 camera, plus every hard case:
    behind the camera, inside the near plane, off-screen, huge (covering the image), tiny
    (sub-pixel), opacity ~0 (below alpha_min) and ~1 (clamped by alpha_max)."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([2.6, 2.0])
    z = 2.0 + 2.0 * torch.rand(n, 1, generator=g)
    means = torch.cat([xy * z, z], dim=1)
    quats = torch.randn(n, 4, generator=g) * (0.5 + torch.rand(n, 1, generator=g))  # not unit: normalised inside
    scales = 0.02 + 0.15 * torch.rand(n, 3, generator=g)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g) * 1.2 - 0.1
    k = n // 10
    means[0:k, 2] *= -1                                   # behind the camera
    means[k, 2] = 0.005                                   # inside the near plane
    means[k + 1:2 * k, :2] *= 6.0                         # mostly off-screen
    scales[2 * k] = torch.tensor([1.5, 0.8, 1.2])         # huge: covers the image
    scales[2 * k + 1:3 * k] = 1e-4                        # tiny: eps2d dominates
    opacities[3 * k:3 * k + 3] = torch.tensor([1e-3, 3.9e-3, 0.0])  # at or below alpha_min
    opacities[3 * k + 3:4 * k] = 0.999                    # clamped by alpha_max
    return Gaussians(*(t.to(dtype) for t in (means, quats, scales, opacities, colors)))


def _render_with_grads(renderer: Renderer, gaussians: Gaussians, camera: Camera,
                       options: RenderOptions = RenderOptions()) -> tuple[Frame, list[torch.Tensor]]:
    leaves = [getattr(gaussians, f).detach().clone().requires_grad_(True) for f in FIELDS]
    frame = renderer.render(Gaussians(*leaves), camera, options)
    g = torch.Generator().manual_seed(123)
    w = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (frame.rgb, frame.alpha, frame.depth)]
    loss = (frame.rgb * w[0]).sum() + (frame.alpha * w[1]).sum() + (frame.depth * w[2]).sum()
    loss.backward()
    return Frame(frame.rgb.detach(), frame.alpha.detach(), frame.depth.detach()), [t.grad for t in leaves]


def test_is_a_renderer() -> None:
    r = NativeRenderer()
    assert isinstance(r, Renderer)
    assert (r.name, r.differentiable) == ("native", True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(seed: int, dtype: torch.dtype) -> None:
    gaussians, cam = _hard_scene(seed, dtype=dtype), _camera(37, 29, 30.0, dtype)
    want, want_grads = _render_with_grads(ReferenceRenderer(), gaussians, cam)
    got, got_grads = _render_with_grads(NativeRenderer(), gaussians, cam)
    assert float(want.alpha.max()) > 0.8 and float((want.alpha > 0).double().mean()) > 0.5  # a non-trivial image
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(got, name) - getattr(want, name)).abs()
        assert getattr(got, name).dtype == dtype
        assert float(diff.mean()) <= 1e-4
        assert float(diff.max()) <= 1e-2
    for name, g, r in zip(FIELDS, got_grads, want_grads):
        assert g.shape == r.shape and g.dtype == dtype, name
        rel = float((g - r).norm() / r.norm())
        assert rel <= 1e-3, f"{name}: relative error {rel:.2e}"
        assert float((g - r).abs().max()) <= 1e-3 * float(r.abs().max()), name


def test_culled_gaussians_get_zero_gradients() -> None:
    gaussians, cam = _hard_scene(0), _camera(37, 29, 30.0)
    _, grads = _render_with_grads(NativeRenderer(), gaussians, cam)
    behind = slice(0, 8)  # behind the camera, see _hard_scene
    for name, g in zip(FIELDS, grads):
        assert float(g[behind].abs().max()) == 0.0, name
    assert float(grads[0][8:].abs().sum()) > 0.0


@pytest.mark.parametrize("options", [
    RenderOptions(alpha_min=0.05, transmittance_min=0.2),
    RenderOptions(eps2d=1.0, alpha_max=0.9, near=2.5),
    RenderOptions(tile_size=8),  # the native tile size is fixed; results must not depend on it
])
def test_options_match_reference(options: RenderOptions) -> None:
    gaussians, cam = _hard_scene(4), _camera(37, 29, 30.0)
    want, want_grads = _render_with_grads(ReferenceRenderer(), gaussians, cam, options)
    got, got_grads = _render_with_grads(NativeRenderer(), gaussians, cam, options)
    for name in ("rgb", "alpha", "depth"):
        assert float((getattr(got, name) - getattr(want, name)).abs().max()) <= 1e-4, name
    for name, g, r in zip(FIELDS, got_grads, want_grads):
        assert float((g - r).norm() / r.norm()) <= 1e-3, name


def test_saturated_tiles_match_reference() -> None:
    # Dense, opaque and larger than a tile: exercises early termination per 8-pixel chunk
    # and per tile, and the transmittance cut-off in the backward pass.
    g = torch.Generator().manual_seed(7)
    n = 300
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 1.2
    z = 2.0 + torch.rand(n, 1, generator=g)
    gaussians = Gaussians(torch.cat([xy * z, z], 1), torch.randn(n, 4, generator=g), 0.05 + 0.1 * torch.rand(n, 3, generator=g),
                          0.8 + 0.2 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g))
    cam = _camera(48, 40, 40.0)
    want, want_grads = _render_with_grads(ReferenceRenderer(), gaussians, cam)
    got, got_grads = _render_with_grads(NativeRenderer(), gaussians, cam)
    assert int((want.alpha > 0.999).sum()) > 50
    for name in ("rgb", "alpha", "depth"):
        assert float((getattr(got, name) - getattr(want, name)).abs().max()) <= 1e-4, name
    for name, gn, gr in zip(FIELDS, got_grads, want_grads):
        assert float((gn - gr).norm() / gr.norm()) <= 1e-3, name


def test_gradcheck(gradcheck_fields) -> None:
    # The reference renderer's gradcheck scene: smooth in every parameter.
    cam = _camera(8, 8, 10.0, torch.float64)
    means, quats, scales, opacities, colors = gradcheck_fields
    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors))

    def render(*fields: torch.Tensor) -> tuple[torch.Tensor, ...]:
        frame = NativeRenderer().render(Gaussians(*fields), cam)
        return frame.rgb, frame.alpha, frame.depth

    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_empty_scene() -> None:
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)]
    frame, grads = _render_with_grads(NativeRenderer(), Gaussians(*empty), _camera(20, 10, 10.0))
    assert list(frame.rgb.shape) == [10, 20, 3]
    for t in (frame.rgb, frame.alpha, frame.depth):
        assert float(t.abs().max()) == 0.0
    assert [list(g.shape) for g in grads] == [[0, 3], [0, 4], [0, 3], [0], [0, 3]]


def test_zero_size_image() -> None:
    with pytest.raises(ValueError, match="size must be positive"):
        _camera(0, 10, 10.0)
    # A camera that slipped past validation renders an empty image instead of crashing.
    cam = _camera(4, 4, 10.0)
    object.__setattr__(cam, "width", 0)
    frame, grads = _render_with_grads(NativeRenderer(), _hard_scene(0, n=20), cam)
    assert list(frame.rgb.shape) == [4, 0, 3] and list(frame.alpha.shape) == [4, 0]
    assert all(float(g.abs().sum()) == 0.0 for g in grads)


@pytest.mark.parametrize("field, row, value", [
    ("means", 30, math.nan), ("means", 31, math.inf), ("quats", 32, math.nan), ("scales", 33, math.inf),
    ("scales", 34, math.nan), ("opacities", 35, math.nan), ("opacities", 36, math.inf), ("colors", 37, math.nan),
])
def test_non_finite_gaussians_are_skipped(field: str, row: int, value: float) -> None:
    # Defined behaviour: a Gaussian with a NaN/inf field is culled (renders nothing, gets
    # zero gradients); the image equals the one without it.
    gaussians, cam = _hard_scene(5), _camera(37, 29, 30.0)
    bad = getattr(gaussians, field).clone()
    bad[row] = value
    broken = dataclasses.replace(gaussians, **{field: bad})
    keep = torch.ones(len(gaussians), dtype=torch.bool)
    keep[row] = False
    without = Gaussians(*(getattr(gaussians, f)[keep] for f in FIELDS))
    got, grads = _render_with_grads(NativeRenderer(), broken, cam)
    want = NativeRenderer().render(without, cam)
    for name in ("rgb", "alpha", "depth"):
        assert bool(torch.isfinite(getattr(got, name)).all()), name
        assert float((getattr(got, name) - getattr(want, name)).abs().max()) == 0.0, name
    for name, g in zip(FIELDS, grads):
        assert bool(torch.isfinite(g).all()), name
        assert float(g[row].abs().max()) == 0.0, name


def test_non_finite_camera_renders_nothing() -> None:
    cam = _camera(16, 16, 10.0)
    w2c = cam.world_to_cam.clone()
    w2c[0, 3] = math.nan
    frame = NativeRenderer().render(_hard_scene(0), dataclasses.replace(cam, world_to_cam=w2c))
    assert float(frame.alpha.abs().max()) == 0.0


def test_rejects_cuda_meta_and_mixed_dtypes() -> None:
    gaussians = _hard_scene(0, n=20)
    meta = Gaussians(*(getattr(gaussians, f).to("meta") for f in FIELDS))
    with pytest.raises(ValueError, match="CPU"):
        NativeRenderer().render(meta, _camera(8, 8, 10.0))
    # Mixed dtypes are converted to the means' dtype rather than rejected.
    mixed = dataclasses.replace(gaussians, colors=gaussians.colors.double())
    frame = NativeRenderer().render(mixed, _camera(8, 8, 10.0))
    assert frame.rgb.dtype == torch.float32


def test_is_deterministic_and_thread_count_independent() -> None:
    gaussians, cam = _hard_scene(6), _camera(37, 29, 30.0)
    a, ga = _render_with_grads(NativeRenderer(), gaussians, cam)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b, gb = _render_with_grads(NativeRenderer(), gaussians, cam)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha) and torch.equal(a.depth, b.depth)
    for x, y in zip(ga, gb):
        assert float((x - y).abs().max()) <= 1e-6 * float(x.abs().max())
