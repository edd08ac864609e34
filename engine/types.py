"""Core value types shared by every part of the engine.

Conventions (pinned by tests/engine/test_types.py):
- lengths in metres;
- quaternions are (w, x, y, z), unit norm where a rotation is meant;
- cameras are OpenCV: x right, y down, z forward; `world_to_cam` maps world points to
  camera coordinates and `K` is the 3x3 pinhole intrinsic matrix in pixels;
- head-model joints are ordered root, neck, jaw, eye_L, eye_R (FLAME's order), and
  every pose is axis-angle;
- colours are linear RGB in [0, 1].

All types are frozen dataclasses; shapes are checked once, in ``__post_init__``.
Derive new values with ``dataclasses.replace``; never mutate a field in place.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

JOINT_NAMES: tuple[str, ...] = ("root", "neck", "jaw", "eye_L", "eye_R")


def check_shape(x: Tensor, shape: Sequence[int | None], name: str) -> None:
    """Raise ValueError unless ``x`` has ``shape`` (``None`` matches any size)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")


@dataclass(frozen=True)
class HeadParams:
    """Parameters of a head model for B frames. FLAME-compatible names, axis-angle poses.

    ``eyes`` holds the left eye's axis-angle in [:, :3] and the right eye's in [:, 3:].
    The residual-head conditioning code is ``concat(expr, jaw, neck, eyes)`` (E + 12).
    """

    shape: Tensor        # [B, S] identity coefficients
    expr: Tensor         # [B, E] expression coefficients
    rotation: Tensor     # [B, 3] global (root) axis-angle
    neck: Tensor         # [B, 3] axis-angle
    jaw: Tensor          # [B, 3] axis-angle
    eyes: Tensor         # [B, 6] left | right axis-angle
    translation: Tensor  # [B, 3] metres

    def __post_init__(self) -> None:
        check_shape(self.shape, (None, None), "HeadParams.shape")
        b = self.shape.shape[0]
        check_shape(self.expr, (b, None), "HeadParams.expr")
        for name in ("rotation", "neck", "jaw", "translation"):
            check_shape(getattr(self, name), (b, 3), f"HeadParams.{name}")
        check_shape(self.eyes, (b, 6), "HeadParams.eyes")

    @staticmethod
    def neutral(n_shape: int, n_expr: int, batch: int = 1, device: torch.device | str = "cpu") -> "HeadParams":
        """All-zero parameters: the template head, looking straight ahead."""
        z = lambda n: torch.zeros(batch, n, device=device)  # noqa: E731
        return HeadParams(z(n_shape), z(n_expr), z(3), z(3), z(3), z(6), z(3))

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    def is_finite(self) -> bool:
        """Whether every value is finite (no NaN or infinity anywhere)."""
        return all(bool(torch.isfinite(getattr(self, f.name)).all()) for f in fields(self))

    @property
    def requires_grad(self) -> bool:
        """Whether any value requires a gradient (the posing then has to be differentiable)."""
        return any(getattr(self, f).requires_grad for f in _HEAD_FIELDS)

    def condition(self) -> Tensor:
        """The residual-head conditioning code ``concat(expr, jaw, neck, eyes)``: [B, E+12]."""
        return torch.cat([self.expr, self.jaw, self.neck, self.eyes], dim=-1)

    def full_pose(self) -> Tensor:
        """Axis-angle of every joint in JOINT_NAMES order: [B, 5, 3]."""
        return torch.stack([self.rotation, self.neck, self.jaw, self.eyes[:, :3], self.eyes[:, 3:]], dim=1)

    def to(self, device: torch.device | str) -> "HeadParams":
        return HeadParams(*(getattr(self, f).to(device) for f in _HEAD_FIELDS))

    def cpu(self) -> "HeadParams":
        """A host copy (itself when on the host already)."""
        return HeadParams(*(getattr(self, f).cpu() for f in _HEAD_FIELDS))

    def frame(self, i: int) -> "HeadParams":
        """Frame ``i`` as a batch of one."""
        return HeadParams(*(getattr(self, f)[i : i + 1] for f in _HEAD_FIELDS))


_HEAD_FIELDS = ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")


@dataclass(frozen=True)
class Mesh:
    """A posed triangle mesh in world space (metres).

    UVs are indexed separately from positions, as in FLAME and OBJ: triangle f uses
    vertices ``faces[f]`` and texture coordinates ``uv_faces[f]``. UV (0, 0) is the
    bottom-left of the texture, v grows upwards.
    """

    verts: Tensor      # [V, 3] float32
    faces: Tensor      # [F, 3] int64
    uvs: Tensor        # [T, 2] float32 in [0, 1]
    uv_faces: Tensor   # [F, 3] int64

    def __post_init__(self) -> None:
        check_shape(self.verts, (None, 3), "Mesh.verts")
        check_shape(self.faces, (None, 3), "Mesh.faces")
        check_shape(self.uvs, (None, 2), "Mesh.uvs")
        check_shape(self.uv_faces, (self.faces.shape[0], 3), "Mesh.uv_faces")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera, OpenCV convention (x right, y down, z forward)."""

    world_to_cam: Tensor  # [4, 4]
    K: Tensor             # [3, 3] intrinsics in pixels
    width: int
    height: int

    def __post_init__(self) -> None:
        check_shape(self.world_to_cam, (4, 4), "Camera.world_to_cam")
        check_shape(self.K, (3, 3), "Camera.K")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera size must be positive, got {self.width}x{self.height}")

    @staticmethod
    def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 1.0, 0.0),
                fov_y_deg: float = 14.0, width: int = 512, height: int = 512) -> "Camera":
        """A camera at ``eye`` looking at ``target``; ``up`` is the world direction shown upwards."""
        eye_t = torch.tensor(eye, dtype=torch.float32)
        fwd = torch.tensor(target, dtype=torch.float32) - eye_t
        fwd = fwd / fwd.norm()
        right = torch.linalg.cross(fwd, torch.tensor(up, dtype=torch.float32))
        if right.norm() < 1e-6:
            # Looking along ``up`` (straight down or up): any perpendicular is as good; take the
            # one that keeps the world's -z (the back of a head) at the top of the image.
            right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, -1.0]) * torch.sign(fwd[1]))
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        R = torch.stack([right, down, fwd])  # rows: camera axes in world coordinates
        w2c = torch.eye(4)
        w2c[:3, :3] = R
        w2c[:3, 3] = -R @ eye_t
        f = 0.5 * height / torch.tan(torch.deg2rad(torch.tensor(fov_y_deg)) / 2)
        K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float32)
        return Camera(w2c, K, width, height)

    @property
    def position(self) -> Tensor:
        """Camera centre in world coordinates: [3]."""
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t

    def pixels(self, points: Tensor) -> Tensor:
        """Image positions [N, 2] (pixels) of world points [N, 3] in front of the camera."""
        c = points @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        uvw = c @ self.K.T
        return uvw[:, :2] / uvw[:, 2:]

    def to(self, device: torch.device | str) -> "Camera":
        """The same camera with its matrices on ``device`` (itself when they are there already)."""
        if self.K.device == torch.device(device):
            return self
        return replace(self, world_to_cam=self.world_to_cam.to(device), K=self.K.to(device))

    def resized(self, width: int, height: int) -> "Camera":
        """The same view at another image size (intrinsics scaled)."""
        K = self.K.clone()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return replace(self, K=K, width=width, height=height)


@dataclass(frozen=True)
class Gaussians:
    """World-space Gaussians ready to render. N = number of Gaussians."""

    means: Tensor      # [N, 3] float32, metres
    quats: Tensor      # [N, 4] wxyz, unit norm
    scales: Tensor     # [N, 3] activated (after exp), metres
    opacities: Tensor  # [N] in [0, 1]
    colors: Tensor     # [N, 3] linear RGB in [0, 1]

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        check_shape(self.means, (n, 3), "Gaussians.means")
        check_shape(self.quats, (n, 4), "Gaussians.quats")
        check_shape(self.scales, (n, 3), "Gaussians.scales")
        check_shape(self.opacities, (n,), "Gaussians.opacities")
        check_shape(self.colors, (n, 3), "Gaussians.colors")

    def __len__(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device | str) -> "Gaussians":
        """The same Gaussians on ``device`` (itself when they are there already)."""
        if self.means.device == torch.device(device):
            return self
        return Gaussians(*(getattr(self, f).to(device) for f in ("means", "quats", "scales", "opacities", "colors")))


@dataclass(frozen=True)
class UVGaussians:
    """Gaussians in the UV layout of a head model: one slot per valid texel of an R x R raster.

    All maps are pre-activation, in the local frame of each texel's parent triangle
    (paper §2.1): ``local_position`` is divided by the triangle scale, ``log_scale`` is the
    log of the scale relative to the triangle scale, ``rotation`` is an unnormalised wxyz
    quaternion relative to the triangle frame, ``opacity`` is a logit, ``color`` is linear
    RGB (clamped to [0, 1] when rendered, as 3DGS clamps its DC colour).
    Texels outside ``valid`` carry zeros and are never rendered.
    """

    local_position: Tensor  # [3, R, R]
    rotation: Tensor        # [4, R, R] wxyz
    log_scale: Tensor       # [3, R, R]
    color: Tensor           # [3, R, R]
    opacity: Tensor         # [1, R, R] logit
    valid: Tensor           # [R, R] bool

    def __post_init__(self) -> None:
        r = self.valid.shape[0]
        check_shape(self.valid, (r, r), "UVGaussians.valid")
        if self.valid.dtype != torch.bool:
            raise TypeError(f"UVGaussians.valid must be bool, got {self.valid.dtype}")
        for name, c in (("local_position", 3), ("rotation", 4), ("log_scale", 3), ("color", 3), ("opacity", 1)):
            check_shape(getattr(self, name), (c, r, r), f"UVGaussians.{name}")

    @property
    def resolution(self) -> int:
        return self.valid.shape[0]

    def maps(self) -> dict[str, Tensor]:
        """The attribute maps by name (a view, for saving and optimisers)."""
        return {name: getattr(self, name) for name in UV_MAP_CHANNELS}


UV_MAP_CHANNELS: dict[str, int] = {"local_position": 3, "rotation": 4, "log_scale": 3, "color": 3, "opacity": 1}


@dataclass(frozen=True)
class Frame:
    """A rendered image."""

    rgb: Tensor    # [H, W, 3] linear RGB, premultiplied by alpha (no background)
    alpha: Tensor  # [H, W] accumulated opacity in [0, 1]
    depth: Tensor  # [H, W] alpha-weighted camera-space z (metres), 0 where empty

    def __post_init__(self) -> None:
        check_shape(self.alpha, (None, None), "Frame.alpha")
        h, w = self.alpha.shape
        check_shape(self.rgb, (h, w, 3), "Frame.rgb")
        check_shape(self.depth, (h, w), "Frame.depth")

    def to_uint8(self, background: Sequence[float] = (1.0, 1.0, 1.0)):
        """The image composited on ``background`` as a numpy uint8 [H, W, 3] array."""
        bg = torch.tensor(background, dtype=self.rgb.dtype, device=self.rgb.device)
        img = self.rgb + (1 - self.alpha[..., None]) * bg
        return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@dataclass(frozen=True)
class Avatar:
    """An animatable avatar: UV-layout Gaussians bound to a head model, plus the subject's shape.

    ``head_model`` names the head model the UV layout belongs to (e.g. ``"openhead-1"``);
    ``metadata`` is JSON-serialisable (source files, creation time, generator, ...);
    ``thumbnail`` is a uint8 [H, W, 3] numpy image or None; ``residual`` is None or a refined
    avatar's expression residual (`engine.residual.ExpressionResidual.state`: tensors by name,
    the per-slot features as a UV map [C, R, R]); ``outer`` is None or the Gaussians of the head
    model's outer page (hair shell and bust, `engine.headmodel.outer`), rigid with the head
    and the torso. An avatar without it (made before the outer layer) shows the head only.
    """

    gaussians: UVGaussians
    head_model: str
    shape: Tensor        # [S] identity coefficients of the subject
    metadata: dict
    thumbnail: object = None
    residual: dict | None = None
    outer: UVGaussians | None = None

    def __post_init__(self) -> None:
        check_shape(self.shape, (None,), "Avatar.shape")

    @property
    def n_gaussians(self) -> int:
        """Gaussians of the head page and, when there is one, the outer layer (one per valid slot)."""
        return int(self.gaussians.valid.sum()) + (0 if self.outer is None else int(self.outer.valid.sum()))
