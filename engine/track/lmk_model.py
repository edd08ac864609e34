"""A head model reduced to its landmarks: the same skinning as `HeadModel`, evaluated once per
landmark, so a fit never poses the whole mesh. Joints still see the whole shaped mesh
through precomputed joint directions.

Each landmark's rest position, blendshapes, pose correctives and skinning weights are the
barycentric blend of its triangle's. Skinning commutes with that blend wherever the three
vertices share their weights, so the result is exact for OpenHead (a face landmark *is* a
vertex; an iris point lies on a rigid eyeball) and within a small fraction of a millimetre
for FLAME's smoothly varying weights.
"""
from __future__ import annotations

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import Tensor

from engine.headmodel.base import HeadModel
from engine.types import HeadParams


class LandmarkModel:
    """Landmarks [B, L, 3] of a `HeadModel` for `HeadParams`.

    ``detected=True`` gives the landmarks as FaceMesh marks them on an image, which is what a
    fit to detected points needs: FaceMesh puts a closed mouth's inner-lip points on the line
    where the lips meet, but a head model's rest mouth may be parted (OpenHead's, built on
    FaceMesh's canonical face, is parted by ~2 mm and its Gaussians cover the gap), so every
    inner-lip landmark is moved in the rest frame onto the midpoint between it and its opposite
    (`closed_lip_offsets`). Without it a closed mouth could only be fitted by pressing the lips
    together with blendshapes, and every opening read ~0.05–0.1 rad short.
    """

    def __init__(self, model: HeadModel, detected: bool = False) -> None:
        self.model = model
        idx = model.faces[model.lmk_faces]                                   # [L, 3] vertex ids
        b = model.lmk_bary                                                   # [L, 3]
        V, P = model.v_template.shape[0], model.posedirs.shape[0]
        self.rest = torch.einsum("lk,lkc->lc", b, model.v_template[idx])     # [L, 3]
        if detected:
            self.rest = self.rest + closed_lip_offsets(model, self.rest)
        self.dirs = torch.einsum("lk,lkcs->lcs", b, model.dirs[idx])         # [L, 3, S+E]
        self.posedirs = torch.einsum("lk,plkc->plc", b, model.posedirs.reshape(P, V, 3)[:, idx])  # [P, L, 3]
        self.weights = torch.einsum("lk,lkj->lj", b, model.weights[idx])     # [L, J]
        self.J_rest = model.J_regressor @ model.v_template                   # [J, 3]
        self.J_dirs = torch.einsum("jv,vcs->jcs", model.J_regressor, model.dirs)  # [J, 3, S+E]
        self.parents = model.parents
        self.n_shape, self.n_expr = model.n_shape, model.n_expr
        names = list(model.expr_names)                                       # what the fit's priors tell apart:
        self.named_expr = torch.tensor([not n.startswith("local_") for n in names], dtype=torch.float32)
        self.mouth_local_expr = torch.tensor([n.startswith("local_mouth_") for n in names], dtype=torch.float32)
        # The same bases flattened for plain matrix products: the per-call einsums cost ~80 µs
        # each in small-op overhead, ten calls per solved frame.
        L, J = self.rest.shape[0], self.J_rest.shape[0]
        self._dirs_t = self.dirs.reshape(L * 3, -1).T.contiguous()          # [S+E, L*3]
        self._J_dirs_t = self.J_dirs.reshape(J * 3, -1).T.contiguous()      # [S+E, J*3]
        self._posedirs_flat = self.posedirs.reshape(P, L * 3).contiguous()  # [P, L*3]

    @property
    def n_landmarks(self) -> int:
        return self.rest.shape[0]

    def __call__(self, params: HeadParams) -> Tensor:
        B, L = params.batch_size, self.rest.shape[0]
        coeffs = torch.cat([params.shape, params.expr], dim=1)                         # [B, S+E]
        v = self.rest + (coeffs @ self._dirs_t).reshape(B, L, 3)                       # [B, L, 3]
        J = self.J_rest + (coeffs @ self._J_dirs_t).reshape(B, -1, 3)                  # [B, J, 3]
        rot = batch_rodrigues(params.full_pose().reshape(-1, 3)).reshape(B, -1, 3, 3)  # [B, J, 3, 3]
        feat = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype)).reshape(B, -1)             # [B, P]
        v = v + (feat @ self._posedirs_flat).reshape(B, L, 3)
        _, A = batch_rigid_transform(rot, J, self.parents, dtype=rot.dtype)            # [B, J, 4, 4]
        T = (self.weights @ A.reshape(B, -1, 16)).reshape(B, L, 4, 4)                  # [B, L, 4, 4]
        v = (T[..., :3, :3] @ v[..., None])[..., 0] + T[..., :3, 3]
        return v + params.translation[:, None, :]


def closed_lip_offsets(model: HeadModel, rest: Tensor) -> Tensor:
    """[L, 3] rest-frame offsets moving each inner-lip landmark (of ``rest`` [L, 3], the model's
    landmarks at rest) onto the midpoint between it and the landmark of the other lip nearest in
    x; zero for the corners, the other landmarks and a model without FaceMesh's inner-lip points."""
    from engine.headmodel import facemesh as fm

    ids = [int(i) for i in model.lmk_ids]
    loop = fm.topology()["lips_inner"]
    out = torch.zeros_like(rest)
    if not all(i in ids for i in loop):
        return out
    row = {i: ids.index(i) for i in loop}
    pts = torch.zeros(max(loop) + 1, 3, dtype=rest.dtype)
    pts[loop] = rest[[row[i] for i in loop]]
    upper, lower, _, _ = fm.split_loop(loop, pts.numpy())
    upper, lower = upper[1:-1], lower[1:-1]                  # the corners stay where they are
    for side, other in ((upper, lower), (lower, upper)):
        for i in side:
            j = min(other, key=lambda k: abs(float(pts[k, 0] - pts[i, 0])))
            out[row[i]] = (pts[j] - pts[i]) / 2
    return out
