"""The gsplat backend: gsplat's fused CUDA rasterizer behind our `Renderer` protocol.

A thin adapter around ``gsplat.rasterization`` (written against gsplat 1.5.3). It is
split into two pure functions, so that the conventions can be tested without a GPU:
`gsplat_inputs` (what goes into gsplat) and `frame_from_gsplat` (what comes out);
`render_with` chains them around any function with ``gsplat.rasterization``'s
signature. tests/engine/render/test_gsplat_backend.py runs gsplat's own
``rasterization()`` on the CPU, with its four CUDA kernels replaced by gsplat's
pure-torch ``_torch_impl`` functions and a transcription of the forward kernel, and
compares the result with `ReferenceRenderer`.

**gsplat is never imported at module import.** ``import gsplat`` happens when a
`GsplatRenderer` is constructed, and only after ``torch.cuda.is_available()``: gsplat
builds (JIT, minutes the first time, cached by torch) or loads its CUDA extension on
first use, and on a machine without CUDA it should not be touched at all. Construction
loads the extension right away, so a missing package or a failed build is a
`RendererUnavailable` at construction time, which `engine.render.select` turns into a
fallback to the next backend.

Conventions, checked in gsplat 1.5.3's source (``gsplat/rendering.py``,
``gsplat/cuda/_torch_impl.py``, ``gsplat/cuda/csrc/*.cu``):

- ``viewmats`` are world-to-camera [R | t] matrices, row-major, OpenCV axes (x right,
  y down, z forward; a Gaussian is projected with ``K[:2] @ x_cam / z``): exactly
  `Camera.world_to_cam`, passed as is with a leading camera axis of 1.
- ``Ks`` are 3x3 pinhole intrinsics in pixels: `Camera.K`; pixel (x, y) is sampled
  at its centre (x + 0.5, y + 0.5), as in our reference.
- ``quats`` are wxyz (the kernels read ``w = quat[0]``) and normalised inside gsplat;
  ``scales`` are activated (metres, not log); ``opacities`` in [0, 1]; with
  ``sh_degree=None`` ``colors`` are used as given (post-activation, **not clamped**,
  so the adapter clamps them to [0, 1] as the protocol requires).
- ``render_mode="RGB+D"`` appends each Gaussian's camera-space z as a fourth channel,
  composited like colour: sum_i w_i z_i, unnormalised, which is our `Frame.depth`
  ("RGB+ED" would divide it by alpha).
- Without ``backgrounds``, ``render_colors`` is sum_i c_i alpha_i T_i (premultiplied,
  nothing added for the background) and ``render_alphas`` is 1 - T_final = sum_i w_i:
  our `Frame.rgb` and `Frame.alpha`.

Differences from `ReferenceRenderer`, all documented by the tests:

- gsplat's kernels hard-code alpha_min = 1/255, alpha_max = 0.999 and
  transmittance_min = 1e-4. Our `RenderOptions.alpha_max` defaults to 0.99 (Inria's
  3DGS value), which gsplat cannot honour: where a Gaussian's opacity * falloff exceeds
  0.99 gsplat composites up to 0.999 instead, so pixels under near-opaque Gaussians
  differ by up to about 1e-2. `render` warns (once per distinct message) whenever
  `RenderOptions` asks for thresholds gsplat does not use; with
  ``RenderOptions(alpha_max=0.999)`` the two agree to float rounding.
- gsplat bins by an opacity-aware per-axis box (at most 3.33 sigma), we by the
  bounding square of the 3.33-sigma ellipse. Both contain every pixel where
  alpha >= 1/255, so images do not depend on it.
- gsplat culls centres with z < near (keeps z == near), we z <= near; only a centre
  exactly on the near plane differs.
- gsplat's rasterizer is float32 only (and built with fast math): inputs are cast to
  float32 and the frame is cast back to the Gaussians' dtype.
- Gaussians with a non-finite field are skipped (as in the native backend): they are
  moved to the camera centre (culled by the near plane) with opacity 0.
- ``options.tile_size`` is passed through (gsplat tests only 16; images do not depend
  on it).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from engine.render.base import RenderOptions, RendererUnavailable
from engine.types import Camera, Frame, Gaussians

__all__ = ["GsplatRenderer", "gsplat_inputs", "frame_from_gsplat", "render_with", "unsupported_options",
           "load_gsplat", "GSPLAT_ALPHA_MIN", "GSPLAT_ALPHA_MAX", "GSPLAT_TRANSMITTANCE_MIN"]

GSPLAT_ALPHA_MIN = 1.0 / 255.0
"""ALPHA_THRESHOLD in gsplat/cuda/include/Common.h."""
GSPLAT_ALPHA_MAX = 0.999
"""``min(0.999f, opac * __expf(-sigma))`` in gsplat's RasterizeToPixels3DGSFwd.cu."""
GSPLAT_TRANSMITTANCE_MIN = 1e-4
"""``if (next_T <= 1e-4f) { done = true; break; }`` in the same kernel."""

Rasterization = Callable[..., tuple[Tensor, Tensor, dict]]
"""``gsplat.rasterization``'s signature: (..., **kwargs) -> (render_colors, render_alphas, meta)."""


def unsupported_options(options: RenderOptions) -> list[str]:
    """The thresholds of ``options`` that gsplat's kernels cannot honour, as readable strings."""
    out = []
    for name, fixed in (("alpha_min", GSPLAT_ALPHA_MIN), ("alpha_max", GSPLAT_ALPHA_MAX),
                        ("transmittance_min", GSPLAT_TRANSMITTANCE_MIN)):
        value = getattr(options, name)
        if not math.isclose(value, fixed, rel_tol=1e-6):
            out.append(f"{name}={value:g} (gsplat uses {fixed:g})")
    return out


def gsplat_inputs(gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> dict[str, Any]:
    """Keyword arguments of ``gsplat.rasterization`` rendering ``gaussians`` seen by ``camera``.

    Tensors are float32 on the Gaussians' device and stay connected to the autograd graph
    of every field of ``gaussians``. One camera (C = 1), no batch dimensions.
    """
    device = gaussians.means.device

    def f32(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=torch.float32)

    means, quats, scales, opacities, colors = (f32(getattr(gaussians, f)) for f in
                                               ("means", "quats", "scales", "opacities", "colors"))
    viewmat, K = f32(camera.world_to_cam), f32(camera.K)
    finite = torch.isfinite(torch.cat([means, quats, scales, opacities[:, None], colors], dim=1)).all(dim=1)
    if not bool(finite.all()):
        keep = finite[:, None]
        centre = -viewmat[:3, :3].T @ viewmat[:3, 3]  # camera z = 0 there: culled by the near plane
        means = torch.where(keep, means, centre)
        quats = torch.where(keep, quats, quats.new_tensor([1.0, 0.0, 0.0, 0.0]))
        scales = torch.where(keep, scales, torch.zeros_like(scales))
        colors = torch.where(keep, colors, torch.zeros_like(colors))
        opacities = torch.where(finite, opacities, torch.zeros_like(opacities))
    return dict(
        means=means,                     # [N, 3] world, metres
        quats=quats,                     # [N, 4] wxyz, normalised by gsplat
        scales=scales,                   # [N, 3] activated
        opacities=opacities,             # [N]
        colors=colors.clamp(0.0, 1.0),   # [N, 3] post-activation (sh_degree=None)
        viewmats=viewmat[None],          # [1, 4, 4] world-to-camera, OpenCV
        Ks=K[None],                      # [1, 3, 3]
        width=camera.width,
        height=camera.height,
        near_plane=float(options.near),
        far_plane=float(options.far),
        eps2d=float(options.eps2d),
        tile_size=int(options.tile_size),
        render_mode="RGB+D",             # depth channel = sum w z, unnormalised: ours
        rasterize_mode="classic",        # no Mip-Splatting opacity compensation
        packed=True,                     # gsplat's default; results equal to packed=False
        absgrad=False,
        sparse_grad=False,
    )


def frame_from_gsplat(render_colors: Tensor, render_alphas: Tensor, dtype: torch.dtype = torch.float32) -> Frame:
    """Our `Frame` from ``gsplat.rasterization``'s outputs for one camera in "RGB+D" mode.

    render_colors [1, H, W, 4] (r, g, b, sum w z), render_alphas [1, H, W, 1]
    """
    if render_colors.dim() != 4 or render_colors.shape[0] != 1 or render_colors.shape[-1] != 4:
        raise ValueError(f"expected render_colors [1, H, W, 4] (one camera, RGB+D), got {list(render_colors.shape)}")
    if render_alphas.shape != render_colors.shape[:-1] + (1,):
        raise ValueError(f"expected render_alphas {list(render_colors.shape[:-1]) + [1]}, "
                         f"got {list(render_alphas.shape)}")
    out = render_colors[0].to(dtype)
    return Frame(rgb=out[..., :3], alpha=render_alphas[0, ..., 0].to(dtype), depth=out[..., 3])


def render_with(rasterization: Rasterization, gaussians: Gaussians, camera: Camera,
                options: RenderOptions = RenderOptions()) -> Frame:
    """`frame_from_gsplat(rasterization(**gsplat_inputs(...)))`; an empty scene gives an empty frame."""
    means = gaussians.means
    dtype = means.dtype if means.dtype.is_floating_point else torch.float32
    if len(gaussians) == 0:
        zeros = torch.zeros(camera.height, camera.width, 4, dtype=dtype, device=means.device)
        return Frame(rgb=zeros[..., :3], alpha=zeros[..., 3].clone(), depth=zeros[..., 3].clone())
    render_colors, render_alphas, _meta = rasterization(**gsplat_inputs(gaussians, camera, options))
    return frame_from_gsplat(render_colors, render_alphas, dtype)


@functools.cache
def load_gsplat() -> Rasterization:
    """``gsplat.rasterization``, with gsplat's CUDA extension loaded (built on the first call ever).

    Raises `RendererUnavailable` when CUDA is not available (without importing gsplat),
    when gsplat is not installed, or when its extension cannot be built or loaded.
    """
    if not torch.cuda.is_available():
        raise RendererUnavailable("the gsplat renderer needs CUDA, and torch.cuda.is_available() is False; "
                                  "use the native or reference renderer on this machine")
    try:
        import gsplat
    except ImportError as e:
        raise RendererUnavailable(f"gsplat is not installed ({e}); `pip install gsplat` to use it") from e
    try:
        # Importing _backend loads gsplat's prebuilt extension, or JIT-compiles it with nvcc
        # (several minutes the first time, then cached by torch); it leaves _C None when no
        # CUDA toolkit is found.
        from gsplat.cuda._backend import _C
    except Exception as e:  # noqa: BLE001 - any build failure means "unavailable", with the reason
        raise RendererUnavailable(f"gsplat's CUDA extension failed to build or load: {e}") from e
    if _C is None:
        raise RendererUnavailable("gsplat's CUDA extension is not available: gsplat ships none prebuilt here and "
                                  "found no CUDA toolkit (nvcc) to compile it")
    return gsplat.rasterization


@dataclass(frozen=True)
class GsplatRenderer:
    """gsplat's CUDA rasterizer (forward and backward kernels) for CUDA tensors.

    Constructing it checks CUDA, imports gsplat and loads (or the first time builds) its
    CUDA extension; any failure raises `RendererUnavailable` saying why. See the module
    docstring for the conventions and the differences from `ReferenceRenderer`.
    """

    name: str = field(default="gsplat", init=False)
    differentiable: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        load_gsplat()

    def render(self, gaussians: Gaussians, camera: Camera, options: RenderOptions = RenderOptions()) -> Frame:
        """See `engine.render.base.Renderer`; the Gaussians must be CUDA tensors."""
        device = gaussians.means.device
        if device.type != "cuda":
            raise ValueError(f"the gsplat renderer renders CUDA tensors; got Gaussians on {device}")
        unsupported = unsupported_options(options)
        if unsupported:
            # The default warning filter shows each distinct message once per process.
            warnings.warn("gsplat's kernels use fixed thresholds; not honoured: " + ", ".join(unsupported)
                          + " (images differ slightly from the reference renderer)", RuntimeWarning, stacklevel=2)
        return render_with(load_gsplat(), gaussians, camera, options)


def make(device: torch.device, need_grad: bool) -> GsplatRenderer:
    """The gsplat renderer (`engine.render.select`'s registry entry): CUDA devices only."""
    if not torch.cuda.is_available():
        raise RendererUnavailable("gsplat needs CUDA, and torch.cuda.is_available() is False")
    if device.type != "cuda":
        raise RendererUnavailable(f"gsplat renders CUDA tensors, the device is {device}")
    return GsplatRenderer()
