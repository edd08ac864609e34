"""The per-subject refiner (paper §2.5): optimise the UV-layout Gaussian attributes on a
tracked video with the binding and the Gaussian count frozen (no densification, no pruning).

    loss = λ1·L1 + λssim·(1 − SSIM) + 1[t ≥ aspect_start]·λaspect·L_aspect + L_smooth
    L_aspect = mean_g ReLU(½·log(λmax/λmin of the projected 2D covariance) − τ)
               (estimated each step on a random subset of the Gaussians)
    L_smooth = Σ_attr λattr · mean over neighbouring slots |attr_i − attr_j|
               (colour, opacity and log-scale: total variation over the UV raster)

Log-scales are frozen for the first ``scale_freeze`` iterations and hard-clamped afterwards;
after every step each attribute is pulled back towards its start value, the more the less the
frames constrain it (``anchor``, `anchor_pull`), so what they leave open stays near the start
instead of drifting; colours are projected into [0, 1] after every step (outside it the render's
clamp would stop their gradient for good); render and target are composited on the same random
background each step, so silhouette gradients stay symmetric. Each step trains on one random
training frame.

With ``residual_features`` > 0 the avatar also learns an expression residual
(`engine.residual`, the paper's FLAME-conditioned residual head kept per subject): each step adds
its residuals for the frame's expression code to the attributes, and
``lambda_residual``·mean‖δ‖² keeps them small; a random ``residual_dropout`` of the steps train
without it. An avatar that already has one (a polish) continues it.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.animate import concat
from engine.binding import UVSlots, place, slot_frames
from engine.headmodel.base import HeadModel
from engine.jobs import Cancelled
from engine.metrics import ssim
from engine.refine.config import RefineConfig, stages
from engine.refine.data import VideoData
from engine.residual import ExpressionResidual, add_residual, shrinkage
from engine.render.projection import eigen_ratio, project_gaussians
from engine.types import Avatar, Gaussians, UVGaussians, UV_MAP_CHANNELS

MAP_LR = {"local_position": "lr_position", "rotation": "lr_rotation", "log_scale": "lr_scale", "color": "lr_color",
          "opacity": "lr_opacity"}


@dataclass
class Progress:
    iteration: int
    total: int
    loss: float
    its_per_second: float
    eta_seconds: float
    preview: np.ndarray | None = None    # uint8 [h, w, 3] render of a training frame


def aspect_penalty(cov2d: torch.Tensor, visible: torch.Tensor, tau: float) -> torch.Tensor:
    """mean over visible Gaussians of ReLU(½·log(λmax/λmin) − τ) of their 2D covariances [N, 2, 2]."""
    if not bool(visible.any()):
        return cov2d.sum() * 0
    return torch.relu(0.5 * torch.log(eigen_ratio(cov2d[visible])) - tau).mean()


def total_variation(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Per channel [C], the mean absolute difference between the values [N, C] of neighbouring
    slots ``pairs`` [P, 2]."""
    return (values.index_select(0, pairs[:, 0]) - values.index_select(0, pairs[:, 1])).abs().mean(0)


def smooths(cfg: RefineConfig) -> bool:
    """Whether ``cfg`` has a smoothness term."""
    return cfg.lambda_color_tv > 0 or cfg.lambda_opacity_tv > 0 or cfg.lambda_scale_tv > 0


def smoothness(pages: list[dict], pairs: list[torch.Tensor], cfg: RefineConfig) -> torch.Tensor:
    """λcolour · TV(colour) + λopacity · TV(opacity) + λscale · TV(log-scale), each TV the mean
    absolute difference over neighbouring slots and channels, taken over the pairs of all
    ``pages`` (head page, outer layer) together; of the opacity, not its logit. The three
    attributes go through one gather (three cost twice the time)."""
    cc, cs = cfg.lambda_color_tv / 3, cfg.lambda_scale_tv / 3
    weights = torch.tensor([cc, cc, cc, cfg.lambda_opacity_tv, cs, cs, cs], device=pairs[0].device)
    total = sum(len(p) for p in pairs)
    return sum(len(p) / total * total_variation(torch.cat([a["color"], torch.sigmoid(a["opacity"]), a["log_scale"]], 1),
                                                p) @ weights
               for a, p in zip(pages, pairs))


ANCHOR_SAMPLE = 8192
"""At most this many parameters of an attribute, evenly spaced, estimate `anchor_pull`'s median:
on this project's 2-core machine, with the test suite running beside it, the exact medians of all
of them took 64 ms a step and these 5 ms; a whole step at 256 px takes about 75 ms alone."""


def anchor_pull(state: dict, anchor: float) -> torch.Tensor | float:
    """Per parameter [N, C], the fraction of the way back to its start value one attribute takes
    after an Adam step: ``anchor`` · m / (m + r), where r is the parameter's root-mean-square
    gradient (the square root of Adam's second moment) and m the median of r over the
    attribute's parameters that have had a gradient (estimated on every k-th of them, at most
    `ANCHOR_SAMPLE`, so that it costs little every step). What the frames hardly move (r << m: the
    mouth's inside, a hidden layer, and of a position the coordinate along its triangle's normal,
    which is the depth of a face seen from the front) takes nearly the whole ``anchor``, the
    typical parameter half of it and the ones they move most little; ``anchor`` everywhere before
    Adam has a moment."""
    sq = state.get("exp_avg_sq")
    if sq is None:
        return anchor
    r = sq.sqrt()
    sample = r.flatten()[:: max(1, r.numel() // ANCHOR_SAMPLE)]
    seen = sample[sample > 0]
    if len(seen) == 0:
        return anchor
    m = seen.median()
    return anchor * m / (m + r)


MAX_BAD_STEPS = 20
"""Consecutive steps with a non-finite loss after which a refine stops as diverged (one such
step is skipped: its gradients never reach the avatar or a checkpoint)."""


class RefineDiverged(ValueError):
    """The refine's loss or Gaussians stopped being finite; the last checkpoint is kept."""


def run_identity(avatar: Avatar, data: VideoData, stage: int = 0, token: str = "") -> dict:
    """What a checkpoint must match to be resumed: the video (name and frame count), the head
    model, the stage of a preset's chain and ``token``, one random string per run shared by its
    stages (so a stale later-stage checkpoint of another run is never picked)."""
    return {"video": data.name, "frames": int(len(data.found)), "head_model": avatar.head_model,
            "stage": int(stage), "token": token}


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A refine checkpoint's state (tensors and plain containers only); ValueError naming the
    file when it is damaged or not one."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:    # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path}: not a readable refine checkpoint ({type(e).__name__}); "
                         "refine without --resume starts afresh") from None
    if not isinstance(state, dict) or not {"maps", "optimizer", "iteration"} <= state.keys():
        raise ValueError(f"{path}: not a refine checkpoint; refine without --resume starts afresh")
    return state


def refine(avatar: Avatar, model: HeadModel, data: VideoData, cfg: RefineConfig = RefineConfig(),
           progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
           checkpoint: Path | None = None, resume: bool = False, run: dict | None = None) -> Avatar:
    """The refined avatar. Frames larger than ``cfg.resolution`` are downscaled to it first.
    ``checkpoint``: where to write resumable state every ``cfg.checkpoint_every`` iterations;
    with ``resume`` it is read first if it exists, and refused (ValueError) unless it was written
    by the same run (``run``, `run_identity`; default: this video, head model and stage 0).
    A step whose loss is not finite is skipped; `MAX_BAD_STEPS` in a row, or Gaussians that stop
    being finite, raise `RefineDiverged` and leave the last checkpoint as it was."""
    from engine.render.select import select

    device = model.device
    renderer = select(device, need_grad=True)
    data = data.resized(cfg.resolution, model)
    slots = model.uv_slots(avatar.gaussians.resolution)
    # Optimised per slot ([N, C]) rather than as UV maps: the same values and the same Adam
    # steps (texels outside the chart get no gradient), without a gather and its scatter-backward
    # every step.
    attrs = {k: slots.gather(v.to(device)).detach().clone().requires_grad_(True)
             for k, v in avatar.gaussians.maps().items()}
    # the outer layer (hair shell and bust), trained like the head page, rigid with its joints
    outer = model.outer() if avatar.outer is not None else None
    outer_attrs = {} if outer is None else {k: outer.slots.gather(v.to(device)).detach().clone().requires_grad_(True)
                                            for k, v in avatar.outer.maps().items()}
    trained = [a for a in (attrs, outer_attrs) if a]
    # what cfg.anchor pulls every attribute back to: the avatar this run started from (a resumed
    # run, the one its checkpoint's run started from: a later stage's start is the stage before's end)
    starts = [{k: v.detach().clone() for k, v in a.items()} for a in trained] if cfg.anchor > 0 else []
    # neighbouring slots of each trained page, for the smoothness terms
    layouts = [(slots, model.faces)] + ([(outer.slots, outer.faces)] if outer_attrs else [])
    pairs = [s.neighbours(f) for s, f in layouts] if smooths(cfg) else []
    run = run or run_identity(avatar, data)
    state = None
    if resume and checkpoint is not None and checkpoint.exists():
        state = read_checkpoint(checkpoint, device)
        theirs = state.get("run") or {}
        if any(theirs.get(k) != v for k, v in run.items() if k != "token") or \
                (run.get("token") and theirs.get("token") != run["token"]):
            raise ValueError(f"{checkpoint}: a checkpoint of another run (refine of {theirs.get('video', 'an unknown video')}"
                             f", {theirs.get('frames', '?')} frames, stage {theirs.get('stage', 0) + 1}), not of "
                             f"{run['video']}; refine without --resume starts afresh and replaces it, or give "
                             "--checkpoint")
    residual = _residual(avatar, slots, model, cfg, state)
    groups = [{"params": [attrs[k]] + ([outer_attrs[k]] if outer_attrs else []), "lr": getattr(cfg, MAP_LR[k]),
               "name": k} for k in UV_MAP_CHANNELS]
    if residual is not None:
        groups.append({"params": list(residual.parameters()), "lr": cfg.lr_residual, "name": "residual"})
    opt = torch.optim.Adam(groups, eps=1e-15, fused=True)   # one kernel per tensor instead of ~10 passes
    start = 0
    if state is not None:
        with torch.no_grad():
            for k in attrs:
                attrs[k].copy_(slots.gather(state["maps"][k]))
            for k in outer_attrs if state.get("outer_maps") is not None else ():
                outer_attrs[k].copy_(outer.slots.gather(state["outer_maps"][k]))
            for a0, saved in zip(starts, state.get("anchors") or ()):
                for k in a0:
                    a0[k].copy_(saved[k])
        opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    train = data.train
    params = data.params.to(device)
    shape = avatar.shape[None].to(device)
    with torch.no_grad():   # every training frame's posed mesh, once
        verts = {int(i): model.vertices(dataclasses.replace(params.frame(int(i)), shape=shape))[0] for i in train}
    conds = params.condition().detach()
    images = torch.from_numpy(data.images)      # on the host; one frame a step goes to the device
    mattes = torch.from_numpy(data.mattes)
    cameras = [c.to(device) for c in data.cameras]
    t0, loss_avg, bad = time.perf_counter(), None, 0
    for it in range(start, cfg.iterations):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        rng = np.random.default_rng([cfg.seed, it])     # per step, so a resumed run repeats an unbroken one
        i = int(rng.choice(train))
        with torch.no_grad():
            frames = slot_frames(slots, verts[i], model.faces)
        use = residual is not None and not (cfg.residual_dropout > 0 and rng.random() < cfg.residual_dropout)
        delta = residual(conds[i]) if use else None
        g = place(frames, **(attrs if delta is None else add_residual(attrs, delta)))
        if outer is not None:         # rigid: its frames are one rotation per joint, cheap per step
            with torch.no_grad():
                ofr = outer.slot_frames(model, dataclasses.replace(params.frame(i), shape=shape))
            g = concat(g, place(ofr, **outer_attrs))
        cam = cameras[i]
        frame = renderer.render(g, cam)
        bg = (torch.from_numpy(rng.random(3).astype(np.float32)) if cfg.random_background else torch.ones(3)).to(device)
        pred = frame.rgb + (1 - frame.alpha[..., None]) * bg
        m = mattes[i][..., None].to(device)
        target = images[i].to(device).float() / 255 * m + bg * (1 - m)
        loss = cfg.lambda_l1 * (pred - target).abs().mean() + cfg.lambda_ssim * (1 - ssim(pred, target))
        if delta is not None and cfg.lambda_residual > 0:
            loss = loss + cfg.lambda_residual * shrinkage(delta)
        if pairs:
            loss = loss + smoothness(trained, pairs, cfg)
        if cfg.lambda_aspect > 0 and it >= cfg.aspect_start:
            sub = g
            if 0 < cfg.aspect_sample < len(g):
                pick = torch.from_numpy(rng.choice(len(g), cfg.aspect_sample, replace=False)).to(device)
                sub = Gaussians(g.means[pick], g.quats[pick], g.scales[pick], g.opacities[pick], g.colors[pick])
            proj = project_gaussians(sub, cam)
            loss = loss + cfg.lambda_aspect * aspect_penalty(proj.cov2d, proj.visible, cfg.aspect_tau)
        opt.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss)):
            bad += 1
            if bad >= MAX_BAD_STEPS:
                raise RefineDiverged(f"the refine diverged: the loss was not finite for {bad} steps in a row "
                                     f"(steps {it + 2 - bad}-{it + 1}); the last checkpoint is kept")
            continue
        bad = 0
        loss.backward()
        if it < cfg.scale_freeze:
            for a in (attrs, outer_attrs):
                if a:
                    a["log_scale"].grad = None
        opt.step()
        with torch.no_grad():
            for i, a in enumerate(trained):
                if starts:
                    for k, v in a.items():
                        v.lerp_(starts[i][k], anchor_pull(opt.state[v], cfg.anchor))
                # Rendering clamps colours to [0, 1], and a clamped channel gets no gradient:
                # one Adam step past the range would leave it there for good. Projected back,
                # it stays trainable.
                a["color"].clamp_(0, 1)
                if cfg.log_scale_max is not None and it >= cfg.scale_freeze:
                    a["log_scale"].clamp_(max=cfg.log_scale_max)
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        done = it + 1
        if checkpoint is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            _check_finite(attrs, outer_attrs, done)
            _save_checkpoint(checkpoint, _to_maps(attrs, slots, avatar.gaussians), opt, done, cfg,
                             None if residual is None else residual.state(slots),
                             None if outer is None else _to_maps(outer_attrs, outer.slots, avatar.outer), run,
                             starts or None)
        if progress is not None:
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            preview = frame.to_uint8() if cfg.preview_every and done % cfg.preview_every == 0 else None
            progress(Progress(done, cfg.iterations, loss_avg, rate, (cfg.iterations - done) / rate, preview))
    _check_finite(attrs, outer_attrs, cfg.iterations)
    refined = UVGaussians(**_to_maps(attrs, slots, avatar.gaussians), valid=avatar.gaussians.valid)
    meta = {**avatar.metadata, "refined": {"video": data.name, "iterations": cfg.iterations,
                                           "config": dataclasses.asdict(cfg), "train_frames": int(len(train)),
                                           "skipped_frames": int((~data.found[: data.first_test]).sum()),
                                           **({"continues": avatar.metadata["refined"]}
                                              if "refined" in avatar.metadata else {})}}
    refined_outer = None if outer is None else \
        UVGaussians(**_to_maps(outer_attrs, outer.slots, avatar.outer), valid=avatar.outer.valid)
    return dataclasses.replace(avatar, gaussians=refined, metadata=meta, thumbnail=None,
                               residual=None if residual is None else residual.state(slots), outer=refined_outer)


STEP_COST_EXPONENT = 1.3
"""A refiner step's cost grows like resolution^1.3, not with the pixel count: the per-Gaussian
work does not scale with it (measured: 512-px polish steps 6.5 it/s against 15-17 at 256 px)."""


def refine_stages(avatar: Avatar, model: HeadModel, data: VideoData, cfg: RefineConfig = RefineConfig(),
                  progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                  checkpoint: Path | None = None, resume: bool = False) -> Avatar:
    """`refine` with ``cfg``, then with each preset its ``then`` chain names (`stages`), each
    continuing the last one's result on the same ``data``. ``progress`` counts the iterations of
    all stages; its ETA takes a later stage's steps to cost the current ones times (its resolution /
    this one's)^STEP_COST_EXPONENT.
    Stage k > 0 checkpoints to ``<checkpoint stem>.stage<k+1><suffix>``; with ``resume`` the run
    continues from the latest stage that has a checkpoint (a checkpoint holds the whole state;
    the metadata of a run resumed in a later stage records only that stage)."""
    plan = stages(cfg)
    ckpts = [None if checkpoint is None else
             checkpoint if k == 0 else checkpoint.with_name(f"{checkpoint.stem}.stage{k + 1}{checkpoint.suffix}")
             for k in range(len(plan))]
    first, token = 0, secrets.token_hex(8)
    if resume and checkpoint is not None:
        # the run's token is its first stage's; a later stage's checkpoint counts only with it
        mine = [(k, read_checkpoint(c).get("run") or {}) for k, c in enumerate(ckpts) if c.exists()]
        if mine:
            token = mine[0][1].get("token") or token
            first = max((k for k, r in mine if k == mine[0][0] or r.get("token") == token), default=0)
    total = sum(c.iterations for c in plan)
    for k in range(first, len(plan)):
        stage, before = plan[k], sum(c.iterations for c in plan[:k])
        later = plan[k + 1:]

        def report(p: Progress, stage=stage, before=before, later=later) -> None:
            rate = max(p.its_per_second, 1e-9)
            rest = sum(c.iterations * (c.resolution / stage.resolution) ** STEP_COST_EXPONENT for c in later) / rate
            progress(dataclasses.replace(p, iteration=before + p.iteration, total=total,
                                         eta_seconds=p.eta_seconds + rest))

        avatar = refine(avatar, model, data, stage, report if progress is not None else None, cancel, ckpts[k],
                        resume and k == first, run_identity(avatar, data, k, token))
    return avatar


def _residual(avatar: Avatar, slots: UVSlots, model: HeadModel, cfg: RefineConfig,
              state: dict | None) -> ExpressionResidual | None:
    """The expression residual to train: the checkpoint's (a resumed run has one exactly when the
    run it continues had), the avatar's own, a new one when ``cfg.residual_features`` asks for
    it, or None."""
    if state is not None:
        return None if state.get("residual") is None else ExpressionResidual.from_state(state["residual"], slots)
    if avatar.residual is not None:
        return ExpressionResidual.from_state(avatar.residual, slots)
    if cfg.residual_features > 0:
        return ExpressionResidual.new(len(slots), cfg.residual_features, cfg.residual_hidden, model.cond_dim,
                                      cfg.seed).to(model.device)
    return None


def _to_maps(attrs: dict, slots: UVSlots, start: UVGaussians) -> dict:
    """UV maps of per-slot attributes; texels outside the chart keep the start's values."""
    out = {}
    for k, v in start.maps().items():
        m = v.detach().cpu().clone().reshape(v.shape[0], -1)      # the avatar stays on the host
        m[:, slots.texel.cpu()] = attrs[k].detach().T.cpu()
        out[k] = m.reshape(v.shape)
    return out


def _check_finite(attrs: dict, outer_attrs: dict, step: int) -> None:
    """RefineDiverged when a Gaussian attribute is NaN or infinite (before it reaches a checkpoint)."""
    for name, a in (*attrs.items(), *outer_attrs.items()):
        if not bool(torch.isfinite(a).all()):
            raise RefineDiverged(f"the refine diverged: the Gaussians' {name} is not finite at step {step}; "
                                 "the last checkpoint is kept")


def _save_checkpoint(path: Path, maps: dict, opt, iteration: int, cfg: RefineConfig,
                     residual: dict | None = None, outer_maps: dict | None = None, run: dict | None = None,
                     anchors: list[dict] | None = None) -> None:
    """Atomic: a crash or cancel mid-write leaves the previous checkpoint loadable. ``anchors``:
    the per-slot start values the run pulls towards (head page, then outer layer); None without a pull."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.save({"maps": {k: v.detach() for k, v in maps.items()}, "optimizer": opt.state_dict(),
                    "iteration": iteration, "config": dataclasses.asdict(cfg), "residual": residual,
                    "outer_maps": None if outer_maps is None else {k: v.detach() for k, v in outer_maps.items()},
                    "run": run, "anchors": anchors}, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (RuntimeError, OSError)):     # torch.save reports a full disk as a RuntimeError
            raise OSError(f"{path}: the checkpoint could not be written ({e}); the previous one is kept") from None
        raise
