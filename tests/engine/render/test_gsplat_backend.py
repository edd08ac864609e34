"""The gsplat backend: its conventions pinned on the CPU, its CUDA path on a GPU, and lazy import.

No GPU here, so the CPU tests run gsplat's *own* ``gsplat.rendering.rasterization`` (its
argument checks, packing, "RGB+D" channel handling and output layout) with its four CUDA
kernels swapped for CPU stand-ins: gsplat's pure-torch ``_fully_fused_projection``,
``_isect_tiles`` and ``_isect_offset_encode``, and `_rasterize_to_pixels_cpu`, a line-by-line
transcription of the forward kernel (gsplat/cuda/csrc/RasterizeToPixels3DGSFwd.cu).
gsplat's own ``_torch_impl._rasterize_to_pixels`` cannot serve: it calls the CUDA
``rasterize_to_indices_in_range`` and needs nerfacc. The stand-ins are fed what the
adapter prepares, and the adapter maps what comes out; the result is compared with
`ReferenceRenderer`.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.render.reference import ReferenceRenderer
from engine.render.base import RenderOptions
from engine.render.gsplat_backend import (
    GSPLAT_ALPHA_MAX,
    GSPLAT_ALPHA_MIN,
    GSPLAT_TRANSMITTANCE_MIN,
    GsplatRenderer,
    frame_from_gsplat,
    gsplat_inputs,
    render_with,
    unsupported_options,
)
from engine.render.select import RendererUnavailable
from engine.types import Camera, Frame, Gaussians

REPO = Path(__file__).resolve().parents[3]
FIELDS = ("means", "quats", "scales", "opacities", "colors")
GSPLAT_OPTIONS = RenderOptions(alpha_max=GSPLAT_ALPHA_MAX)  # the thresholds gsplat's kernels hard-code


# ----------------------------------------------------------------------------- scenes


def _scene(seed: int, n: int = 120, opacity_max: float = 1.0) -> tuple[Gaussians, Camera]:
    """Gaussians around the origin seen by a rotated, translated 70x45 camera (partial tiles),
    with every hard case: behind the camera, off-screen, huge, tiny, opacity ~0 and ~1,
    colours outside [0, 1], non-unit quaternions."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.5, 0.4, 0.8])
    quats = torch.randn(n, 4, generator=g) * (0.5 + torch.rand(n, 1, generator=g))
    scales = 0.01 + 0.08 * torch.rand(n, 3, generator=g)
    opacities = 0.05 + (opacity_max - 0.05) * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g) * 1.2 - 0.1
    k = n // 12
    means[0:k] = torch.tensor([0.3, 0.2, -5.0]) + 0.2 * torch.randn(k, 3, generator=g)  # behind the camera
    means[k:2 * k, :2] *= 5.0                                    # mostly off-screen
    scales[2 * k] = torch.tensor([0.9, 0.5, 0.7])                # huge: covers the image
    scales[2 * k + 1:3 * k] = 1e-4                               # tiny: eps2d dominates
    opacities[3 * k:3 * k + 3] = torch.tensor([1e-3, 3.9e-3, 0.0])  # at or below alpha_min
    opacities[3 * k + 3:4 * k] = opacity_max                     # near-opaque
    cam = Camera.look_at(eye=(0.6, -0.4, -3.0), target=(0.0, 0.0, 0.0), fov_y_deg=30.0, width=70, height=45)
    return Gaussians(means, quats, scales, opacities, colors), cam


# ----------------------------------------------------- gsplat's pipeline on the CPU


def _fully_fused_projection_cpu(means, covars, quats, scales, viewmats, Ks, width, height, eps2d=0.3, packed=True,
                                near_plane=0.01, far_plane=1e10, radius_clip=0.0, sparse_grad=False,
                                calc_compensations=False, camera_model="pinhole", opacities=None):
    """`gsplat.cuda._wrapper.fully_fused_projection` (packed) from gsplat's `_fully_fused_projection`.

    The CUDA kernel bins by an opacity-aware box (extent min(3.33, sqrt(2 ln(o * 255))))
    and culls o < 1/255 here; the torch one uses 3.33 sigma. Both contain every pixel
    with alpha >= 1/255, so rendered pixels do not depend on it.
    """
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    assert covars is None and radius_clip == 0.0 and not calc_compensations and camera_model == "pinhole"
    assert packed and not sparse_grad
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane)
    valid = (radii > 0).all(dim=-1)  # [C, N]
    camera_ids, gaussian_ids = valid.nonzero(as_tuple=True)
    batch_ids = torch.zeros_like(camera_ids)
    return (batch_ids, camera_ids, gaussian_ids, radii[valid], means2d[valid], depths[valid], conics[valid], None)


def _isect_tiles_cpu(means2d, radii, depths, tile_size, tile_width, tile_height, sort=True, segmented=False,
                     packed=False, n_images=None, image_ids=None, gaussian_ids=None):
    """`gsplat.isect_tiles` for one image, packed, from gsplat's `_isect_tiles`."""
    from gsplat.cuda._torch_impl import _isect_tiles

    assert packed and n_images == 1 and not segmented and bool((image_ids == 0).all())
    # With [nnz, ...] inputs _isect_tiles sees one image of nnz Gaussians; its flatten_ids
    # then index the packed arrays, as the CUDA kernel's do.
    return _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=sort)


def _isect_offset_encode_cpu(isect_ids, n_images, tile_width, tile_height):
    from gsplat.cuda._torch_impl import _isect_offset_encode

    return _isect_offset_encode(isect_ids, n_images, tile_width, tile_height)


def _rasterize_to_pixels_cpu(means2d, conics, colors, opacities, image_width, image_height, tile_size,
                             isect_offsets, flatten_ids, backgrounds=None, masks=None, packed=False, absgrad=False):
    """rasterize_to_pixels_3dgs_fwd_kernel, one image, transcribed: a loop over each tile's
    depth-sorted Gaussians, vectorised over the tile's pixels. Differentiable by autograd."""
    assert packed and masks is None and not absgrad and isect_offsets.shape[0] == 1
    H, W, channels = image_height, image_width, colors.shape[-1]
    tile_height, tile_width = isect_offsets.shape[-2:]
    offsets = isect_offsets.flatten().tolist() + [len(flatten_ids)]
    rows_colors, rows_alphas = [], []
    for ty in range(tile_height):
        row_colors, row_alphas = [], []
        for tx in range(tile_width):
            y0, x0 = ty * tile_size, tx * tile_size
            ys, xs = torch.meshgrid(torch.arange(y0, min(y0 + tile_size, H), dtype=torch.float32),
                                    torch.arange(x0, min(x0 + tile_size, W), dtype=torch.float32), indexing="ij")
            px, py = xs.flatten() + 0.5, ys.flatten() + 0.5
            T = torch.ones_like(px)
            done = torch.zeros(px.shape, dtype=torch.bool)
            pix_out = torch.zeros(px.shape[0], channels)
            tile_id = ty * tile_width + tx
            for g in flatten_ids[offsets[tile_id]:offsets[tile_id + 1]].tolist():
                conic, (x, y), opac = conics[g], means2d[g], opacities[g]
                dx, dy = x - px, y - py
                sigma = 0.5 * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy
                alpha = torch.clamp(opac * torch.exp(-sigma), max=0.999)
                skip = done | (sigma < 0) | (alpha < 1.0 / 255.0)
                next_T = T * (1.0 - alpha)
                stop = ~skip & (next_T <= 1e-4)  # this pixel is done: exclusive
                done = done | stop
                use = ~skip & ~stop
                vis = torch.where(use, alpha * T, torch.zeros_like(T))
                pix_out = pix_out + vis[:, None] * colors[g]
                T = torch.where(use, next_T, T)
            if backgrounds is not None:
                pix_out = pix_out + T[:, None] * backgrounds[0]
            shape = (ys.shape[0], ys.shape[1])
            row_colors.append(pix_out.reshape(*shape, channels))
            row_alphas.append((1.0 - T).reshape(*shape, 1))
        rows_colors.append(torch.cat(row_colors, dim=1))
        rows_alphas.append(torch.cat(row_alphas, dim=1))
    return torch.cat(rows_colors, dim=0)[None], torch.cat(rows_alphas, dim=0)[None]


@pytest.fixture
def gsplat_on_cpu(monkeypatch: pytest.MonkeyPatch):
    """gsplat's real ``rasterization()`` running on the CPU stand-ins above."""
    import gsplat.rendering

    for name, fn in (("fully_fused_projection", _fully_fused_projection_cpu), ("isect_tiles", _isect_tiles_cpu),
                     ("isect_offset_encode", _isect_offset_encode_cpu),
                     ("rasterize_to_pixels", _rasterize_to_pixels_cpu)):
        assert hasattr(gsplat.rendering, name)
        monkeypatch.setattr(gsplat.rendering, name, fn)
    return gsplat.rendering.rasterization


def _diffs(a: Frame, b: Frame) -> dict[str, tuple[float, float]]:
    """(mean abs, max abs) difference per field; depth divided by the scene's depth scale (~3 m)."""
    out = {}
    for f, scale in (("rgb", 1.0), ("alpha", 1.0), ("depth", 3.0)):
        d = (getattr(a, f) - getattr(b, f)).abs() / scale
        out[f] = (float(d.mean()), float(d.max()))
    return out


# ------------------------------------------------------------- pure functions


def test_inputs_follow_gsplat_conventions() -> None:
    gaussians, cam = _scene(0, n=24)
    opts = RenderOptions(near=0.2, far=50.0, eps2d=0.25, tile_size=8)
    kw = gsplat_inputs(Gaussians(*(getattr(gaussians, f).double() for f in FIELDS)), cam, opts)
    assert all(t.dtype == torch.float32 for t in kw.values() if isinstance(t, torch.Tensor))
    torch.testing.assert_close(kw["viewmats"], cam.world_to_cam[None])  # world-to-camera, not inverted
    torch.testing.assert_close(kw["Ks"], cam.K[None])
    torch.testing.assert_close(kw["quats"], gaussians.quats)  # wxyz as is: gsplat normalises it
    torch.testing.assert_close(kw["scales"], gaussians.scales)
    torch.testing.assert_close(kw["colors"], gaussians.colors.clamp(0, 1))  # gsplat does not clamp
    assert (kw["width"], kw["height"]) == (70, 45)
    assert (kw["near_plane"], kw["far_plane"], kw["eps2d"], kw["tile_size"]) == (0.2, 50.0, 0.25, 8)
    assert kw["render_mode"] == "RGB+D" and kw["rasterize_mode"] == "classic"
    assert "backgrounds" not in kw and "sh_degree" not in kw


def test_inputs_keep_the_autograd_graph() -> None:
    gaussians, cam = _scene(1, n=10)
    leaves = [getattr(gaussians, f).clone().requires_grad_(True) for f in FIELDS]
    kw = gsplat_inputs(Gaussians(*leaves), cam)
    sum(kw[f].sum() for f in FIELDS).backward()
    assert all(leaf.grad is not None for leaf in leaves)


def test_non_finite_gaussians_are_culled() -> None:
    gaussians, cam = _scene(2, n=6)
    means, colors = gaussians.means.clone(), gaussians.colors.clone()
    means[1, 0], colors[3, 2] = float("nan"), float("inf")
    kw = gsplat_inputs(Gaussians(means, gaussians.quats, gaussians.scales, gaussians.opacities, colors), cam)
    assert all(bool(torch.isfinite(kw[f]).all()) for f in FIELDS)
    assert kw["opacities"][[1, 3]].tolist() == [0.0, 0.0]
    cam_z = kw["means"] @ cam.world_to_cam[:3, :3].T + cam.world_to_cam[:3, 3]
    torch.testing.assert_close(cam_z[[1, 3]], torch.zeros(2, 3), atol=1e-5, rtol=0)  # at the camera centre
    torch.testing.assert_close(kw["opacities"][[0, 2, 4, 5]], gaussians.opacities[[0, 2, 4, 5]])


def test_frame_from_gsplat_splits_rgb_depth_alpha() -> None:
    colors = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    alphas = torch.rand(1, 2, 3, 1)
    frame = frame_from_gsplat(colors, alphas, torch.float64)
    assert frame.rgb.dtype == torch.float64
    torch.testing.assert_close(frame.rgb, colors[0, ..., :3].double())
    torch.testing.assert_close(frame.depth, colors[0, ..., 3].double())
    torch.testing.assert_close(frame.alpha, alphas[0, ..., 0].double())
    with pytest.raises(ValueError, match="RGB\\+D"):
        frame_from_gsplat(colors[..., :3], alphas)


def test_options_gsplat_cannot_honour() -> None:
    assert (GSPLAT_ALPHA_MIN, GSPLAT_ALPHA_MAX, GSPLAT_TRANSMITTANCE_MIN) == (1 / 255, 0.999, 1e-4)
    assert unsupported_options(GSPLAT_OPTIONS) == []
    assert unsupported_options(RenderOptions(near=0.5, eps2d=0.1, tile_size=8)) == \
        ["alpha_max=0.99 (gsplat uses 0.999)"]  # our default alpha_max is Inria's, not gsplat's
    assert len(unsupported_options(RenderOptions(alpha_min=0.01, transmittance_min=1e-3))) == 3


def test_empty_scene_does_not_call_gsplat() -> None:
    def fail(**kwargs):
        raise AssertionError("called")

    _, cam = _scene(0)
    empty = Gaussians(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))
    frame = render_with(fail, empty, cam)
    assert frame.rgb.shape == (45, 70, 3) and float(frame.rgb.abs().sum() + frame.alpha.sum() + frame.depth.sum()) == 0


# ------------------------------------------- gsplat's rasterization() on the CPU


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_with_gsplat_thresholds(gsplat_on_cpu, seed: int) -> None:
    gaussians, cam = _scene(seed)
    ours = render_with(gsplat_on_cpu, gaussians, cam, GSPLAT_OPTIONS)
    ref = ReferenceRenderer().render(gaussians, cam, GSPLAT_OPTIONS)
    assert float(ref.alpha.max()) > 0.99 and float(ref.alpha.min()) < 0.5  # saturated and translucent pixels
    d = _diffs(ours, ref)
    # Measured: mean ~1e-8, max ~2e-7 (float32 rounding: gsplat's projection, 1 - T vs our
    # sum of weights). A contribution flipping at the alpha_min or transmittance_min
    # boundary would show as a max of ~4e-3; a convention error as much more.
    for f, (mean, mx) in d.items():
        assert mean <= 1e-6 and mx <= 1e-5, (f, d)


def test_default_options_differ_only_under_near_opaque_gaussians(gsplat_on_cpu) -> None:
    # Opacities <= 0.99: alpha = o * falloff never reaches either clamp, so gsplat's 0.999
    # and our default alpha_max 0.99 agree.
    gaussians, cam = _scene(3, opacity_max=0.99)
    d = _diffs(render_with(gsplat_on_cpu, gaussians, cam), ReferenceRenderer().render(gaussians, cam))
    assert all(mean <= 1e-6 and mx <= 1e-5 for mean, mx in d.values()), d
    # Opacities up to 1: gsplat composites up to 0.999 where we clamp at 0.99; pixels under
    # the cores of such Gaussians differ by up to ~1e-2 (the 0.009 extra alpha, and what
    # the 10x smaller transmittance hides behind them). Measured (seed 3): max 7e-3 alpha,
    # 5e-3 rgb, 9e-3 depth/3 m; mean ~4e-6.
    gaussians, cam = _scene(3, opacity_max=1.0)
    d = _diffs(render_with(gsplat_on_cpu, gaussians, cam), ReferenceRenderer().render(gaussians, cam))
    assert d["alpha"][1] > 1e-3 and all(mean <= 1e-4 and mx <= 2e-2 for mean, mx in d.values()), d


def test_gradients_match_reference(gsplat_on_cpu) -> None:
    """Through the adapter's preparation (cast, colour clamp) to all five fields."""
    gaussians, cam = _scene(4, n=60)
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(s, generator=g) for s in ((45, 70, 3), (45, 70), (45, 70))]
    grads = []
    for render in (lambda x: render_with(gsplat_on_cpu, x, cam, GSPLAT_OPTIONS),
                   lambda x: ReferenceRenderer().render(x, cam, GSPLAT_OPTIONS)):
        leaves = [getattr(gaussians, f).clone().requires_grad_(True) for f in FIELDS]
        frame = render(Gaussians(*leaves))
        loss = sum((t * w).sum() for t, w in zip((frame.rgb, frame.alpha, frame.depth), weights))
        loss.backward()
        grads.append([leaf.grad for leaf in leaves])
    for f, a, b in zip(FIELDS, *grads):
        assert float(b.abs().max()) > 0, f
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()), f  # measured <= 8e-6


def test_opencv_axes_and_wxyz(gsplat_on_cpu) -> None:
    """A Gaussian long along x, rotated 90 degrees about z by a wxyz quaternion, right of and
    below the optical axis of an identity camera: it lands right/below and is tall."""
    K = torch.tensor([[40.0, 0.0, 32.5], [0.0, 40.0, 24.5], [0.0, 0.0, 1.0]])
    cam = Camera(torch.eye(4), K, 64, 48)
    half = math.pi / 4
    g = Gaussians(torch.tensor([[0.4, 0.2, 2.0]]), torch.tensor([[math.cos(half), 0.0, 0.0, math.sin(half)]]),
                  torch.tensor([[0.3, 0.02, 0.02]]), torch.tensor([0.9]), torch.tensor([[1.0, 0.5, 0.25]]))
    frame = render_with(gsplat_on_cpu, g, cam)
    peak = int(frame.alpha.flatten().argmax())
    assert divmod(peak, 64) == (28, 40)  # (y, x): centre (32.5 + 40 * 0.2, 24.5 + 40 * 0.1) = pixel centre (40.5, 28.5)
    rows, cols = (frame.alpha > 0.1).any(dim=1).sum(), (frame.alpha > 0.1).any(dim=0).sum()
    assert rows > 3 * cols  # elongated vertically: R_z(90) maps x to y
    torch.testing.assert_close(frame.depth[28, 40] / frame.alpha[28, 40], torch.tensor(2.0))
    torch.testing.assert_close(frame.rgb[28, 40] / frame.alpha[28, 40], torch.tensor([1.0, 0.5, 0.25]))


def test_all_culled_and_non_finite(gsplat_on_cpu) -> None:
    gaussians, cam = _scene(5, n=12)
    behind = Gaussians(gaussians.means - torch.tensor([0.0, 0.0, 10.0]), *(getattr(gaussians, f) for f in FIELDS[1:]))
    frame = render_with(gsplat_on_cpu, behind, cam)
    assert float(frame.alpha.abs().sum() + frame.rgb.abs().sum()) == 0.0
    scales = gaussians.scales.clone()
    scales[4] = float("nan")
    bad = Gaussians(gaussians.means, gaussians.quats, scales, gaussians.opacities, gaussians.colors)
    keep = torch.arange(12) != 4
    clean = Gaussians(*(getattr(gaussians, f)[keep] for f in FIELDS))
    torch.testing.assert_close(render_with(gsplat_on_cpu, bad, cam).rgb, render_with(gsplat_on_cpu, clean, cam).rgb)


# ------------------------------------------------------------------ no CUDA here


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_construction_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(RendererUnavailable, match="needs CUDA"):
        GsplatRenderer()


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, check=True, timeout=120,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_import_does_not_import_gsplat() -> None:
    _run("""
        import sys
        import torch
        import engine.render.gsplat_backend as backend
        from engine.render.select import select
        assert not any(m == "gsplat" or m.startswith("gsplat.") for m in sys.modules), "imported at module import"
        select("cpu", prefer="reference")
        if not torch.cuda.is_available():
            try:
                backend.GsplatRenderer()
            except backend.RendererUnavailable:
                pass
            assert "gsplat" not in sys.modules, "imported by a construction that cannot succeed"
        """)


# --------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_gsplat_on_cuda_matches_reference() -> None:
    """The real CUDA kernels (forward and backward) against the reference, on the GPU.

    Not run on the development machine (no GPU). Tolerances are looser than on the CPU:
    gsplat's kernels are built with fast math (__expf) and sum in a different order.
    """
    from engine.render.select import select

    renderer = select("cuda", need_grad=True)
    assert isinstance(renderer, GsplatRenderer) and renderer.name == "gsplat" and renderer.differentiable
    gaussians, cam = _scene(0)
    gaussians = Gaussians(*(getattr(gaussians, f).cuda() for f in FIELDS))
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(s, generator=g).cuda() for s in ((45, 70, 3), (45, 70), (45, 70))]
    frames, grads = [], []
    for r in (renderer, ReferenceRenderer()):
        leaves = [getattr(gaussians, f).clone().requires_grad_(True) for f in FIELDS]
        frame = r.render(Gaussians(*leaves), cam, GSPLAT_OPTIONS)
        assert frame.rgb.device.type == "cuda" and frame.rgb.dtype == torch.float32
        sum((t * w).sum() for t, w in zip((frame.rgb, frame.alpha, frame.depth), weights)).backward()
        frames.append(frame)
        grads.append([leaf.grad for leaf in leaves])
    d = _diffs(*frames)
    assert all(mean <= 1e-4 and mx <= 1e-2 for mean, mx in d.values()), d
    for f, a, b in zip(FIELDS, *grads):
        assert bool(torch.isfinite(a).all()), f
        assert float((a - b).abs().max()) <= 2e-2 * float(b.abs().max()), f
    with pytest.warns(RuntimeWarning, match="alpha_max=0.99"):
        renderer.render(gaussians, cam)  # default options: gsplat clamps at 0.999
    with pytest.raises(ValueError, match="CUDA tensors"):
        renderer.render(Gaussians(*(getattr(gaussians, f).cpu() for f in FIELDS)), cam)
