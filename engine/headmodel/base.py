"""The head-model interface: FLAME-layout arrays and linear blend skinning.

Every head model (our OpenHead, a user's FLAME) is a `HeadModelData` in FLAME's layout,
so one `HeadModel` class poses all of them:

    verts = LBS(v_template + shapedirs·shape + exprdirs·expr + posedirs·pose_feature,
                joints = J_regressor·v_shaped, weights, kintree) + translation

The skinning itself is `smplx.lbs.lbs`, the same code `smplx.FLAME` runs, so a model
exported in FLAME layout poses identically through `smplx.FLAME` (tested to 1e-5).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import lbs
from torch import Tensor

from engine.device import HOST
from engine.types import JOINT_NAMES, HeadParams, Mesh


class HeadModelError(ValueError):
    """A head-model file is missing, malformed or inconsistent; the message names file and key."""


@dataclass(frozen=True)
class HeadModelData:
    """A head model in FLAME layout (numpy, float32 / int64). V vertices, F faces, J = 5 joints."""

    name: str                 # e.g. "openhead-1" or "flame2023"
    v_template: np.ndarray    # [V, 3] metres
    faces: np.ndarray         # [F, 3]
    shapedirs: np.ndarray     # [V, 3, S] identity basis
    exprdirs: np.ndarray      # [V, 3, E] expression basis
    posedirs: np.ndarray      # [V, 3, 9*(J-1)] pose correctives (FLAME layout, before smplx's transpose)
    J_regressor: np.ndarray   # [J, V]
    weights: np.ndarray       # [V, J] skinning weights, rows sum to 1
    parents: np.ndarray       # [J] parent joint index, -1 for the root
    uvs: np.ndarray           # [T, 2] in [0, 1], v up
    uv_faces: np.ndarray      # [F, 3]
    lmk_faces: np.ndarray     # [L] face index of each landmark
    lmk_bary: np.ndarray      # [L, 3] barycentric coordinates of each landmark
    expr_names: tuple[str, ...]  # [E] names of the expression components ("" where unnamed)
    lmk_ids: np.ndarray | None = None  # [L] FaceMesh index of each landmark; None: landmark i is point i
    charts: str = ""          # the UV atlas' layout, what the generators may rely on: "openhead" (eyeballs,
                              # teeth and mouth cavity on charts of their own, the face chart's UV vertex i
                              # is FaceMesh point i); "" for an atlas they know nothing of (FLAME)

    def __post_init__(self) -> None:
        if self.lmk_ids is None:
            object.__setattr__(self, "lmk_ids", np.arange(len(self.lmk_faces), dtype=np.int64))
        v, f = len(self.v_template), len(self.faces)
        j = len(JOINT_NAMES)
        want = {
            "v_template": (v, 3), "faces": (f, 3), "shapedirs": (v, 3, None), "exprdirs": (v, 3, None),
            "posedirs": (v, 3, 9 * (j - 1)), "J_regressor": (j, v), "weights": (v, j), "parents": (j,),
            "uvs": (None, 2), "uv_faces": (f, 3), "lmk_faces": (None,), "lmk_bary": (len(self.lmk_faces), 3),
            "lmk_ids": (len(self.lmk_faces),),
        }
        for key, shape in want.items():
            arr = getattr(self, key)
            if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape)):
                raise HeadModelError(f"head model {self.name!r}: {key} has shape {arr.shape}, expected {shape}")
        if len(self.expr_names) != self.exprdirs.shape[2]:
            raise HeadModelError(f"head model {self.name!r}: {len(self.expr_names)} expr_names for "
                                 f"{self.exprdirs.shape[2]} expression components")
        if self.faces.max() >= v or self.uv_faces.max() >= len(self.uvs):
            raise HeadModelError(f"head model {self.name!r}: face indices out of range")

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[2]

    @property
    def n_expr(self) -> int:
        return self.exprdirs.shape[2]

    def save(self, path: str | Path) -> None:
        """Atomically: a build interrupted while writing never leaves a half-written cache."""
        from engine.atomic import atomic_path

        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "expr_names")}
        with atomic_path(path) as tmp:
            np.savez(tmp, name=np.array(self.name), expr_names=np.array(self.expr_names, dtype=str), **arrays)

    @staticmethod
    def load(path: str | Path) -> "HeadModelData":
        import zipfile
        import zlib

        try:
            z = np.load(path, allow_pickle=False)
            with z:
                optional = ("lmk_ids", "charts")
                missing = [f.name for f in fields(HeadModelData) if f.name not in z.files and f.name not in optional]
                if missing:
                    raise HeadModelError(f"head model {path} lacks key(s) {', '.join(missing)}")
                kw = {f.name: z[f.name] for f in fields(HeadModelData) if f.name in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:   # truncated or damaged
            raise HeadModelError(f"cannot read head model {path}: {e}") from e
        kw["name"] = str(kw["name"])
        if "charts" in kw:
            kw["charts"] = str(kw["charts"])
        kw["expr_names"] = tuple(str(s) for s in kw["expr_names"])
        return HeadModelData(**kw)

    def digest(self) -> str:
        """A short content hash: two models with the same digest pose identically."""
        h = hashlib.sha256()
        for f in fields(self):
            h.update(np.ascontiguousarray(getattr(self, f.name)).tobytes() if f.name not in ("name", "expr_names")
                     else repr(getattr(self, f.name)).encode())
        return h.hexdigest()[:16]


def load_data(path: str | Path) -> HeadModelData:
    """A head model written by `HeadModelData.save` (``python -m engine.headmodel.openhead --out``)."""
    return HeadModelData.load(path)


class HeadModel:
    """Poses a `HeadModelData` with linear blend skinning. Holds tensors only; no hidden state.

    Example:
        >>> model = HeadModel(load_openhead())
        >>> params = HeadParams.neutral(model.n_shape, model.n_expr)
        >>> verts = model.vertices(params)      # [1, V, 3]
    """

    def __init__(self, data: HeadModelData, device: torch.device | str | None = None) -> None:
        self.data = data
        self.name = data.name
        self.charts = data.charts
        # The process's compute device (`engine.device.resolve`); everything posed, bound and
        # rendered for this model lives there. None: the host (tests, tools).
        self.device = torch.device(device) if device is not None else HOST
        device = self.device
        t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731
        self.v_template = t(data.v_template)                                   # [V, 3]
        self.faces = t(data.faces, torch.int64)                                # [F, 3]
        self.dirs = t(np.concatenate([data.shapedirs, data.exprdirs], axis=2))  # [V, 3, S+E]
        self.posedirs = t(data.posedirs.reshape(-1, data.posedirs.shape[2]).T)  # [P, V*3] as smplx stores it
        self.J_regressor = t(data.J_regressor)                                 # [J, V]
        self.weights = t(data.weights)                                         # [V, J]
        self.parents = t(data.parents, torch.int64)                            # [J]
        self.uvs = t(data.uvs)                                                 # [T, 2]
        self.uv_faces = t(data.uv_faces, torch.int64)                          # [F, 3]
        self.lmk_faces = t(data.lmk_faces, torch.int64)                        # [L]
        self.lmk_bary = t(data.lmk_bary)                                       # [L, 3]
        self.lmk_ids = t(data.lmk_ids, torch.int64)                            # [L] FaceMesh index of each
        self.expr_names = data.expr_names
        # The joints' rest positions and their blendshape directions, for rigid parts (`engine.headmodel.outer`).
        self.joints_template = self.J_regressor @ self.v_template                             # [J, 3]
        self.joint_dirs = torch.einsum("jv,vcs->jcs", self.J_regressor, self.dirs)             # [J, 3, S+E]
        self._slots: dict = {}
        self._outer = None
        self._host: HeadModel | None = None

    def host(self) -> "HeadModel":
        """This head model on the host: the landmark tracker and the projective warp fit small
        problems in numpy there, whatever the compute device is. Itself when on the host."""
        if self.device == HOST:
            return self
        if self._host is None:
            self._host = HeadModel(self.data)
        return self._host

    def uv_slots(self, resolution: int = 256):
        """The Gaussian slots of this model's UV layout at ``resolution`` on its device (computed once: ~1 s)."""
        from engine.binding import rasterize_uv

        if resolution not in self._slots:
            slots = rasterize_uv(self.uvs.cpu().numpy(), self.uv_faces.cpu().numpy(), resolution)
            self._slots[resolution] = slots.to(self.device)
        return self._slots[resolution]

    def outer(self):
        """The outer layer of this model (hair shell and bust, `engine.headmodel.outer`) on its device (built once)."""
        from engine.headmodel.outer import build_outer

        if self._outer is None:
            self._outer = build_outer(self) if self.device == HOST else self.host().outer().to(self.device)
        return self._outer

    @property
    def n_shape(self) -> int:
        return self.data.n_shape

    @property
    def n_expr(self) -> int:
        return self.data.n_expr

    @property
    def cond_dim(self) -> int:
        """Length of the expression code `HeadParams.condition` (expression, jaw, neck, eyes): E + 12."""
        return self.n_expr + 12

    def neutral(self, batch: int = 1) -> HeadParams:
        return HeadParams.neutral(self.n_shape, self.n_expr, batch, self.v_template.device)

    def check(self, params: HeadParams) -> None:
        """Raise ValueError if ``params`` do not fit this model's basis sizes."""
        if params.shape.shape[1] != self.n_shape or params.expr.shape[1] != self.n_expr:
            raise ValueError(f"{self.name} takes shape[{self.n_shape}] and expr[{self.n_expr}], got "
                             f"shape[{params.shape.shape[1]}] and expr[{params.expr.shape[1]}]")

    def forward(self, params: HeadParams) -> tuple[Tensor, Tensor]:
        """Posed vertices [B, V, 3] and joints [B, J, 3] in world space (metres)."""
        self.check(params)
        betas = torch.cat([params.shape, params.expr], dim=1)
        pose = params.full_pose().reshape(params.batch_size, -1)
        verts, joints = lbs(betas, pose, self.v_template, self.dirs, self.posedirs,
                            self.J_regressor, self.parents, self.weights, pose2rot=True)
        t = params.translation[:, None, :]
        return verts + t, joints + t

    def vertices(self, params: HeadParams) -> Tensor:
        """Posed vertices [B, V, 3]."""
        return self.forward(params)[0]

    def joints_rest(self, shape: Tensor | None = None) -> Tensor:
        """Joint positions [J, 3] of the (shaped) rest mesh."""
        v = self.v_template
        if shape is not None:
            v = v + torch.einsum("vcs,s->vc", self.dirs[..., : self.n_shape], shape)
        return self.J_regressor @ v

    def landmarks(self, verts: Tensor) -> Tensor:
        """Landmarks [B, L, 3] of posed vertices [B, V, 3] through the landmark embedding."""
        tri = verts[:, self.faces[self.lmk_faces]]            # [B, L, 3, 3]
        return torch.einsum("blkc,lk->blc", tri, self.lmk_bary)

    def mesh(self, verts: Tensor) -> Mesh:
        """A `Mesh` of one frame of vertices [V, 3]."""
        return Mesh(verts, self.faces, self.uvs, self.uv_faces)
