"""Fitting head-model parameters and a pinhole camera to 2D landmarks (+ FaceMesh's relative depth).

The camera is fixed at the origin looking down the world's -z axis (OpenCV axes are the
head model's axes with y and z flipped), principal point at the image centre; the head
moves. This module fits a few frames jointly — 1–4 portraits of one person, or a video's
keyframes (`engine.track.frames_lm` then fits every frame). Unknowns:
- shared: identity ``shape``; log focal length (per image for portraits, which may come from
  different cameras; shared for a video's keyframes);
- per frame: ``rotation``, ``translation``, ``expr``, ``jaw``, ``eyes``.
Energy: robust (Huber) landmark reprojection error in 512-px units + a weak relative-depth
term + priors (small shape/expression, no negative blendshape weights, jaw opening only
forwards). Minimised with L-BFGS in scaled units (`UNITS`): first pose only, then all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.camera import FLIP, project  # noqa: F401 - the tracker's camera model, re-exported for its callers
from engine.track.lmk_model import LandmarkModel
from engine.types import HeadParams

REF_SIZE = 512.0                         # errors are reported in pixels of a 512-px image


@dataclass(frozen=True)
class FitConfig:
    """Weights and iteration counts of the landmark fit."""

    iters_pose: int = 15
    """L-BFGS iterations with only the pose (rotation, translation) free."""
    iters_all: int = 200
    """L-BFGS iterations with every unknown free."""
    huber_px: float = 4.0
    """Landmark residuals beyond this many 512-px pixels count linearly (robust to outliers)."""
    w_depth: float = 0.03
    """Weight of FaceMesh's relative landmark depth against the model's."""
    w_shape: float = 0.02
    """Prior on identity coefficients (the basis is scaled so 1 is a large change)."""
    w_expr: float = 0.004
    """Prior on the named (ARKit) expression coefficients."""
    w_expr_mouth_local: float = 0.3
    """Prior on the head model's ``local_mouth_*`` modes (smooth corrections round the mouth, 3 mm
    a unit): above ``w_expr`` they only absorb what the named shapes and the jaw cannot, and a
    wide-open mouth is read as a jaw opening, not as lips pulled apart by local modes (the
    eyes' and brows' local modes keep ``w_expr``: they help read a closing lid)."""
    w_expr_negative: float = 10.0
    """Penalty on negative blendshape weights (an ARKit weight is in [0, 1])."""
    w_expr_over: float = 10.0
    """Penalty on named blendshape weights above 1 (with ``w_expr_mouth_local``, what keeps a
    wide-open mouth from being read as lips pulled apart instead of a jaw opening)."""
    w_jaw: float = 1.0
    """Penalty on jaw rotation other than opening (closing past rest, sideways, twist)."""
    w_eyes: float = 0.01
    """Prior on eye rotation."""
    w_vergence: float = 1.0
    """Prior on the difference between the two eyes' rotations: eyes turn together, so one eye's
    iris read a little off should not turn it on its own; soft, since a person may cross their
    eyes (on lp_d6 the tracked eyes stood 0.76 rad apart on average without it, 0.31 with it)."""
    w_focal: float = 0.5
    """Prior pulling log focal length to the initial guess (focal is weakly observed)."""
    focal_init: float = 2.0
    """Initial focal length in units of the image's larger side (2.0 ≈ 28° field of view)."""
    smooth: float = 0.3
    """Video: strength of the temporal smoothing of per-frame unknowns (0 = none)."""
    lm_iters: int = 8
    """Video: Levenberg-Marquardt iterations per frame."""


def expr_prior(lm, cfg: FitConfig) -> tuple[Tensor, Tensor]:
    """([E] prior weight of each expression coefficient: ``w_expr_mouth_local`` for the
    ``local_mouth_*`` modes, ``w_expr`` for the rest; [E] 1.0 where the coefficient is a named
    shape, not a local mode, else 0)."""
    return cfg.w_expr + (cfg.w_expr_mouth_local - cfg.w_expr) * lm.mouth_local_expr, lm.named_expr


@dataclass
class Observations:
    """Landmarks of N frames of one image size. L landmarks (478 for FaceMesh)."""

    points: np.ndarray     # [N, L, 2] pixels
    depth: np.ndarray      # [N, L] FaceMesh's relative z, pixels (smaller = nearer)
    found: np.ndarray      # [N] bool: a face was detected
    image_size: np.ndarray  # [N, 2] (height, width) of each frame

    def __post_init__(self) -> None:
        self.image_size = np.broadcast_to(np.asarray(self.image_size, dtype=np.float64).reshape(-1, 2),
                                          (len(self.points), 2)).copy()


@dataclass
class FitResult:
    params: HeadParams     # [N, ...]
    K: np.ndarray          # [N, 3, 3]
    error_px: np.ndarray   # [N] mean landmark error in 512-px units (nan where no face was found)
    projected: np.ndarray  # [N, L, 2] fitted landmarks in pixels


def intrinsics(focal: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """K [N, 3, 3] of focal lengths [N] and image sizes [N, 2] (principal point at the centre)."""
    K = np.zeros((len(image_size), 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = image_size[:, 1] / 2, image_size[:, 0] / 2, 1.0
    return K


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation [3, 3] and scale with dst ≈ s R src (both centred)."""
    u, s, vt = np.linalg.svd(dst.T @ src)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, 1.0, d])
    return u @ D @ vt, float((s * np.diag(D)).sum() / (src ** 2).sum())


def _rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def initial_pose(lm: LandmarkModel, obs: Observations, focal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame root axis-angle [N, 3] and translation [N, 3] aligning the neutral landmarks
    to FaceMesh's 3D points (a similarity fit), placed at the depth their size implies.
    focal: [N] pixels."""
    neutral = lm(HeadParams.neutral(lm.n_shape, lm.n_expr))[0].numpy()          # [L, 3]
    J0 = lm.J_rest[0].numpy()
    m_c = neutral - neutral.mean(0)
    rots, trans = [], []
    for i in range(len(obs.points)):
        h, w = obs.image_size[i]
        if not obs.found[i]:
            rots.append(np.zeros(3))
            trans.append(np.array([0.0, 0.0, -focal[i] / 400.0]))
            continue
        o = np.concatenate([obs.points[i], obs.depth[i][:, None]], 1)             # camera-like axes
        o_c = o - o.mean(0)
        R_cam, s = _umeyama(m_c * FLIP.numpy(), o_c)                              # px per metre
        R = np.diag(FLIP.numpy()) @ R_cam @ np.diag(FLIP.numpy())                 # back to head axes
        z = focal[i] / s
        c = o.mean(0)
        centre_cam = np.array([(c[0] - w / 2) * z / focal[i], (c[1] - h / 2) * z / focal[i], z])
        centre = centre_cam * FLIP.numpy()
        rots.append(_rotvec(R))
        trans.append(centre - (R @ (neutral.mean(0) - J0) + J0))
    return np.array(rots), np.array(trans)


def huber(x: Tensor, delta: float) -> Tensor:
    """Huber's loss of residuals ``x``: quadratic within ``delta``, linear beyond."""
    a = x.abs()
    return torch.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))


# Units of the optimised variables: one unit of each moves landmarks by roughly a pixel or
# two, so L-BFGS sees a well-conditioned problem (in raw units translation is ~1000x stiffer
# than an expression weight and it converged three times slower).
UNITS = {"rot": 0.01, "trans": 0.001, "jaw": 0.01, "eyes": 0.02, "log_f": 0.01, "shape": 0.2, "expr": 0.2}


class _Unknowns(torch.nn.Module):
    """The unknowns, stored in `UNITS`; attributes without the underscore are the real values."""

    def __init__(self, lm: LandmarkModel, n: int, rot0: np.ndarray, trans0: np.ndarray, log_f0: np.ndarray) -> None:
        super().__init__()
        t = lambda x, unit: torch.nn.Parameter(torch.as_tensor(x, dtype=torch.float32) / UNITS[unit])  # noqa: E731
        self.shape_ = t(torch.zeros(lm.n_shape), "shape")
        self.log_f_ = t(log_f0, "log_f")                                                # [N] or [1]
        self.expr_, self.jaw_, self.eyes_ = t(torch.zeros(n, lm.n_expr), "expr"), t(torch.zeros(n, 3), "jaw"), t(torch.zeros(n, 6), "eyes")
        self.trans_ = t(trans0, "trans")
        self.rot_ = t(rot0, "rot")

    def __getattr__(self, name: str):
        if name in UNITS:
            return super().__getattr__(name + "_") * UNITS[name]
        return super().__getattr__(name)

    def params(self) -> HeadParams:
        n = self.expr.shape[0]
        return HeadParams(self.shape[None].expand(n, -1), self.expr, self.rot, torch.zeros_like(self.rot), self.jaw,
                          self.eyes, self.trans)

    def per_frame(self) -> list[torch.nn.Parameter]:
        return [self.rot_, self.trans_, self.expr_, self.jaw_, self.eyes_]


def fit_landmarks(lm: LandmarkModel, obs: Observations, cfg: FitConfig = FitConfig(), shared_focal: bool = False,
                  focal: float | None = None) -> FitResult:
    """Fit a few frames of one person jointly: shared shape, per-frame pose and expression, and
    a focal length per frame or (``shared_focal``) one for all, or a given, fixed ``focal``."""
    n = len(obs.points)
    size = torch.tensor(obs.image_size, dtype=torch.float32)                     # [N, 2]
    scale = size.max(1).values / REF_SIZE                                        # [N]
    f0 = cfg.focal_init * obs.image_size.max(1)
    if shared_focal or focal is not None:
        f0 = np.full(n, focal if focal is not None else np.median(f0))
        shared_focal = True
    rot0, trans0 = initial_pose(lm, obs, f0)
    log_f0 = np.log(f0[:1] if shared_focal else f0)
    u = _Unknowns(lm, n, rot0, trans0, log_f0)
    target = torch.tensor(obs.points, dtype=torch.float32)
    depth = torch.tensor(obs.depth, dtype=torch.float32)
    found = torch.tensor(obs.found, dtype=torch.float32)
    n_found = found.sum().clamp_min(1)

    w_expr, named = expr_prior(lm, cfg)

    def energy() -> Tensor:
        p = u.params()
        f = u.log_f.exp().expand(n)
        uv, z = project(lm(p), f, size)
        r = (uv - target).norm(dim=-1) / scale[:, None]                             # [N, L] 512-px units
        e = (huber(r, cfg.huber_px).mean(1) * found).sum() / n_found
        d_model = (z - z.mean(1, keepdim=True)) * f[:, None] / z.mean(1, keepdim=True)
        d_obs = depth - depth.mean(1, keepdim=True)
        e = e + cfg.w_depth * ((((d_model - d_obs) / scale[:, None]) ** 2).mean(1) * found).sum() / n_found
        e = e + cfg.w_shape * (u.shape ** 2).sum()
        e = e + (w_expr * u.expr ** 2).sum(1).mean() + cfg.w_expr_negative * (torch.relu(-u.expr) ** 2).sum(1).mean()
        e = e + cfg.w_expr_over * ((torch.relu(u.expr - 1) * named) ** 2).sum(1).mean()
        e = e + cfg.w_jaw * (torch.relu(-u.jaw[:, 0]) ** 2 + (u.jaw[:, 1:] ** 2).sum(1)).mean() * 100
        e = e + cfg.w_eyes * (u.eyes ** 2).sum(1).mean()
        e = e + cfg.w_vergence * ((u.eyes[:, :3] - u.eyes[:, 3:]) ** 2).sum(1).mean()
        e = e + cfg.w_focal * ((u.log_f - torch.tensor(log_f0, dtype=torch.float32)) ** 2).mean()
        return e

    def run(params: list, iters: int) -> None:
        if iters <= 0:
            return
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, max_eval=iters * 5 // 4, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            e = energy()
            e.backward()
            return e

        opt.step(closure)

    run([u.rot_, u.trans_], cfg.iters_pose)
    run(u.per_frame() + [u.shape_] + ([] if focal is not None else [u.log_f_]), cfg.iters_all)

    with torch.no_grad():
        p = u.params()
        f = u.log_f.exp().expand(n)
        uv, _ = project(lm(p), f, size)
        err = ((uv - target).norm(dim=-1) / scale[:, None]).mean(1).numpy()
    err[~obs.found] = np.nan
    detached = HeadParams(*(getattr(p, k).detach().clone() for k in ("shape", "expr", "rotation", "neck", "jaw", "eyes", "translation")))
    return FitResult(detached, intrinsics(f.numpy().astype(np.float64), obs.image_size), err, uv.numpy())


def search_focal(lm: LandmarkModel, obs: Observations, cfg: FitConfig = FitConfig(),
                 factors: tuple = (0.9, 1.4, 2.1, 3.2, 4.8)) -> float:
    """The focal length (pixels) that best explains several frames of one head.

    The reprojection error is nearly flat in focal length once identity shape can scale the
    face in depth, so gradient descent barely moves it off its start (tests: it stayed at the
    initial guess 27 % from the truth). A coarse search over ``factors`` x the image's larger
    side, each with focal fixed and everything else fitted, and a parabola through the best
    three (in log focal) finds it. Worth it for a video's keyframes; a single portrait does not
    constrain it at all."""
    side = float(obs.image_size.max())
    logs = np.log(np.asarray(factors) * side)
    errs = np.array([np.nanmean(fit_landmarks(lm, obs, cfg, focal=float(np.exp(x))).error_px) for x in logs])
    k = int(np.clip(np.argmin(errs), 1, len(logs) - 2))
    a, b, c = np.polyfit(logs[k - 1 : k + 2], errs[k - 1 : k + 2], 2)
    best = -b / (2 * a) if a > 0 else logs[np.argmin(errs)]
    return float(np.exp(np.clip(best, logs[0], logs[-1])))
