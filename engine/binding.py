"""Gaussian binding (paper §2.1): one Gaussian per valid texel of the UV raster, rigidly
attached to the triangle under it.

    x = R_f · x_local · s_f + c_f,   q = q_f ⊗ q_local,   s = s_local · s_f

``c_f`` is the triangle's centroid, ``R_f`` its frame (first edge, normal, their cross),
``s_f`` its scale (mean edge length: it never vanishes on a sliver, unlike sqrt(area)).
The slots (face index and barycentrics of every valid texel) depend only on the head
model's UV layout, so the count and binding never change after creation.
Texel (row i, column j) of an R x R raster has its centre at u = (j + ½)/R, v = 1 − (i + ½)/R.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.rotations import quat_multiply, quat_to_rotmat, rotmat_to_quat
from engine.types import Gaussians, UVGaussians, check_shape


@dataclass(frozen=True)
class UVSlots:
    """The valid texels of an R x R UV raster and where each one sits on the mesh. N slots."""

    resolution: int
    valid: Tensor     # [R, R] bool
    texel: Tensor     # [N] flat texel index (row-major) of each slot
    face: Tensor      # [N] int64 triangle index
    bary: Tensor      # [N, 3] barycentric coordinates in that triangle

    def __len__(self) -> int:
        return self.texel.shape[0]

    def to(self, device: torch.device) -> "UVSlots":
        """The same slots with their index tensors on ``device`` (``valid`` stays on the host:
        it is only compared and counted)."""
        if self.texel.device == torch.device(device):
            return self
        return UVSlots(self.resolution, self.valid, self.texel.to(device), self.face.to(device), self.bary.to(device))

    def gather(self, uv_map: Tensor) -> Tensor:
        """Per-slot values [N, C] of a UV map [C, R, R]."""
        # Rows of the transposed view: the result is contiguous [N, C]; indexing columns and
        # transposing gave a strided tensor on which per-row norms were 10x slower.
        return uv_map.reshape(uv_map.shape[0], -1).T[self.texel]

    def neighbours(self, faces: Tensor | None = None) -> Tensor:
        """[P, 2] slot indices of the slots side by side in the raster (each pair once: the texel
        to the right and the one below). With ``faces`` [F, 3] only pairs whose triangles share a
        mesh vertex: texels that touch in the raster but lie on separate UV islands are not
        neighbours on the surface."""
        R = self.resolution
        texel = self.texel.cpu()
        index = torch.full((R * R,), -1, dtype=torch.long)
        index[texel] = torch.arange(len(texel))
        row, col = texel // R, texel % R
        pairs = []
        for ok, step in ((col < R - 1, 1), (row < R - 1, R)):
            other = index[(texel + step).clamp(max=R * R - 1)]
            keep = ok & (other >= 0)
            pairs.append(torch.stack([torch.nonzero(keep)[:, 0], other[keep]], 1))
        pairs = torch.cat(pairs)
        if faces is not None:
            tri = faces.cpu()[self.face.cpu()]                      # [N, 3] vertex indices
            a, b = tri[pairs[:, 0]], tri[pairs[:, 1]]
            pairs = pairs[(a[:, :, None] == b[:, None, :]).flatten(1).any(1)]
        return pairs.to(self.texel.device)

    def scatter(self, values: Tensor) -> Tensor:
        """A UV map [C, R, R] holding per-slot ``values`` [N, C], zeros elsewhere."""
        out = values.new_zeros(values.shape[1], self.resolution * self.resolution)
        out[:, self.texel] = values.T
        return out.reshape(values.shape[1], self.resolution, self.resolution)


def rasterize_uv(uvs: np.ndarray, uv_faces: np.ndarray, resolution: int) -> UVSlots:
    """Slots of every texel centre covered by a UV triangle. uvs [T, 2], uv_faces [F, 3].

    A texel on an edge shared by two triangles goes to the lower triangle index. Every texel of
    every triangle's bounding box is tested at once (at 256² about 0.2 M candidates; the loop
    over triangles it replaces took 1.5–2.5 s, paid at the start of every command)."""
    R = resolution
    tri = uvs[uv_faces] * R                                       # [F, 3, 2] in texel units
    tri[..., 1] = R - tri[..., 1]                                 # v up -> row down
    lo = np.clip(np.floor(tri.min(1) - 0.5).astype(np.int64), 0, R - 1)
    hi = np.clip(np.ceil(tri.max(1) - 0.5).astype(np.int64), 0, R - 1)
    a = tri[:, 0]
    e1, e2 = tri[:, 1] - a, tri[:, 2] - a
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    faces = np.nonzero(np.abs(det) >= 1e-12)[0]                   # degenerate triangles cover nothing
    width = hi[faces, 0] - lo[faces, 0] + 1
    count = width * (hi[faces, 1] - lo[faces, 1] + 1)             # texels in each bounding box
    f = np.repeat(faces, count)                                   # candidates in triangle order
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    w = np.repeat(width, count)
    col, row = lo[f, 0] + k % w, lo[f, 1] + k // w
    d = np.stack([col + 0.5, row + 0.5], 1) - a[f]
    l1 = (e2[f, 1] * d[:, 0] - e2[f, 0] * d[:, 1]) / det[f]       # the 2x2 inverse written out
    l2 = (e1[f, 0] * d[:, 1] - e1[f, 1] * d[:, 0]) / det[f]
    bary = np.stack([1 - (l1 + l2), l1, l2], 1)
    inside = (bary >= -1e-9).all(1)
    texel, first = np.unique(row[inside] * R + col[inside], return_index=True)   # first: the lowest triangle
    face_of = np.full(R * R, -1, np.int64)
    face_of[texel] = f[inside][first]
    bary = np.clip(bary[inside][first], 0, 1)
    bary /= bary.sum(1, keepdims=True)
    return UVSlots(R, torch.from_numpy(face_of.reshape(R, R) >= 0), torch.from_numpy(texel),
                   torch.from_numpy(face_of[texel]), torch.from_numpy(bary).float())


@dataclass(frozen=True)
class TriangleFrames:
    """Per-triangle rigid frames of a posed mesh. F triangles."""

    centroid: Tensor  # [F, 3]
    rotation: Tensor  # [F, 3, 3] columns: first edge, normal, edge x normal
    scale: Tensor     # [F] mean edge length


def triangle_frames(verts: Tensor, faces: Tensor) -> TriangleFrames:
    """Frames of the triangles ``faces`` [F, 3] of vertices ``verts`` [V, 3]."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e0 = torch.nn.functional.normalize(v1 - v0, dim=-1)
    n = torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)
    R = torch.stack([e0, n, torch.linalg.cross(e0, n)], dim=-1)
    scale = ((v1 - v0).norm(dim=-1) + (v2 - v1).norm(dim=-1) + (v0 - v2).norm(dim=-1)) / 3
    return TriangleFrames((v0 + v1 + v2) / 3, R, scale)


@dataclass(frozen=True)
class SlotFrames:
    """The parent-triangle frame of every slot on one posed mesh. N slots."""

    rotation: Tensor  # [N, 3, 3]
    quat: Tensor      # [N, 4] wxyz, the same rotation
    centroid: Tensor  # [N, 3]
    scale: Tensor     # [N]


def slot_frames(slots: UVSlots, verts: Tensor, faces: Tensor) -> SlotFrames:
    """Per-slot frames of the mesh (verts [V, 3], faces [F, 3])."""
    check_shape(verts, (None, 3), "verts")
    fr = triangle_frames(verts, faces)
    # Per-face work first (F ~ 13K), then gathered to the slots (N ~ 62K): the frame's
    # quaternion was the costliest step of a refinement iteration when done per slot.
    f = slots.face
    return SlotFrames(fr.rotation[f], rotmat_to_quat(fr.rotation)[f], fr.centroid[f], fr.scale[f])


@dataclass(frozen=True)
class Activated:
    """Per-slot attributes after their activations (what `place` applies to pre-activation
    ones): unit quaternion [N, 4], scale relative to the triangle [N, 3], opacity [N], colour [N, 3].
    Posing a fixed avatar then skips the activations on every frame."""

    local_position: Tensor
    unit_quat: Tensor
    rel_scale: Tensor
    opacity: Tensor
    color: Tensor

    @staticmethod
    def of(local_position: Tensor, rotation: Tensor, log_scale: Tensor, color: Tensor, opacity: Tensor) -> "Activated":
        return Activated(local_position, torch.nn.functional.normalize(rotation, dim=-1), torch.exp(log_scale),
                         torch.sigmoid(opacity[:, 0]), color.clamp(0, 1))


def place(frames: SlotFrames, local_position: Tensor, rotation: Tensor, log_scale: Tensor, color: Tensor,
          opacity: Tensor) -> Gaussians:
    """World-space Gaussians of per-slot pre-activation attributes ([N, 3], [N, 4], [N, 3], [N, 3], [N, 1])
    on their frames: x = R·x_local·s + c, q = q_f ⊗ normalize(q_local), scale = exp(log_s)·s."""
    return place_activated(frames, Activated.of(local_position, rotation, log_scale, color, opacity))


def place_activated(frames: SlotFrames, a: Activated) -> Gaussians:
    """`place` for attributes already activated."""
    s = frames.scale[:, None]
    # Written out rather than einsum/bmm: 62K 3x3 products were 3x slower as batched matmuls.
    R, x = frames.rotation, a.local_position
    means = (R[:, :, 0] * x[:, :1] + R[:, :, 1] * x[:, 1:2] + R[:, :, 2] * x[:, 2:]) * s + frames.centroid
    return Gaussians(means, quat_multiply(frames.quat, a.unit_quat), a.rel_scale * s, a.opacity, a.color)


def pose_slots(slots: UVSlots, verts: Tensor, faces: Tensor, a: Activated) -> Gaussians:
    """`place_activated(slot_frames(slots, verts, faces), a)`, in one native pass when nothing
    needs a gradient and the tensors are on the CPU (the display path: about 1 ms instead of
    about 10 for a 62K-slot avatar on 2 threads, `python main.py bench pose`); else in torch."""
    fields = (verts, a.local_position, a.unit_quat, a.rel_scale)
    if verts.device.type == "cpu" and verts.dtype in (torch.float32, torch.float64) \
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in fields)) \
            and all(t.dtype == verts.dtype for t in fields):
        from engine.native import available, load

        if available():
            means, quats, scales = load().pose_slots(*(t.detach().contiguous() for t in (verts, faces, slots.face)),
                                                     *(t.detach().contiguous() for t in fields[1:]))
            return Gaussians(means, quats, scales, a.opacity, a.color)
    return place_activated(slot_frames(slots, verts, faces), a)


def bind(uvg: UVGaussians, slots: UVSlots, verts: Tensor, faces: Tensor) -> Gaussians:
    """World-space Gaussians of UV-layout Gaussians on a posed mesh (verts [V, 3], faces [F, 3])."""
    if uvg.resolution != slots.resolution:
        raise ValueError(f"UV maps are {uvg.resolution}² but the slots are {slots.resolution}²")
    g = slots.gather
    return place(slot_frames(slots, verts, faces), g(uvg.local_position), g(uvg.rotation), g(uvg.log_scale),
                 g(uvg.color), g(uvg.opacity))


def surface_init(slots: UVSlots, verts: Tensor, faces: Tensor, colors: Tensor, opacity: float | Tensor = 0.99,
                 thickness: float = 0.35, max_width: Tensor | None = None) -> UVGaussians:
    """UV Gaussians lying on the surface of a rest mesh: each at its texel's surface point,
    flat (``thickness`` of its width along the normal), as wide as the texel's footprint, or
    ``max_width`` [N] metres where that is smaller (a lid's Gaussians beside the eye opening).

    colors: [N, 3] per slot; opacity: one value or [N]. The footprint is measured from neighbouring texels' surface
    points, so texels of densely mapped regions (the face) get small Gaussians."""
    fr = triangle_frames(verts, faces)
    tri = verts[faces[slots.face]]                                      # [N, 3, 3]
    p = torch.einsum("nk,nkc->nc", slots.bary, tri)
    R, c, s = fr.rotation[slots.face], fr.centroid[slots.face], fr.scale[slots.face]
    local = torch.einsum("nji,nj->ni", R, p - c) / s[:, None]
    width = texel_footprint(slots, p)
    if max_width is not None:
        width = torch.minimum(width, max_width.to(width))
    log_scale = torch.log(torch.stack([width, width * thickness, width], 1) / s[:, None])
    n = len(slots)
    rot = torch.zeros(n, 4)
    rot[:, 0] = 1
    alpha = torch.as_tensor(opacity, dtype=torch.float32).clamp(1e-4, 1 - 1e-4).expand(n)   # per slot or one value
    logit = torch.log(alpha / (1 - alpha))[:, None]
    to_map = slots.scatter
    return UVGaussians(to_map(local), to_map(rot), to_map(log_scale), to_map(colors), to_map(logit), slots.valid)


def texel_footprint(slots: UVSlots, points: Tensor) -> Tensor:
    """Per-slot distance [N] to the surface points of the texels right and below (the mean of
    those that are valid, else the slot's own triangle scale is not known here: 1 mm)."""
    R = slots.resolution
    grid = torch.full((R * R, 3), float("nan"))
    grid[slots.texel] = points
    grid = grid.reshape(R, R, 3)
    dx = (grid[:, 1:] - grid[:, :-1]).norm(dim=-1)
    dy = (grid[1:] - grid[:-1]).norm(dim=-1)
    d = torch.stack([
        torch.nn.functional.pad(dx, (0, 1), value=float("nan")), torch.nn.functional.pad(dx, (1, 0), value=float("nan")),
        torch.nn.functional.pad(dy, (0, 0, 0, 1), value=float("nan")), torch.nn.functional.pad(dy, (0, 0, 1, 0), value=float("nan"))])
    d = torch.where(d < 0.02, d, torch.full_like(d, float("nan")))    # a neighbour across a chart seam is not adjacent
    width = torch.nanmean(d, dim=0).reshape(-1)[slots.texel]
    return torch.nan_to_num(width, nan=0.001).clamp(0.0003, 0.01)
