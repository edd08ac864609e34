"""Per-frame Levenberg–Marquardt for video tracking, once shape and focal are known.

The frames are independent given shape and focal, so each gets its own damped Gauss–Newton
step (a batched [P, P] solve) — a batched L-BFGS shares one line search across all frames and
stalls. The Jacobian is cheap: expressions enter linearly before skinning, so their columns
are the projection Jacobian times each landmark's blended rotation times the blendshapes
(the joints' small dependence on expression is left out of the Jacobian, not the residual);
translation is analytic; the 12 rotation unknowns (neck, jaw, eyes) use forward differences.
Temporal smoothing is then an exact tridiagonal least-squares blend of the per-frame
solutions, which also fills frames where the face was lost.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from scipy.linalg import solve_banded
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import Tensor

from engine.track.fit import FLIP, REF_SIZE, FitConfig, expr_prior, project
from engine.track.lmk_model import LandmarkModel
from engine.types import HeadParams

ROTATION_FIELDS = ("neck", "jaw", "eyes")
FD_STEP = 1e-3   # radians, forward-difference step for rotation columns


def _blended_rotation(lm: LandmarkModel, p: HeadParams) -> Tensor:
    """Per-landmark blended skinning rotation [B, L, 3, 3]."""
    B = p.batch_size
    coeffs = torch.cat([p.shape, p.expr], dim=1)
    J = lm.J_rest + torch.einsum("jcs,bs->bjc", lm.J_dirs, coeffs)
    rot = batch_rodrigues(p.full_pose().reshape(-1, 3)).reshape(B, -1, 3, 3)
    _, A = batch_rigid_transform(rot, J, lm.parents, dtype=rot.dtype)
    return torch.einsum("lj,bjmn->blmn", lm.weights, A[..., :3, :3])


def _residuals(lm: LandmarkModel, p: HeadParams, focal: Tensor, size: Tensor, target: Tensor, scale: Tensor):
    pts = lm(p)
    uv, _ = project(pts, focal, size)
    return pts, (uv - target) / scale[:, None, None]                               # [B, L, 2] 512-px units


def _projection_jacobian(pts: Tensor, focal: Tensor, scale: Tensor) -> Tensor:
    """d(uv / scale) / d(head-space point): [B, L, 2, 3]."""
    pc = pts * FLIP
    x, y, z = pc.unbind(-1)
    f = (focal / scale)[:, None]
    zero = torch.zeros_like(z)
    J = torch.stack([torch.stack([f / z, zero, -f * x / z**2], -1), torch.stack([zero, f / z, -f * y / z**2], -1)], -2)
    return J * FLIP                                                                # chain through the axis flip


def refine_frames(lm: LandmarkModel, p0: HeadParams, target: np.ndarray, found: np.ndarray, image_size: np.ndarray,
                  focal: float, cfg: FitConfig = FitConfig(), iters: int = 8, chunk: int = 256) -> HeadParams:
    """Per-frame LM on neck, translation, expression, jaw and eyes; shape, root rotation and
    focal stay as in ``p0`` / ``focal``. target [N, L, 2] pixels."""
    out = []
    for s in range(0, p0.batch_size, chunk):
        sl = slice(s, s + chunk)
        p = HeadParams(*(getattr(p0, k)[sl] for k in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
        out.append(solve_frames(lm, p, torch.as_tensor(target[sl], dtype=torch.float32), torch.as_tensor(found[sl]),
                                torch.as_tensor(image_size[sl], dtype=torch.float32), focal, cfg, iters))
    cat = lambda k: torch.cat([getattr(q, k) for q in out])  # noqa: E731
    return HeadParams(*(cat(k) for k in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))


def solve_frames(lm: LandmarkModel, p: HeadParams, target: Tensor, found: Tensor, size: Tensor, focal: float,
                 cfg: FitConfig = FitConfig(), iters: int = 8, deadline: float | None = None) -> HeadParams:
    """``iters`` damped Gauss–Newton steps per frame from ``p`` (a warm start) on neck, jaw, eyes,
    translation and expression; shape and root rotation stay. target [B, L, 2] pixels, found [B]
    (0 = no face: only the priors act), size [B, 2] (height, width), focal in pixels.

    ``deadline`` (a `time.perf_counter` value) stops after the step that passes it, so a live
    tracker can bound its time per frame; at least one step is always taken."""
    B, E = p.expr.shape
    L = target.shape[1]
    scale = size.max(1).values / REF_SIZE
    f = torch.full((B,), float(focal))
    lam = torch.full((B, 1), 1e-2)
    # prior weights per unknown, in the energy's units (mean over landmarks of squared 512-px error)
    n_rot = 12
    P = n_rot + 3 + E
    w_expr, named = expr_prior(lm, cfg)
    with torch.no_grad():
        for _ in range(iters):
            pts, r = _residuals(lm, p, f, size, target, scale)                     # [B, L, 3], [B, L, 2]
            a = r.norm(dim=-1, keepdim=True)
            w = torch.where(a < cfg.huber_px, torch.ones_like(a), cfg.huber_px / a.clamp_min(1e-9))  # IRLS Huber
            w = w * found[:, None, None]
            Jp = _projection_jacobian(pts, f, scale)                               # [B, L, 2, 3]
            R = _blended_rotation(lm, p)                                           # [B, L, 3, 3]
            J_expr = torch.einsum("blpc,blcd,lde->blpe", Jp, R, lm.dirs[:, :, lm.n_shape:])
            J_rot = _rotation_columns(lm, p, f, size, target, scale, r)             # [B, L, 2, 12]
            J = torch.cat([J_rot, Jp, J_expr], -1).reshape(B, 2 * L, P)            # translation: d pts / d t = I
            wr = w.expand(-1, -1, 2).reshape(B, 2 * L, 1) / L
            H = J.transpose(1, 2) @ (wr * J)                                       # [B, P, P]
            g = (J * wr).transpose(1, 2) @ r.reshape(B, 2 * L, 1)                  # [B, P, 1]
            x = torch.cat([p.neck, p.jaw, p.eyes, p.translation, p.expr], 1)
            prior = torch.zeros(B, P)
            prior[:, 4:6] = cfg.w_jaw * 100          # jaw: opening is free, sideways and twist are not
            prior[:, 3] = cfg.w_jaw * 100 * (p.jaw[:, 0] < 0)
            prior[:, 6:12] = cfg.w_eyes
            prior[:, 15:] = w_expr + cfg.w_expr_negative * (p.expr < 0)
            prior = 2 * prior                        # the L-BFGS energy's priors are w·x², not ½·w·x²
            over = torch.zeros(B, P)                 # named weights above 1: w_over·(x − 1)²
            over[:, 15:] = 2 * cfg.w_expr_over * named * (p.expr > 1)
            H = H + torch.diag_embed(prior + over) + torch.diag_embed(lam * torch.diagonal(H, dim1=1, dim2=2) + 1e-6)
            g = g + (prior * x + over * (x - 1))[..., None]
            if cfg.w_vergence > 0:                   # w_v·|e_R − e_L|²: couples the two eyes' unknowns
                d = x[:, 6:9] - x[:, 9:12]
                v = 2 * cfg.w_vergence * torch.eye(3)
                H[:, 6:9, 6:9] += v
                H[:, 9:12, 9:12] += v
                H[:, 6:9, 9:12] -= v
                H[:, 9:12, 6:9] -= v
                g[:, 6:9, 0] += 2 * cfg.w_vergence * d
                g[:, 9:12, 0] -= 2 * cfg.w_vergence * d
            step = torch.linalg.solve(H, -g)[..., 0]
            q = _unpack(p, x + step, E)
            e_old = _energy(w, r, prior, x, over) + _vergence(x, cfg)
            r_new = _residuals(lm, q, f, size, target, scale)[1]
            e_new = _energy(w, r_new, prior, x + step, over) + _vergence(x + step, cfg)
            better = (e_new < e_old)[:, None]
            p = _select(better, q, p)
            lam = torch.where(better, lam * 0.3, lam * 10).clamp(1e-6, 1e4)
            if deadline is not None and time.perf_counter() > deadline:
                break
    return p


def _rotation_columns(lm: LandmarkModel, p: HeadParams, f: Tensor, size: Tensor, target: Tensor, scale: Tensor,
                      r: Tensor) -> Tensor:
    """Forward-difference Jacobian of the residuals [B, L, 2] in the 12 rotation unknowns (neck,
    jaw, eyes): [B, L, 2, 12]. All 12 perturbed copies of every frame go through the landmark
    model as one batch (12 small calls cost ~12x the per-call overhead at B = 1)."""
    B, L = r.shape[:2]
    n = 12                                                                         # neck 3, jaw 3, eyes 6
    rep = lambda t: t.repeat_interleave(n, 0)  # noqa: E731 - frame-major: row b*n + k perturbs unknown k
    d = (torch.eye(n) * FD_STEP).repeat(B, 1)                                      # [B*n, n]
    q = HeadParams(rep(p.shape), rep(p.expr), rep(p.rotation), rep(p.neck) + d[:, 0:3], rep(p.jaw) + d[:, 3:6],
                   rep(p.eyes) + d[:, 6:12], rep(p.translation))
    rq = _residuals(lm, q, rep(f), rep(size), rep(target), rep(scale))[1].reshape(B, n, L, 2)
    return ((rq - r[:, None]) / FD_STEP).permute(0, 2, 3, 1)


def _energy(w: Tensor, r: Tensor, prior: Tensor, x: Tensor, over: Tensor) -> Tensor:
    return 0.5 * (w * r**2).sum((1, 2)) / r.shape[1] + 0.5 * (prior * x**2 + over * torch.relu(x - 1) ** 2).sum(1)


def _vergence(x: Tensor, cfg: FitConfig) -> Tensor:
    """[B] the prior on the two eyes' difference, w_v·|e_R − e_L|² (x: the unknowns, eyes at 6:12)."""
    return cfg.w_vergence * ((x[:, 6:9] - x[:, 9:12]) ** 2).sum(1)


def _unpack(p: HeadParams, x: Tensor, E: int) -> HeadParams:
    return HeadParams(p.shape, x[:, 15:], p.rotation, x[:, :3], x[:, 3:6], x[:, 6:12], x[:, 12:15])


def _select(mask: Tensor, a: HeadParams, b: HeadParams) -> HeadParams:
    keys = ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")
    return HeadParams(*(torch.where(mask, getattr(a, k), getattr(b, k)) for k in keys))


def smooth_frames(p: HeadParams, found: np.ndarray, strength: float) -> HeadParams:
    """Minimise Σ_t c_t |x_t − x̂_t|² + strength Σ_t |x_t − x_{t−1}|² for every per-frame unknown
    (c_t = 1 where the face was found, ~0 where it was lost, so lost frames are interpolated)."""
    n = p.batch_size
    if n < 2:
        return p
    c = np.where(found, 1.0, 1e-6)
    ab = np.zeros((3, n))
    ab[0, 1:] = -strength
    ab[2, :-1] = -strength
    ab[1] = c + strength * np.r_[1, np.full(n - 2, 2.0), 1]
    def sm(t: Tensor) -> Tensor:  # noqa: E306
        return torch.as_tensor(solve_banded((1, 1), ab, c[:, None] * t.numpy().astype(np.float64)), dtype=t.dtype)
    return HeadParams(p.shape, sm(p.expr), p.rotation, sm(p.neck), sm(p.jaw), sm(p.eyes), sm(p.translation))


def fit_video(lm: LandmarkModel, obs, cfg: FitConfig = FitConfig(), n_keyframes: int = 20):
    """Fit a video: focal (searched), shape and root rotation on keyframes (joint L-BFGS), then
    every frame by LM, then temporal smoothing. Returns a `FitResult`."""
    from engine.track.fit import FitResult, Observations, fit_landmarks, initial_pose, intrinsics, search_focal

    keys = np.nonzero(obs.found)[0]
    keys = keys[np.linspace(0, len(keys) - 1, min(n_keyframes, len(keys))).round().astype(int)]
    key_obs = Observations(obs.points[keys], obs.depth[keys], obs.found[keys], obs.image_size[keys])
    stage_a = fit_landmarks(lm, key_obs, cfg, focal=search_focal(lm, key_obs, cfg))
    focal = float(stage_a.K[0, 0, 0])
    shape = stage_a.params.shape[0]
    n = len(obs.points)
    rot0, trans0 = initial_pose(lm, obs, np.full(n, focal))
    root = torch.as_tensor(_mean_rotation(stage_a.params.rotation.numpy()), dtype=torch.float32)
    neck = torch.as_tensor(_relative_rotations(root.numpy(), rot0), dtype=torch.float32)
    z = lambda k: torch.zeros(n, k)  # noqa: E731
    p0 = HeadParams(shape[None].expand(n, -1).clone(), z(lm.n_expr), root[None].expand(n, -1).clone(), neck,
                    z(3), z(6), torch.as_tensor(trans0, dtype=torch.float32))
    p = refine_frames(lm, p0, obs.points, obs.found, obs.image_size, focal, cfg, iters=cfg.lm_iters)
    p = smooth_frames(p, obs.found, cfg.smooth)
    size = torch.as_tensor(obs.image_size, dtype=torch.float32)
    with torch.no_grad():
        uv, _ = project(lm(p), torch.full((n,), focal), size)
    err = ((uv - torch.as_tensor(obs.points, dtype=torch.float32)).norm(dim=-1) / (size.max(1).values / REF_SIZE)[:, None]).mean(1).numpy()
    err[~obs.found] = np.nan
    return FitResult(p, intrinsics(np.full(n, focal), obs.image_size), err, uv.numpy())


def _mean_rotation(rotvecs: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvecs).mean().as_rotvec()


def _relative_rotations(root: np.ndarray, rotvecs: np.ndarray) -> np.ndarray:
    """Neck rotations N with R_root · N = R_frame, as axis-angle [N, 3]. Rotating about the neck
    joint instead of the root differs by a translation, which the per-frame fit absorbs."""
    from scipy.spatial.transform import Rotation

    return (Rotation.from_rotvec(root).inv() * Rotation.from_rotvec(rotvecs)).as_rotvec()
