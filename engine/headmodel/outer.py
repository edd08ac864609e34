"""The outer layer of a head model: a hair shell and a bust, beyond the head mesh.

A head mesh (OpenHead's or FLAME's) ends at the scalp and at a neck cut; hair that stands
off the skull, long hair, the ears' real outline and the shoulders are not on it. The
outer layer adds two charts of a second UV page, built the same way for any head model
from its rest mesh and joints:

* the **hair shell**: a star-shaped surface seen from a centre ``C`` inside the skull,
  one texel per (azimuth, elevation) direction from the crown down to below the jaw,
  all round except a cone in front of the face; its rest radius hugs the head mesh's
  outline from ``C``; rigid with the head (the ``neck`` joint);
* the **bust**: a surface round a vertical axis through the neck, one texel per
  (azimuth, height), from the neck down past the shoulders, a template that flares from
  the neck to the shoulders; rigid with the torso (the ``root`` joint).

Each chart is a regular grid whose vertices sit on texel corners, so every texel is one
quad and its slot (the first triangle of the quad, barycentrics (½, 0, ½): the quad's
centre) is known without rasterising. As on the head page, one Gaussian per slot, bound
rigidly to its triangle, count and binding fixed; the outer layer's geometry per subject
lives in the Gaussians' local positions (`engine.generator.outer` fits them).

Every slot also carries a *ray*: an origin and a unit direction in the rest frame (from
``C`` for the hair, from the bust's axis, horizontally, for the bust) and its template
radius along it, which is what the fit moves the Gaussian along.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import Tensor

from engine.binding import SlotFrames, UVSlots, slot_frames
from engine.rotations import quat_multiply, rotmat_to_quat
from engine.types import JOINT_NAMES, HeadParams

DEG = np.pi / 180
PAGE = 128                       # the outer page's raster: PAGE x PAGE texels
HAIR_ROWS = (0, 88)              # rows of the page holding the hair shell [start, end)
BUST_ROWS = (90, 128)            # rows holding the bust
HAIR_THETA = (88.0, -78.0)       # elevation (degrees) of the hair shell's top and bottom row edges
FACE_CONE = (62.0, -85.0, 32.0)  # |azimuth| below, elevation between: the face's own directions, no shell
BUST_DROP = (0.06, 0.12)        # the bust spans these depths (m) below the head mesh's lowest point
MARGIN = 0.004                   # the shell's rest radius stands this far off the head mesh (m)


@dataclass(frozen=True)
class OuterLayer:
    """The outer charts of one head model. Vo vertices, Fo faces, N slots."""

    verts: Tensor        # [Vo, 3] rest positions (template shape)
    faces: Tensor        # [Fo, 3]
    joint: Tensor        # [Vo] joint each vertex is rigid with (index into JOINT_NAMES)
    slots: UVSlots       # the outer page's slots: one per texel of a chart
    chart: Tensor        # [N] 0 hair, 1 bust
    origin: Tensor       # [N, 3] each slot's ray origin (rest frame)
    direction: Tensor    # [N, 3] unit ray direction
    radius: Tensor       # [N] template radius along the ray (m)
    mirror: Tensor       # [N] index of the slot mirrored left/right (x -> -x)
    rest: SlotFrames     # every slot's triangle frame on the rest vertices
    slot_joint: Tensor   # [N] joint each slot is rigid with

    def __len__(self) -> int:
        return len(self.slots)

    def to(self, device: torch.device) -> "OuterLayer":
        d = torch.device(device)
        if self.verts.device == d:
            return self
        rest = SlotFrames(*(getattr(self.rest, f.name).to(d) for f in fields(SlotFrames)))
        return OuterLayer(self.verts.to(d), self.faces.to(d), self.joint.to(d), self.slots.to(d), self.chart.to(d),
                          self.origin.to(d), self.direction.to(d), self.radius.to(d), self.mirror.to(d), rest,
                          self.slot_joint.to(d))

    def points(self, radius: Tensor) -> Tensor:
        """Rest-frame points [N, 3] at ``radius`` [N] along every slot's ray."""
        return self.origin + radius[:, None] * self.direction

    def pose(self, model, params: HeadParams) -> Tensor:
        """Posed outer vertices [B, Vo, 3] for ``params`` (each vertex rigid with its joint)."""
        A = joint_transforms(model, params)[:, self.joint]            # [B, Vo, 4, 4]
        v = self.verts.to(A.dtype)
        return torch.einsum("bvij,vj->bvi", A[..., :3, :3], v) + A[..., :3, 3]

    def transform_points(self, model, params: HeadParams, points: Tensor) -> Tensor:
        """Rest-frame points [N, 3] of the outer slots posed rigidly with each slot's joint: [N, 3] (frame 0)."""
        A = joint_transforms(model, params)[0][self.slot_joint]                        # [N, 4, 4]
        return torch.einsum("nij,nj->ni", A[:, :3, :3], points) + A[:, :3, 3]

    def slot_frames(self, model, params: HeadParams) -> SlotFrames:
        """The slots' frames posed for frame 0 of ``params``: `engine.binding.slot_frames` of the
        posed outer vertices, computed as the rigid motion of the rest frames (one rotation per
        joint instead of a frame per triangle)."""
        A = joint_transforms(model, params)[0]                                         # [J, 4, 4]
        R, t = A[:, :3, :3], A[:, :3, 3]
        q = rotmat_to_quat(R)                                                          # [J, 4]
        j = self.slot_joint
        rot = R[j] @ self.rest.rotation
        centroid = torch.einsum("nij,nj->ni", R[j], self.rest.centroid) + t[j]
        return SlotFrames(rot, quat_multiply(q[j], self.rest.quat), centroid, self.rest.scale)


def joint_transforms(model, params: HeadParams) -> Tensor:
    """World transforms [B, J, 4, 4] of the head model's joints for ``params``: a rest-frame
    point rigid with joint j lands at ``A[j] @ [p, 1]``, as linear blend skinning with all
    its weight on j would put it (pose correctives aside), translation included."""
    B = params.batch_size
    betas = torch.cat([params.shape, params.expr], dim=1)
    joints = model.joints_template[None] + torch.einsum("jcs,bs->bjc", model.joint_dirs, betas)
    rot = batch_rodrigues(params.full_pose().reshape(-1, 3)).reshape(B, -1, 3, 3)
    _, A = batch_rigid_transform(rot, joints, model.parents)
    A = A.clone()
    A[..., :3, 3] += params.translation[:, None, :]
    return A


# ---------------------------------------------------------------- construction
def _grid_quads(rows: range, valid: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of the texel quads of a chart whose vertex grid (rows+1) x (PAGE+1) starts at
    vertex ``base``; (faces [2Q, 3], texel [Q], first-face index [Q] within the result)."""
    cols = PAGE + 1
    faces, texels = [], []
    for k, i in enumerate(rows):
        for j in range(PAGE):
            if not valid[k, j]:
                continue
            a, b = base + k * cols + j, base + k * cols + j + 1
            c, d = base + (k + 1) * cols + j + 1, base + (k + 1) * cols + j
            faces += [(a, b, c), (a, c, d)]
            texels.append(i * PAGE + j)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    return faces, np.asarray(texels, np.int64), np.arange(0, len(faces), 2)


def _star_radius(points: np.ndarray, centre: np.ndarray, psi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Outline radius of a point cloud seen from ``centre`` in the directions (psi, theta)
    [H, W] (degrees, a regular grid): the largest radius of the points in each direction's
    bin and its neighbours; empty bins take their row's nearest filled bin."""
    d = points - centre
    r = np.linalg.norm(d, axis=1)
    p = np.degrees(np.arctan2(d[:, 0], d[:, 2]))
    t = np.degrees(np.arcsin(np.clip(d[:, 1] / np.maximum(r, 1e-9), -1, 1)))
    H, W = psi.shape
    dt = (theta[0, 0] - theta[-1, 0]) / max(H - 1, 1)
    i = np.clip(np.round((theta[0, 0] - t) / dt).astype(int), 0, H - 1)
    j = np.round((p + 180) / 360 * W - 0.5).astype(int) % W
    out = np.zeros((H, W))
    np.maximum.at(out, (i, j), r)
    import scipy.ndimage as ndi

    out = ndi.maximum_filter(out, size=3, mode=("nearest", "wrap"))
    empty = out <= 0
    if empty.all():
        raise ValueError("the head mesh has no vertices round its centre")
    if empty.any():
        idx = ndi.distance_transform_edt(empty, return_distances=False, return_indices=True)
        out = out[tuple(idx)]
    return out


def build_outer(model) -> OuterLayer:
    """The outer layer of a head model (`engine.headmodel.base.HeadModel`, on the host)."""
    v = model.v_template.cpu().numpy().astype(np.float64)
    joints = model.joints_rest().cpu().numpy().astype(np.float64)
    eye_y = float(joints[3:5, 1].mean())
    band = np.abs(v[:, 1] - eye_y) < 0.03
    centre = np.array([0.0, eye_y - 0.03, 0.5 * (v[band, 2].min() + v[band, 2].max())])
    cols = (np.arange(PAGE + 1) / PAGE) * 360 - 180                     # vertex columns: azimuth at texel corners

    # hair shell: vertex rows at texel corners, elevation from top to bottom
    h0, h1 = HAIR_ROWS
    theta_v = np.linspace(HAIR_THETA[0], HAIR_THETA[1], h1 - h0 + 1)
    psi_g, theta_g = np.meshgrid(cols, theta_v)
    dirs_v = _dirs(psi_g, theta_g)
    r_v = _star_radius(v, centre, psi_g, theta_g) + MARGIN
    hair_verts = centre + r_v[..., None] * dirs_v
    pc, tc = 0.5 * (psi_g[:-1, :-1] + psi_g[1:, 1:]), 0.5 * (theta_g[:-1, :-1] + theta_g[1:, 1:])   # texel centres
    face_cone = (np.abs(pc) < FACE_CONE[0]) & (tc > FACE_CONE[1]) & (tc < FACE_CONE[2])
    hair_faces, hair_texel, hair_first = _grid_quads(range(h0, h1), ~face_cone, 0)
    hair_dir = _dirs(pc, tc)[~face_cone]
    hair_r = 0.5 * (r_v[:-1, :-1] + r_v[1:, 1:])[~face_cone]

    # bust: round the vertical axis through the neck joint, from the neck cut down past the shoulders
    b0, b1 = BUST_ROWS
    neck = joints[JOINT_NAMES.index("neck")]
    y_low = float(v[:, 1].min())
    ys = np.linspace(y_low + BUST_DROP[0], y_low - BUST_DROP[1], b1 - b0 + 1)
    phi_g, y_g = np.meshgrid(cols, ys)
    half_w, half_d = _bust_template(v, neck, y_g, y_low)
    ring = np.stack([np.sin(phi_g * DEG), np.zeros_like(phi_g), np.cos(phi_g * DEG)], -1)
    r_b = 1.0 / np.sqrt((ring[..., 0] / half_w) ** 2 + (ring[..., 2] / half_d) ** 2)
    axis = np.stack([np.zeros_like(y_g), y_g, np.full_like(y_g, neck[2])], -1)
    bust_verts = axis + r_b[..., None] * ring
    base = hair_verts.shape[0] * hair_verts.shape[1]
    bust_faces, bust_texel, bust_first = _grid_quads(range(b0, b1), np.ones((b1 - b0, PAGE), bool), base)
    pcb, ycb = 0.5 * (phi_g[:-1, :-1] + phi_g[1:, 1:]), 0.5 * (y_g[:-1, :-1] + y_g[1:, 1:])
    ring_c = np.stack([np.sin(pcb * DEG), np.zeros_like(pcb), np.cos(pcb * DEG)], -1).reshape(-1, 3)
    hw_c, hd_c = _bust_template(v, neck, ycb, y_low)
    bust_r = (1.0 / np.sqrt((ring_c[:, 0] / hw_c.ravel()) ** 2 + (ring_c[:, 2] / hd_c.ravel()) ** 2))
    bust_origin = np.stack([np.zeros(ycb.size), ycb.ravel(), np.full(ycb.size, neck[2])], -1)

    verts = np.concatenate([hair_verts.reshape(-1, 3), bust_verts.reshape(-1, 3)])
    joint = np.concatenate([np.full(hair_verts.shape[0] * hair_verts.shape[1], JOINT_NAMES.index("neck")),
                            np.full(bust_verts.shape[0] * bust_verts.shape[1], JOINT_NAMES.index("root"))])
    faces = np.concatenate([hair_faces, bust_faces])
    texel = np.concatenate([hair_texel, bust_texel])
    face = np.concatenate([hair_first, len(hair_faces) + bust_first])
    order = np.argsort(texel, kind="stable")                        # slots in texel order, as rasterize_uv gives them
    valid = np.zeros(PAGE * PAGE, bool)
    valid[texel] = True
    slots = UVSlots(PAGE, torch.from_numpy(valid.reshape(PAGE, PAGE)), torch.from_numpy(texel[order]),
                    torch.from_numpy(face[order]), torch.tensor([[0.5, 0.0, 0.5]]).expand(len(texel), 3).contiguous())
    chart = np.concatenate([np.zeros(len(hair_texel), np.int64), np.ones(len(bust_texel), np.int64)])[order]
    origin = np.concatenate([np.broadcast_to(centre, (len(hair_texel), 3)), bust_origin])[order]
    direction = np.concatenate([hair_dir, ring_c])[order]
    radius = np.concatenate([hair_r, bust_r])[order]
    # left/right mirror: the same row, column PAGE-1-j (azimuth -> -azimuth); a mirrored hair
    # texel in the face cone does not exist, but the cone is symmetric, so every one is found
    pos = {int(t): k for k, t in enumerate(texel[order])}
    row, col = texel[order] // PAGE, texel[order] % PAGE
    mirror = np.array([pos[int(r * PAGE + (PAGE - 1 - c))] for r, c in zip(row, col)], np.int64)
    f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    verts_t, faces_t, joint_t = f32(verts), torch.from_numpy(faces), torch.from_numpy(joint)
    return OuterLayer(verts_t, faces_t, joint_t, slots, torch.from_numpy(chart), f32(origin), f32(direction),
                      f32(radius), torch.from_numpy(mirror), slot_frames(slots, verts_t, faces_t),
                      joint_t[faces_t[slots.face, 0]])


def _dirs(psi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Unit directions [..., 3] of azimuth psi (0 = +z, the face; +90 = +x) and elevation theta, degrees."""
    p, t = psi * DEG, theta * DEG
    return np.stack([np.cos(t) * np.sin(p), np.sin(t), np.cos(t) * np.cos(p)], -1)


def _bust_template(v: np.ndarray, neck: np.ndarray, y: np.ndarray, y_low: float) -> tuple[np.ndarray, np.ndarray]:
    """Half width and half depth (m) of the template bust at heights ``y``: the head mesh's
    neck at the top, flaring over 11 cm to shoulders 0.19 x 0.10 m, straight below."""
    low = v[v[:, 1] < y_low + 0.03]
    nw = max(float(np.abs(low[:, 0]).max()), 0.03)
    nd = max(0.5 * float(low[:, 2].max() - low[:, 2].min()), 0.03)
    s = np.clip((y_low + 0.02 - y) / 0.11, 0, 1)
    s = s * s * (3 - 2 * s)
    return nw + (0.19 - nw) * s, nd + (0.10 - nd) * s
